"""Fusion checks (issue 17): real A+T with words carrying nothing, and the label-paired trimodal dev check.

    python -m emohd_jax.checks.fusion inputs --config fusion_checks      # the shipped bundle's towers → npz
    python -m emohd_jax.checks.fusion inputs --config fusion_checks --cached-asr   # words of clips transcribed so far
    python -m emohd_jax.checks.fusion run --config fusion_checks         # both checks, every rule → report_dir
    python -m emohd_jax.checks.fusion fit --config fusion_checks         # default_rule, whole dev sets → bundle
    # another voice tower: its npz files (same format) replace the two audio inputs
    python -m emohd_jax.checks.fusion run --config fusion_checks \
        --config.inputs.ravdess_audio=work/fusion_inputs/ravdess17-20_audio_whisper.npz \
        --config.inputs.tess_audio=work/fusion_inputs/tess_audio_whisper.npz \
        --config.report_dir=reports/fusion_checks_whisper

Input format (`emohd_jax.checks.fusion.TowerOutputs`): one .npz per (set, modality) with probs [n, 7]
(class order emohd_jax.classes.EMOTIONS), labels [n], groups [n] (speaker / dialogue: the half split),
uids [n], and for ASR words transcripts [n].
"""

import ml_collections


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.bundle = ""                     # "" = the bundle shipped in the package (only `inputs` reads it)
    c.report_dir = "reports/fusion_checks"
    c.data = ml_collections.ConfigDict()
    c.data.root = ""                  # "" = $EMOHD_DATA, else ../shared/data beside the checkout, else ./data
    c.data.ravdess_actors = "17-20"   # the voice tower's dev actors
    # One npz per (set, modality); relative paths resolve against $EMOHD_HOME (default: the current folder).
    c.inputs = ml_collections.ConfigDict()
    c.inputs.fer_visual = "work/fusion_inputs/fer2013_val_visual.npz"       # face tower, FER2013 val
    c.inputs.meld_text = "work/fusion_inputs/meld_dev_text.npz"             # words tower, MELD dev subtitles
    c.inputs.ravdess_audio = "work/fusion_inputs/ravdess17-20_audio.npz"    # voice tower, RAVDESS dev actors
    c.inputs.ravdess_text = "work/fusion_inputs/ravdess17-20_text_asr.npz"  # words tower, Whisper transcripts
    c.inputs.tess_audio = "work/fusion_inputs/tess_audio.npz"               # voice tower that never saw TESS
    c.inputs.tess_text = "work/fusion_inputs/tess_text_asr.npz"             # words tower, Whisper transcripts
    c.seed = 0                        # the half split (by group) and the label pairing
    c.draws = 5                       # label-paired draws, each with its own seed (seed + draw)
    c.fit_draws = 3                   # label-paired draws of the fit halves the stacker is fitted on
    c.dropout = 0.5                   # stacker fit: probability that each modality of a row is dropped
    c.stack_l2 = 1e-3                 # stacker fit: L2 pull of w to 1, c to −log(dev prior), b to 0
    c.real_share = 0.5                # stacker fit: loss share of the real A+T rows (split among their sets)
    c.scalar_l2 = 1e-3                # argmax-preserving stacks: L2 pull of log w, slopes and joint bias to 0
    c.class_l2 = 1.0                  # 'scalar+class': L2 pull of the per-class log-weight term to 0
    c.belief_grid = (1.0, 0.75, 0.5, 0.35, 0.25, 0.15, 0.1, 0.05, 0.0)   # '(words capped)': factors tried
    c.margin_at = 0.5                 # check 1: fused A+T weighted F1 ≥ A − margin_at
    c.margin_paired = 5.0             # check 2: fused weighted F1 ≥ best single modality + margin_paired
    c.default_rule = "stack/temperature evidence (no joint) (words capped)"   # the shipped bundle's rule
    if arg:
        raise ValueError(f"unknown variant {arg!r} (fusion_checks has none)")
    return c
