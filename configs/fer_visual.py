"""Visual tower on FER2013 class folders (SPEC §2.3–2.4), selected on val.

    emohd prepare --config fer_visual
    emohd train   --config fer_visual        # stage 1: fine-tune the backbone
    emohd train   --config fer_visual:mlp    # stage 2: frozen stage-1 backbone → MLP
    emohd eval    --config fer_visual:mlp --config.data.root=ROOT --config.data.split=test \\
                  [--config.data.label_map="joy=happiness,calm="]

Offline default: the FER2013 mini-Xception (committed asset, 64×64 gray) fine-tuned with augmentation,
then frozen, its last 4×4×128 feature map → MLP; evaluated averaging over mirrored and ±2 px shifted
faces. `:resnet50` is the paper's stage 1 (VGGFace2 ResNet50, top 10 layers unfrozen) and needs
`--config.model.init=/path/to/resnet50_ft_weight.pkl` and a GPU.
"""

import ml_collections

from configs import common


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = common.run("image", "fer_visual", report="fer_visual_stage1")
    c.data = common.data("fer2013", "work/shards/fer_visual", eval_split="val")  # ROOT/<set>/<split>/<class>/*.jpg
    c.data.label_map = ""           # folder→class for other names: "joy=happiness,calm=" or a .json; "" = FER2013's

    c.model = ml_collections.ConfigDict()
    c.model.backbone = ml_collections.FieldReference("mini_xception")  # mini_xception | resnet50
    c.model.variant = "vggface2"    # ResNet50 layout: vggface2 | torchvision
    c.model.init = ""               # "" = committed FER2013 mini-Xception; ResNet50: .pkl / .pth path
    c.model.pretrained = True
    c.model.dtype = "float32"       # compute dtype of every layer: float32 | bfloat16 (weights stay fp32)

    c.visual = ml_collections.ConfigDict()
    c.visual.input = c.model.get_ref("backbone")  # faces are stored at this backbone's input size
    c.visual.fps = 1.0
    c.visual.margin = 0.2
    c.visual.select = "largest"

    c.augment = ml_collections.ConfigDict()
    c.augment.enabled = True
    c.augment.flip = True
    c.augment.rotate_deg = 10.0
    c.augment.shift = 0.1           # fraction of the side
    c.augment.zoom = 0.1
    c.augment.brightness = 0.1      # fraction of 255
    c.augment.contrast = 0.1

    c.optim.lr = 2e-4               # gentle: the backbone starts trained on FER2013
    c.optim.warmup_steps = 200
    c.optim.clip_norm = 5.0

    c.train.batch_size = 64
    c.train.num_epochs = 12
    c.train.checkpoint_every = 200
    c.train.log_every = 50
    c.train.label_smoothing = 0.1
    c.train.select_on = "accuracy"  # FER2013 is reported by accuracy

    c.eval.batch_size = 256         # one record per image: the clip rule does not matter here
    c.eval.flip = True              # average probabilities with the mirrored face
    c.eval.shift = 2                # ... and with the face shifted ±2 px along each axis (0 = off)

    if arg == "resnet50":
        from emohd_jax.towers import resnet50_trainable_patterns

        c.model.backbone = "resnet50"
        c.workdir = "work/runs/fer_visual_resnet50"
        c.report_dir = "reports/fer_visual_resnet50"
        c.data.shards = "work/shards/fer_visual_resnet50"
        c.optim.lr = 1e-4
        c.optim.trainable = resnet50_trainable_patterns(9)  # SPEC §2.3: last 9 convs (+ avg pool) and the head
        c.train.batch_size = 128
        c.train.num_epochs = 10
        c.eval.shift = 7            # the same ~3% of the side at 224 px
    elif arg == "mlp":
        # Stage 2 on FER2013 itself: the stage-1 run frozen; its last feature map, flattened so that where on
        # the face a feature fired is kept, → BatchNorm → MLP. Flips are the only augmentation.
        c.task = "feature_mlp"
        c.workdir = "work/runs/fer_visual_mlp"
        c.report_dir = "reports/fer_visual"
        c.model.init = "work/runs/fer_visual"  # the stage-1 run
        c.model.features = "map"
        c.model.head_hidden = 512
        c.model.head_dropout = 0.5
        c.augment.update(rotate_deg=0.0, shift=0.0, zoom=0.0, brightness=0.0, contrast=0.0)
        c.optim.lr = 1e-3
        c.optim.warmup_steps = 100
        c.optim.trainable = ("^head/",)
        c.train.batch_size = 256
        c.train.num_epochs = 30
        c.train.eval_every = 560    # every 5 epochs (112 steps each)
    elif arg:
        raise ValueError(f"unknown variant {arg!r} (known: resnet50, mlp)")
    return c
