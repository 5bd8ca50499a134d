"""What the predictor returns for one input: arrays over utterances, modalities and classes.

`emohd_jax.serve.outputs` turns a `Prediction` into the JSON, CSV and PNG a person reads;
`emohd_jax.system_eval` fuses and scores straight from its arrays.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Prediction:
    input: str
    duration_s: float                 # the longer of the audio and video streams
    modalities: tuple[str, ...]       # the fused modalities, in the order of every `modality` axis below
    requested: tuple[str, ...]        # the modalities asked for; the others are missing, "not requested"
    spans: np.ndarray                 # [utterance, 2] start_s, end_s: tiling [0, duration_s)
    sources: tuple[str, ...]          # [utterance] 'clip' | 'asr' | 'vad' | 'window'
    transcripts: tuple[str | None, ...]  # [utterance] what the recogniser heard (or the given transcript)
    probs: np.ndarray                 # [utterance, modality, class] float32; uniform where absent
    present: np.ndarray               # [utterance, modality] bool
    decisions: np.ndarray             # [utterance, modality] the tower's own decision (face: majority vote); −1 absent
    counts: np.ndarray                # [utterance, modality] frames (face) / patches (voice) used; 0 otherwise
    reasons: tuple[tuple[str | None, ...], ...]  # [utterance][modality] why it is missing; None when present
    fused: np.ndarray                 # [utterance] fused decision; −1 when no modality is present
    fused_scores: np.ndarray          # [utterance, class]
    fusion_rule: str
    calibrated: bool                  # per-modality temperatures applied before fusion
    face_times: np.ndarray            # [faces] s: each 1 fps frame with a face
    face_probs: np.ndarray            # [faces, class]
    patch_spans: np.ndarray           # [patches, 2] start_s, end_s of each 0.96 s log-mel patch
    patch_probs: np.ndarray           # [patches, class]
    frame_times: np.ndarray           # [frames] s: every sampled frame
    frame_face_probs: tuple[np.ndarray, ...]  # [frames] each: [faces] the detector's probability of each face
    warnings: tuple[str, ...] = ()    # "truncated: decoded 1.00 s of 2.24 s": predicted, but from less

    @property
    def num_utterances(self) -> int:
        return len(self.sources)
