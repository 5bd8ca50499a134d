"""The offline default bundle: which trained runs `emohd export` packs, and how they are fused.

    emohd export --config bundle                       # → emohd_jax/assets/bundle
    emohd export --config bundle --config.out=DIR --config.rule=paper
    emohd export --config bundle --config.fusion_params=reports/fusion_checks/fusion_params.json

Each tower is named by the config command line of its run (config file, variant, overrides); the run's
workdir must hold its best checkpoint and the dev evaluation that `emohd train` / `emohd eval` save.
"""

import ml_collections

# Each run's config line: `emohd prepare --config <line>` then `emohd train --config <line>` made it (the
# bundle manifest keeps that as provenance). Visual: stage 2 over the converted FER2013 mini-Xception
# (the fine-tuned stage 1 scored no better: 67.18 vs 67.23 % on FER2013 val, reports/fer_visual_stage1).
VISUAL = ("configs/fer_visual.py:mlp --config.model.init= --config.workdir=work/runs/fer_face_mlp "
          "--config.train.num_epochs=15 --config.report_dir=reports/fer_face_mlp")
# Audio: the Whisper-encoder voice tower (configs/voice_whisper.py), 'global' normalisation (predict sees one clip);
# only its head and feature statistics ship, the encoder installs from its package. The VGGish run
# ("configs/ravdess_audio.py") still exports and serves.
AUDIO = "configs/voice_whisper.py:ship,global,clean"
TEXT = "configs/meld_text.py:lora"


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.out = "emohd_jax/assets/bundle"
    c.rule = "max"               # paper | max | sum: the best A+T of the RAVDESS ablation (README, reports/ravdess_fusion)
    c.calibrated = True          # per-modality temperatures fitted on each tower's dev set
    c.fusion_params = ""         # a fitted fusion JSON (`python -m emohd_jax.checks.fusion fit`): used instead of
    #                              fitting `rule` on the dev sets
    c.reuse = ""                 # a bundle folder whose towers are kept for the modalities named "" in `towers`
    c.towers = ml_collections.ConfigDict({"visual": VISUAL, "audio": AUDIO, "text": TEXT})
    if arg:
        raise ValueError(f"unknown variant {arg!r}")
    return c
