"""System evaluation of a bundle (V, A, T, V+A, A+T, V+A+T × fusion rules × calibration) on a labelled set.

    emohd system-eval --config system_eval:ravdess     # RAVDESS actors 17–20: A, T (ASR), A+T
    emohd system-eval --config system_eval:meld --config.data.root=ROOT --config.data.split=test
        # ROOT/meld/{split}_sent_emo.csv + ROOT/meld/MELD.Raw/<split dir>/dia{D}_utt{U}.mp4, ASR and subtitles
    emohd system-eval --config system_eval:meld_text   # the MELD text we have, subtitles only

The fusion weights and temperatures are the bundle's (fitted on each tower's dev set), never this set's.
"""

import ml_collections


def get_config(arg: str = "ravdess") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.bundle = ""                   # "" = the bundle shipped in the package
    c.calibration = "calibrated"    # which half of the table the per-class F1 and confusion PNGs show
    c.data = ml_collections.ConfigDict()
    c.data.root = ""                # "" = $EMOHD_DATA, else ../shared/data beside the checkout, else ./data
    if arg == "ravdess":
        c.data.dataset = "ravdess"
        c.data.actors = ml_collections.ConfigDict({"dev": "17-20"})
        c.data.calm = "drop"
        c.data.split = "dev"
        c.transcripts = ("asr",)    # RAVDESS has no subtitles: both sentences are known, ASR reads them
        c.report_dir = "reports/ravdess_fusion"
    elif arg in ("meld", "meld_text"):
        c.data.dataset = "meld"
        c.data.split = "dev"
        c.transcripts = ("asr", "subtitles") if arg == "meld" else ("subtitles",)
        c.report_dir = f"reports/{arg}_system"
        if arg == "meld":           # SPEC §6 MELD-sub: ≤ max_faces faces of p ≥ min_prob in ≥ min_fraction of frames
            c.meld_sub = ml_collections.ConfigDict({"min_prob": 0.95, "max_faces": 1, "min_fraction": 0.5})
    else:
        raise ValueError(f"unknown variant {arg!r} (known: ravdess, meld, meld_text)")
    return c
