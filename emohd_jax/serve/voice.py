"""The voice step of `predict`, one per kind of voice tower (a bundle carries either): what is queued for an
utterance's audio and how the queued work runs through the tower.

`PatchVoice` (the VGGish tower, `config.task == 'audio'`): 0.96 s log-mel patches, one tower row per patch,
the utterance decided from its patches (the per-patch track kept for the timeline). `UtteranceVoice` (the
Whisper tower, 'voice_whisper'): the frozen encoder's features of the utterance's speech, one tower row per
utterance; its timeline entry is the utterance itself. `voice_step` picks one by the tower's task.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from emohd_jax.audio.io import SAMPLE_RATE
from emohd_jax.bundle import LoadedTower
from emohd_jax.clip_decision import clip_probabilities
from emohd_jax.errors import BadInputError
from emohd_jax.input_pipeline import Collate
from emohd_jax.serve.clock import StageClock
from emohd_jax.serve.plan import Plan, run_tower

TOO_SHORT = "speech too short for the voice tower"
_MIN_SAMPLES = SAMPLE_RATE // 10  # what the Whisper features accept (WhisperFeatureExtractor.load)
_FEATURE_BATCH = 16  # utterances through the encoder at once, alike lengths together


class PatchVoice:
    """VGGish: each utterance's log-mel patches, one tower row each; the utterance's voice is their clip rule."""

    def __init__(self, tower: LoadedTower, extractor, clock: StageClock, max_batch: int):
        self.tower, self.extractor, self.clock, self.max_batch = tower, extractor, clock, max_batch
        self.patch_s = extractor.spec.patch_samples / extractor.spec.sample_rate

    def queue(self, plan: Plan, i: int, piece: np.ndarray) -> None:
        """piece: [samples] the utterance's audio → its patches queued, or why it has no voice."""
        try:
            with self.clock("log_mel"):
                patches, first = self.extractor.wave_patches(piece, plan.input)
        except BadInputError as error:
            plan.miss("audio", i, error.reason)
            return
        start = plan.spans[i].start_s + first
        plan.queued_voice.append((i, patches, start + self.patch_s * np.arange(len(patches))))

    def run(self, queued: Sequence[tuple[Plan, int, np.ndarray, np.ndarray]]) -> None:
        """(plan, utterance, patches [n, 96, 64], start_s [n]) → each utterance's voice and its patch track."""
        with self.clock("audio_tower"):
            probs = run_tower(self.tower, {"patches": np.concatenate([patches for _, _, patches, _ in queued])},
                              self.max_batch)
        bounds = np.cumsum([0] + [len(patches) for _, _, patches, _ in queued])
        for (plan, i, _, starts), a, b in zip(queued, bounds[:-1], bounds[1:]):
            decided, mean = clip_probabilities(probs[a:b], self.tower.config.eval.clip_rule)
            plan.put("audio", i, mean, decision=decided, count=int(b - a))
            plan.patch_spans.append(np.stack([starts, starts + self.patch_s], axis=1))
            plan.patch_probs.append(probs[a:b])


class UtteranceVoice:
    """Whisper features: each utterance's speech (its quiet ends trimmed, at most 30 s) → one tower row.

    Features are standardised with the tower's training statistics, or with `statistics` ((mean, std)
    [layers + 1, width]: a folder's own, `emohd predict --normalize folder`); `moments`, when set, gathers the
    statistics of every utterance run (the first pass over a folder)."""

    def __init__(self, tower: LoadedTower, extractor, clock: StageClock, max_batch: int):
        self.tower, self.extractor, self.clock, self.max_batch = tower, extractor, clock, max_batch
        self.statistics: tuple[np.ndarray, np.ndarray] | None = None
        self.moments = None  # emohd_jax.audio.whisper_features.FeatureMoments while gathering

    def queue(self, plan: Plan, i: int, piece: np.ndarray) -> None:
        """piece: [samples] the utterance's audio → its prepared wave queued, or why it has no voice."""
        wave = self.extractor.prepare_wave(piece)
        if wave.size < _MIN_SAMPLES:
            plan.miss("audio", i, TOO_SHORT)
            return
        plan.queued_voice.append((i, wave, None))

    def run(self, queued: Sequence[tuple[Plan, int, np.ndarray, None]]) -> None:
        """(plan, utterance, wave [samples], None) → each utterance's voice; its timeline entry is the utterance."""
        order = sorted(range(len(queued)), key=lambda k: queued[k][2].size)  # alike lengths share a padded bucket
        hidden: list[np.ndarray | None] = [None] * len(queued)
        for start in range(0, len(order), _FEATURE_BATCH):
            chunk = order[start:start + _FEATURE_BATCH]
            with self.clock("whisper_encoder"):
                for k, h in zip(chunk, self.extractor.features([queued[k][2] for k in chunk])):
                    hidden[k] = h  # [frames, layers + 1, width] float16
                    if self.moments is not None:
                        self.moments.add(h)
        for start in range(0, len(order), self.max_batch):
            chunk = order[start:start + self.max_batch]
            batch = Collate(self.tower.task.padded)([{"hidden": hidden[k]} for k in chunk])  # frames bucketed
            fields = {"hidden": batch["hidden"]}
            if self.statistics is not None:
                shape = (len(chunk), *self.statistics[0].shape)
                fields["feature_mean"], fields["feature_std"] = (np.broadcast_to(a, shape) for a in self.statistics)
            with self.clock("audio_tower"):
                probs = run_tower(self.tower, fields, self.max_batch)
            for k, p in zip(chunk, probs):
                plan, i, _, _ = queued[k]
                span = plan.spans[i]
                plan.put("audio", i, p, count=1)
                plan.patch_spans.append(np.asarray([[span.start_s, span.end_s]]))
                plan.patch_probs.append(p[None])


VOICE_STEPS = {"audio": PatchVoice, "voice_whisper": UtteranceVoice}


def voice_step(tower: LoadedTower, extractor, clock: StageClock, max_batch: int) -> PatchVoice | UtteranceVoice:
    """The voice step of a bundle's voice tower, by its task."""
    return VOICE_STEPS[tower.config.task](tower, extractor, clock, max_batch)
