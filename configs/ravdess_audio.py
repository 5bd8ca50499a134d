"""Audio tower on RAVDESS: VGGish log-mel patches → VGGish-shaped CNN → 7-way softmax, clip = mean of patches.

    emohd prepare --config ravdess_audio
    emohd train   --config ravdess_audio
    emohd eval    --config ravdess_audio --config.data.split=dev

Offline default: no VGGish weights can be downloaded here, so the 'small' VGGish (same layout,
1/4 conv and 1/8 FC widths) trains from scratch on actors 1–16 with SpecAugment-style masks,
time shift, gain and noise, and is selected on actors 17–20. 7 classes: calm is dropped
(`--config.data.calm=neutral` merges it into neutral instead).

`configs/ravdess_audio.py:pretrained` is the paper's recipe: the published VGGish (full size)
with convolutions frozen and the fully connected layers trained; it needs the converted weights
(`python -m emohd_jax.convert.vggish --torch vggish-10086976.pth --out vggish.safetensors`):

    emohd train --config ravdess_audio:pretrained --config.model.init=/path/vggish.safetensors

Held-out actors laid out like the data folder (`ROOT/ravdess/Actor_21 … Actor_24`) are read,
prepared into `<shards>-heldout` on first use and evaluated with the trained run:

    emohd eval --config ravdess_audio --config.data.root=ROOT --config.data.split=heldout \\
        --config.checkpoint=work/runs/ravdess_audio   # actors: --config.data.actors.heldout=21-24
"""

import ml_collections

from configs import common

from emohd_jax.models.vggish import trainable_patterns


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = common.run("audio", "ravdess_audio")
    c.data = common.data("ravdess", "work/shards/ravdess_audio")  # ROOT/ravdess/Actor_XX/*.flac
    c.data.actors = ml_collections.ConfigDict({"train": "1-16", "dev": "17-20", "heldout": "21-24"})
    c.data.calm = "drop"            # drop | neutral (merge calm into neutral)

    c.audio = ml_collections.ConfigDict()
    c.audio.trim_db = 40.0          # keep the whole patches around the speech (0 = every patch of the clip)

    c.model = ml_collections.ConfigDict()
    c.model.size = "small"          # small (from scratch on CPU) | full (published VGGish)
    c.model.width = 1.0             # multiplies every conv and FC width of the size preset
    c.model.dropout = 0.3           # after each FC layer
    # Log-mel standardisation in front of the network (mean and std of RAVDESS actors 1–16): a VGG
    # without batch norm trains from scratch only on centred inputs. The published VGGish takes raw log-mel.
    c.model.input_mean = -3.3
    c.model.input_std = 1.6
    c.model.dtype = "float32"       # compute dtype of every layer: float32 | bfloat16 (weights stay fp32)
    c.model.init = ""               # converted VGGish weights (.safetensors, .pth or TF .npz); '' = from scratch
    c.model.pretrained = False      # load `init` into the VGGish trunk (the 7-way head stays random)

    # Per-patch training augmentation of the stored log-mel (emohd_jax/audio_augment.py).
    c.augment = ml_collections.ConfigDict()
    c.augment.enabled = True
    c.augment.max_shift = 16       # frames of circular time shift (of 96)
    c.augment.gain_db = 6.0        # uniform gain in ±gain_db
    c.augment.noise_db = (-90.0, -60.0)  # noise floor level range (dB re a full-scale tone)
    c.augment.time_masks = 2
    c.augment.time_mask_max = 12   # frames
    c.augment.freq_masks = 2
    c.augment.freq_mask_max = 8    # mel bands

    c.train.num_epochs = 45
    c.train.class_weights = "sqrt"  # RAVDESS has half as many neutral clips as the other classes
    c.train.label_smoothing = 0.1

    if arg == "pretrained":
        c.model.size = "full"
        c.model.init = ""           # required: --config.model.init=/path/vggish.safetensors
        c.model.pretrained = True
        c.model.input_mean, c.model.input_std = 0.0, 1.0
        c.model.dropout = 0.5
        c.optim.trainable = trainable_patterns(freeze_conv=True)  # SPEC §3.3: convs frozen, FC trained
        c.optim.lr = 1e-4
        c.train.num_epochs = 10
        c.workdir = "work/runs/ravdess_audio_pretrained"
        c.report_dir = "reports/ravdess_audio_pretrained"
    elif arg:
        raise ValueError(f"unknown variant {arg!r} (known: pretrained)")
    return c
