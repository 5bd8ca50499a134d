"""A recording's utterances as they are planned block by block, what each modality found for each, and the
bucketed tower calls that fill them in."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from emohd_jax.bundle import LoadedTower
from emohd_jax.classes import EMOTIONS
from emohd_jax.serve.prediction import Prediction
from emohd_jax.utterances import Span, SpeechSegment, plan_utterances

NOT_REQUESTED = "not requested"


def bucket(n: int) -> int:
    """Batch sizes padded to powers of two: a jitted tower compiles once per bucket, not per input. From 1, not 8:
    the face tower runs its test-time views for every padded row, and a short clip's two crops padded to eight
    were 0.2 s of a warm start; the compiled programs are kept between runs."""
    return 1 << (max(n, 1) - 1).bit_length()


def run_tower(tower: LoadedTower, fields: dict[str, np.ndarray], max_batch: int = 256) -> np.ndarray:
    """fields: each [n, ...] → probs [n, classes], in padded chunks of at most `max_batch`."""
    n = len(next(iter(fields.values())))
    out = []
    for start in range(0, n, max_batch):
        chunk = {k: v[start:start + max_batch] for k, v in fields.items()}
        size = len(next(iter(chunk.values())))
        padded = {k: np.concatenate([v, np.zeros((bucket(size) - size, *v.shape[1:]), v.dtype)])
                  for k, v in chunk.items()}
        out.append(np.asarray(tower.probs(padded))[:size])
    return np.concatenate(out) if out else np.zeros((0, len(EMOTIONS)), np.float32)


@dataclasses.dataclass
class Plan:
    """One input while it is predicted: its utterances, each modality's result or reason for each, the
    per-frame and per-patch tracks, and the tower work queued for the next batched tower call."""

    input: str
    modalities: tuple[str, ...]  # the fused modalities
    duration_s: float = 0.0
    spans: list[Span] = dataclasses.field(default_factory=list)
    probs: dict[tuple[int, str], np.ndarray] = dataclasses.field(default_factory=dict)  # [class] per (utt, modality)
    decisions: dict[tuple[int, str], int] = dataclasses.field(default_factory=dict)
    counts: dict[tuple[int, str], int] = dataclasses.field(default_factory=dict)
    reasons: dict[tuple[int, str], str] = dataclasses.field(default_factory=dict)
    face_times: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))                 # [faces]
    face_probs: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, len(EMOTIONS))))  # [faces, class]
    frame_times: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))                # [frames]
    frame_face_probs: list[np.ndarray] = dataclasses.field(default_factory=list)                    # [frames]
    patch_spans: list[np.ndarray] = dataclasses.field(default_factory=list)   # per utterance: [patches, 2]
    patch_probs: list[np.ndarray] = dataclasses.field(default_factory=list)   # per utterance: [patches, class]
    warnings: list[str] = dataclasses.field(default_factory=list)  # "truncated: …": predicted, but from less
    # Queued for the next tower call: (utterance, log-mel patches [n, 96, 64], start_s of each [n]) or, for the
    # Whisper voice tower, (utterance, prepared wave [samples], None) (emohd_jax.serve.voice); (utterance, tokens).
    queued_voice: list[tuple[int, np.ndarray, np.ndarray | None]] = dataclasses.field(default_factory=list)
    queued_words: list[tuple[int, dict[str, np.ndarray]]] = dataclasses.field(default_factory=list)

    def add(self, spans: Sequence[Span]) -> range:
        first = len(self.spans)
        self.spans += spans
        return range(first, len(self.spans))

    def cover(self, offset: float, end: float, speech: Sequence[SpeechSegment], *, max_utterance_s: float,
              window_s: float) -> range:
        """Plans [offset, end) from `speech` (times relative to `offset`); only a whole short input is a 'clip'."""
        if end - offset <= 1e-6 and self.spans:  # nothing left to cover
            return range(len(self.spans), len(self.spans))
        spans = plan_utterances(end - offset, speech, max_utterance_s=max_utterance_s, window_s=window_s)
        whole = offset == 0.0 and end == self.duration_s
        heard = "asr" if any(s.text for s in speech) else "vad" if speech else "window"
        return self.add([Span(offset + s.start_s, offset + s.end_s,
                              s.source if whole or s.source != "clip" else heard, s.text) for s in spans])

    def put(self, modality: str, i: int, probs: np.ndarray, *, decision: int | None = None, count: int = 0) -> None:
        """Utterance `i` has `modality`: its probabilities [class], its decision (default: their argmax)."""
        if modality in self.modalities:
            self.probs[i, modality] = probs
            self.decisions[i, modality] = int(np.argmax(probs)) if decision is None else decision
            self.counts[i, modality] = count

    def miss(self, modality: str, i: int, reason: str) -> None:
        """Utterance `i` lacks `modality`, for `reason`."""
        if modality in self.modalities:
            self.reasons[i, modality] = reason

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(probs [utterance, modality, class], uniform where absent; present [utterance, modality])."""
        n, m = len(self.spans), len(self.modalities)
        probs = np.full((n, m, len(EMOTIONS)), 1.0 / len(EMOTIONS), np.float32)
        present = np.zeros((n, m), bool)
        for (i, modality), p in self.probs.items():
            j = self.modalities.index(modality)
            probs[i, j], present[i, j] = p, True
        return probs, present

    def missing_reasons(self) -> list[str]:
        return sorted(set(self.reasons.values()))

    def prediction(self, probs: np.ndarray, present: np.ndarray, fused: np.ndarray, fused_scores: np.ndarray, *,
                   requested: tuple[str, ...], rule: str, calibrated: bool) -> Prediction:
        """The finished plan as arrays: `probs`, `present` from `arrays()`, the fusion's decisions [utterance]
        and scores [utterance, class]."""
        keys = [[(i, m) for m in self.modalities] for i in range(len(self.spans))]
        return Prediction(
            input=self.input, duration_s=self.duration_s, modalities=self.modalities, requested=requested,
            spans=np.asarray([(s.start_s, s.end_s) for s in self.spans], np.float64).reshape(-1, 2),
            sources=tuple(s.source for s in self.spans), transcripts=tuple(s.text for s in self.spans),
            probs=probs, present=present,
            decisions=np.asarray([[self.decisions.get(k, -1) for k in row] for row in keys], np.int32).reshape(
                present.shape),
            counts=np.asarray([[self.counts.get(k, 0) for k in row] for row in keys], np.int32).reshape(present.shape),
            reasons=tuple(tuple(None if k in self.probs else self.reasons.get(k, "") for k in row) for row in keys),
            fused=np.asarray(fused, np.int32), fused_scores=np.asarray(fused_scores, np.float32),
            fusion_rule=rule, calibrated=calibrated,
            face_times=self.face_times, face_probs=self.face_probs,
            patch_spans=np.concatenate(self.patch_spans) if self.patch_spans else np.zeros((0, 2)),
            patch_probs=np.concatenate(self.patch_probs) if self.patch_probs else np.zeros((0, len(EMOTIONS)),
                                                                                           np.float32),
            frame_times=self.frame_times, frame_face_probs=tuple(self.frame_face_probs), warnings=tuple(self.warnings))
