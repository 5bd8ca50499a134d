"""Visual tower, stage 2 (SPEC §2.4–2.5): frozen stage-1 backbone → pooled features → MLP, on CREMA-D video faces.

Faces are sampled at 1 fps (MTCNN, largest face), the backbone is frozen (only `head/` trains) and
a clip's decision is the majority vote of its frames (ties by mean probability).

    emohd prepare --config cremad_faces
    emohd train   --config cremad_faces --config.model.init=work/runs/fer_visual
    emohd eval    --config cremad_faces --config.data.split=test

Splits are by actor (`data.actors`, CREMA-D actors 1001–1091); `model.init` is the stage-1 run
(empty: the committed FER2013 mini-Xception as the frozen backbone).
"""

import ml_collections

from configs import common, fer_visual


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = fer_visual.get_config(arg)  # stage 2 shares the stage-1 backbone, input and visual settings
    suffix = f"_{arg}" if arg else ""
    c.task = "feature_mlp"
    c.workdir = f"work/runs/cremad_faces{suffix}"
    c.report_dir = f"reports/cremad_faces{suffix}"

    # ROOT/cremad/**/<Actor_Sentence_Emotion_Level>.flv, split by actor
    c.data.update(common.data("cremad", f"work/shards/cremad_faces{suffix}"))
    c.data.actors = ml_collections.ConfigDict({"train": "1001-1073", "dev": "1074-1082", "test": "1083-1091"})

    c.model.init = ""               # the stage-1 run (workdir); "" = the backbone's pretrained weights
    c.model.features = "pooled"     # pooled | map (mini-Xception's 4×4×128 map, flattened)
    c.model.head_hidden = 256
    c.model.head_dropout = 0.3

    c.augment.enabled = False       # features come from a frozen backbone in inference mode
    c.optim.lr = 1e-3
    c.optim.trainable = ("^head/",)  # SPEC §2.4: everything but the MLP is frozen
    c.train.num_epochs = 20
    c.train.class_weights = "sqrt"
    c.train.label_smoothing = 0.0
    c.train.select_on = "weighted_f1"  # the default again: FER2013 alone is reported by accuracy
    c.eval.batch_size = 64
    c.eval.clip_rule = "vote"       # SPEC §2.5: majority vote over a clip's frames
    c.eval.flip = False
    c.eval.shift = 0
    return c
