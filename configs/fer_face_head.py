"""Face stage-2 head over the frozen FER2013 mini-Xception's 4×4×128 map, on stored features (the backbone runs once).

    emohd prepare --config fer_face_head     # FER2013 faces → map features: train [orig, mirror], val the 10 test views
    emohd train   --config fer_face_head     # the shipped face tower's head recipe (BatchNorm → 512 → 7), on features
    emohd sweep   --config fer_face_head --sweep fer_face

`backbone` is `configs/fer_visual.py:mlp` with the committed (converted) mini-Xception, as the shipped face
tower; training picks the face or its mirror per record (its flip augmentation), val averages the mirrored
and ±2 px shifted views (its `eval.flip` / `eval.shift`).
"""

import ml_collections

from configs import common, fer_visual


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = common.run("feature_head", "fer_face_head")
    c.backbone = fer_visual.get_config("mlp")
    c.backbone.model.init = ""      # the committed FER2013 mini-Xception (the shipped face tower's backbone)
    c.data = common.data("fer2013", "work/shards/fer_face_features", eval_split="val")
    c.data.label_map = ""

    c.model = ml_collections.ConfigDict()
    c.model.feature_dim = 4 * 4 * 128
    c.model.head_hidden = 512
    c.model.head_dropout = 0.5
    c.model.input_norm = True
    c.model.pretrained = False

    c.optim.lr = 1e-3
    c.optim.warmup_steps = 100
    c.optim.clip_norm = 5.0
    c.train.batch_size = 256
    c.train.num_epochs = 15
    c.train.shuffle_seed = 0
    c.train.label_smoothing = 0.1
    c.train.select_on = "accuracy"  # FER2013 is reported by accuracy
    c.train.checkpoint_every = 500
    c.train.log_every = 50
    c.eval.batch_size = 256
    if arg:
        raise ValueError(f"unknown variant {arg!r} (none)")
    return c
