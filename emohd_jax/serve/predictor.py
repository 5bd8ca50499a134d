"""The whole system over one bundle: decode → plan utterances → one step per modality → fuse → `Prediction`.

Each input is decoded once (1 fps frames for the face track, 16 kHz audio in blocks), cut into
utterances (the whole clip when short; speech segments and fixed windows over silence when long),
and fed through the same extractors that `prepare` uses. Each modality is one step (`_face`,
`_voice`, `_words`) that either queues tower work for an utterance or says why it is missing; the
queued work runs in bucketed tower calls, batched across the inputs of a group (`predict_many`), and
the fitted fusion runs once per group. A modality that is not requested costs nothing: no face
detection without the face, no ASR without the words (long recordings are then cut by the VAD).
The voice is present only where the voice activity detector finds speech ("no speech" otherwise); the
words only where the recogniser's transcript can be trusted (`WordsPolicy`: English, confident, not
empty), else missing with the reason ("language: ur"); a transcript the user gives is used as it is.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import pathlib
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import jax
import numpy as np

from emohd_jax import fusion
from emohd_jax.asr.trust import WordsPolicy
from emohd_jax.bundle import Bundle, load_bundle
from emohd_jax.classes import EMOTIONS
from emohd_jax.errors import BadInputError, CorruptMediaError, UsageError
from emohd_jax.input_pipeline import Collate
from emohd_jax.audio.io import SAMPLE_RATE, check_not_silent
from emohd_jax.serve.audio_stream import AudioStream
from emohd_jax.serve.clock import StageClock
from emohd_jax.serve.face_track import FaceTrack, decide_faces, track_faces
from emohd_jax.serve.options import DEFAULTS, check_numeric_options, requested_modalities
from emohd_jax.serve.plan import NOT_REQUESTED, Plan, bucket, run_tower
from emohd_jax.serve.prediction import Prediction
from emohd_jax.serve.voice import UtteranceVoice, voice_step
from emohd_jax.utterances import SpeechSegment
from emohd_jax.vision.video_io import declared_duration_s, truncation_warning

# What a person asks for (`--modalities face,voice,words`) → the fused modality it is.
MAX_BATCH = 256  # rows per tower call
NO_SPEECH = "no speech"  # the voice's reason for an utterance where the VAD found no speech
_fusion = jax.jit(fusion.fuse_with)  # params, probs [spans, modality, class], present [spans, modality]
T = TypeVar("T")


def load_in_background(build: Callable[[], T]) -> concurrent.futures.Future[T]:
    """`build()` on a worker thread; `.result()` gives its value or raises its error where it is needed.

    The recognisers' weights load in CTranslate2's C++ (seconds) while the main thread loads the bundle and runs
    the face track: on 2 cores the two overlap instead of adding up in every `emohd predict` start."""
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="emohd-load")
    try:
        return executor.submit(build)
    finally:
        executor.shutdown(wait=False)


class Predictor:
    """`block_s`: seconds of audio planned and run at once (a longer recording is a stream of blocks);
    `frame_chunk`: sampled frames through the face detector at once. Both bound the memory a recording needs.
    `modalities`: those to compute (default all the bundle has); the others are missing, "not requested".
    `words_policy`: when the recogniser's words may reach the words tower (thresholds: `WordsPolicy`).
    `bundle`: a loaded Bundle, its folder, or None for the shipped one; while a folder loads, the speech
    recogniser (when the words are requested) loads beside it (`load_in_background`).
    """

    def __init__(self, bundle: Bundle | str | os.PathLike | None = None, *,
                 modalities: Iterable[str] | str | None = None,
                 transcriber=None, words_policy: WordsPolicy = WordsPolicy(),
                 max_utterance_s: float = DEFAULTS["max_utterance_s"], window_s: float = DEFAULTS["window_s"],
                 block_s: float = DEFAULTS["block_s"], frame_chunk: int = DEFAULTS["frame_chunk"],
                 carry_s: float = DEFAULTS["carry_s"]):
        # Ranges checked before the bundle loads (emohd_jax.serve.options): a bad value costs no model loading.
        check_numeric_options({"max_utterance_s": max_utterance_s, "window_s": window_s, "block_s": block_s,
                               "frame_chunk": frame_chunk, "carry_s": carry_s})
        if transcriber is None and "text" in requested_modalities(modalities):
            from emohd_jax.asr.whisper import WhisperTranscriber

            transcriber = load_in_background(WhisperTranscriber)
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        self.towers = self.bundle.towers
        self.modalities = tuple(self.bundle.manifest["modalities"])  # fused, in the order of the arrays
        self.requested = tuple(m for m in requested_modalities(modalities) if m in self.towers)
        self.frame_chunk = frame_chunk
        self.clock = StageClock()
        # The extractors `prepare` uses, built from each tower's own recipe (train/serve skew cannot creep in).
        extractor = {m: self.towers[m].task.extractor() for m in self.requested}
        self.faces, self.voice, self.words = (extractor.get(m) for m in fusion.MODALITIES)
        self.voice_step = voice_step(self.towers["audio"], self.voice, self.clock, MAX_BATCH) \
            if self.voice is not None else None
        self.audio = AudioStream(self.clock, words=self.words is not None, voice=self.voice is not None,
                                 transcriber=transcriber, policy=words_policy, max_utterance_s=max_utterance_s,
                                 window_s=window_s, block_s=block_s, carry_s=carry_s)
        self._utterance_options = dict(max_utterance_s=max_utterance_s, window_s=window_s, block_s=block_s,
                                       frame_chunk=frame_chunk, carry_s=carry_s)
        self._voice_only: Predictor | None = None

    # ---- voice statistics of a folder (`emohd predict --normalize folder`) ---------------------------

    def folder_statistics(self, paths: Iterable[str | os.PathLike]) -> tuple[tuple[np.ndarray, np.ndarray] | None, int]:
        """((mean, std) [layers + 1, width] of the voice features over the speech of `paths`, or None when they
        hold none; the number of speech frames): a first pass, voice only, cut into utterances as predict cuts
        them. A voice tower trained on several corpora, each standardised with its own statistics, transfers to
        a new source when that source is standardised with its own too (the cross-corpus tables)."""
        from emohd_jax.audio.whisper_features import FeatureMoments

        if not isinstance(self.voice_step, UtteranceVoice):
            raise UsageError("--normalize folder", "needs the voice modality and a Whisper-feature voice tower",
                             "request voice (--modalities) with a bundle whose voice tower is voice_whisper")
        if self._voice_only is None:
            self._voice_only = Predictor(self.bundle, modalities="voice", **self._utterance_options)
            # This predictor's voice extractor (its Whisper encoder loaded and compiled once), in a voice step
            # of the pass's own.
            self._voice_only.voice = self.voice
            self._voice_only.voice_step = voice_step(self.towers["audio"], self.voice, self._voice_only.clock,
                                                     MAX_BATCH)
        gatherer = self._voice_only.voice_step
        gatherer.moments = FeatureMoments()
        try:
            for _ in self._voice_only.predict_many((path, None) for path in paths):
                pass
            return gatherer.moments.mean_std(), gatherer.moments.count
        finally:
            gatherer.moments = None

    def use_voice_statistics(self, statistics: tuple[np.ndarray, np.ndarray] | None) -> None:
        """Standardise the voice features with `statistics` ((mean, std), `folder_statistics`); None: the
        tower's training statistics (the default)."""
        if isinstance(self.voice_step, UtteranceVoice):
            self.voice_step.statistics = statistics

    # ---- inputs ------------------------------------------------------------------------------------

    def predict_file(self, path: str | os.PathLike | None, *, transcript: str | None = None) -> Prediction:
        """One input → its Prediction; BadInputError naming the file when no modality is usable.

        `transcript` replaces ASR (a dataset's subtitles); with `path=None` only the words are predicted.
        """
        (result,) = self.predict_many([(path, transcript)])
        if isinstance(result, BadInputError):
            raise result
        return result

    def predict_many(self, inputs: Iterable[tuple[str | os.PathLike | None, str | None]], *,
                     group: int = MAX_BATCH) -> Iterator[Prediction | BadInputError]:
        """(path, transcript) pairs → a Prediction, or the BadInputError that stopped it, each in input order.

        Inputs are planned `group` at a time and their queued tower work runs in shared batches: thousands
        of short clips (`emohd system-eval`) cost a few tower calls per group, not a few per clip.
        """
        iterator = iter(inputs)
        while batch := list(itertools.islice(iterator, group)):
            plans: list[Plan | BadInputError] = []
            for path, transcript in batch:
                try:
                    plans.append(self._plan(path, transcript))
                except BadInputError as error:
                    plans.append(error)
            self._run_towers([p for p in plans if isinstance(p, Plan)])
            yield from self._fused([p for p in plans if isinstance(p, Plan)], plans)

    def _plan(self, path: str | os.PathLike | None, transcript: str | None) -> Plan:
        """Decodes one input and runs each requested modality's step on its utterances (towers queued)."""
        if path is None:
            plan = Plan("<transcript>", self.modalities)
            said = [SpeechSegment(0.0, 0.0, transcript)] if transcript and transcript.strip() else []
            indices = self.audio.cover(plan, 0.0, 0.0, said)
            self._words(plan, indices, lambda i: "no transcript")
            for i in indices:
                plan.miss("visual", i, "no media file")
                plan.miss("audio", i, "no media file")
            return self._unrequested(plan)
        path = pathlib.Path(path)
        plan = Plan(str(path), self.modalities)
        track = self._face_track(path)
        plan.duration_s = track.duration_s if track else 0.0
        audio_reason = None
        if self.voice is not None or self.words is not None:
            try:
                for wave, offset, indices, final in self.audio.blocks(path, plan, transcript):
                    self._voice(plan, wave, offset, indices)
                    self._words(plan, indices, lambda i: self.audio.words_reason(plan.spans[i].start_s,
                                                                                 plan.spans[i].end_s, offset))
                    if not final:  # a long recording: its towers run block by block (flat memory)
                        self._run_towers([plan])
            except BadInputError as error:
                audio_reason = error.reason
        if audio_reason is not None or (self.voice is None and self.words is None):
            if track is not None and track.reason and not len(track.frame_times) and not plan.spans:
                raise CorruptMediaError(path, f"audio: {audio_reason}; visual: {track.reason}" if audio_reason
                                        else f"visual: {track.reason}")
            covered = plan.spans[-1].end_s if plan.spans else 0.0  # audio that failed part-way: windows on
            for i in self.audio.cover(plan, covered, max(plan.duration_s, covered), []):
                plan.miss("audio", i, audio_reason or NOT_REQUESTED)
                plan.miss("text", i, audio_reason or NOT_REQUESTED)
        if track is not None:
            self._face(plan, track)
        if (truncated := truncation_warning(plan.duration_s, declared_duration_s(path))) is not None:
            plan.warnings.append(truncated)  # predicted from what decoded, said in the result and on the terminal
        return self._unrequested(plan)

    def _unrequested(self, plan: Plan) -> Plan:
        for modality in set(self.modalities) - set(self.requested):
            for i in range(len(plan.spans)):
                plan.miss(modality, i, NOT_REQUESTED)
        return plan

    # ---- one step per modality ---------------------------------------------------------------------

    def _face_track(self, path: pathlib.Path) -> FaceTrack | None:
        """The face tower over the whole video (None when the face is not requested)."""
        if self.faces is None:
            return None
        return track_faces(path, self.faces, self.towers["visual"], self.clock, frame_chunk=self.frame_chunk)

    def _face(self, plan: Plan, track: FaceTrack) -> None:
        """Each utterance's face from the track: a majority vote over its frames, or why there is none."""
        decide_faces(plan, track)

    def _voice(self, plan: Plan, wave: np.ndarray, offset: float, indices: range) -> None:
        """Each utterance with speech queued for the voice tower (`voice_step`), or why it has no voice."""
        if self.voice is None:
            return
        for i in indices:
            span = plan.spans[i]
            start, stop = (int(round((t - offset) * SAMPLE_RATE)) for t in (span.start_s, span.end_s))
            if not self.audio.has_speech(span.start_s, span.end_s, offset):
                try:
                    check_not_silent(wave[start:stop], plan.input)  # silence keeps its own reason
                    plan.miss("audio", i, NO_SPEECH)
                except BadInputError as error:
                    plan.miss("audio", i, error.reason)
                continue
            self.voice_step.queue(plan, i, wave[start:stop])

    def _words(self, plan: Plan, indices: range, reason: Callable[[int], str]) -> None:
        """Tokens of each utterance's transcript queued for the words tower, or `reason(i)` when it has none."""
        if self.words is None:
            return
        for i in indices:
            text = plan.spans[i].text
            if not text:
                plan.miss("text", i, reason(i))
                continue
            with self.clock("text_tokens"):
                plan.queued_words.append((i, self.words.encode(text)))

    # ---- towers and fusion -------------------------------------------------------------------------

    def _run_towers(self, plans: Sequence[Plan]) -> None:
        """The queued voice and words work of `plans` through their towers, in shared bucketed batches."""
        voice = [(plan, *queued) for plan in plans for queued in plan.queued_voice]
        if voice:
            self.voice_step.run(voice)
        words = [(plan, *queued) for plan in plans for queued in plan.queued_words]
        if words:
            tower = self.towers["text"]
            order = sorted(range(len(words)), key=lambda k: len(words[k][2]["input_ids"]))  # alike lengths together
            for start in range(0, len(order), MAX_BATCH):
                chunk = order[start:start + MAX_BATCH]
                with self.clock("text_tokens"):
                    batch = Collate(tower.task.padded)([words[k][2] for k in chunk])
                with self.clock("text_tower"):
                    probs = run_tower(tower, {k: batch[k] for k in tower.task.model_fields}, MAX_BATCH)
                for k, p in zip(chunk, probs):
                    plan, i, _ = words[k]
                    plan.put("text", i, p)
        for plan in plans:
            plan.queued_voice.clear()
            plan.queued_words.clear()

    def _fused(self, plans: Sequence[Plan], order: Sequence[Plan | BadInputError]
              ) -> Iterator[Prediction | BadInputError]:
        """One fusion call over every utterance of `plans`; yields `order` with each plan's Prediction."""
        arrays = {id(plan): plan.arrays() for plan in plans}
        usable = [plan for plan in plans if arrays[id(plan)][1].any()]
        fused: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        if usable:
            probs = np.concatenate([arrays[id(p)][0] for p in usable])
            present = np.concatenate([arrays[id(p)][1] for p in usable])
            with self.clock("fusion"):
                n, padded = len(probs), bucket(len(probs))  # one compiled fusion per bucket of utterances
                probs = np.concatenate([probs, np.full((padded - n, *probs.shape[1:]), 1 / len(EMOTIONS),
                                                       np.float32)])
                present = np.concatenate([present, np.zeros((padded - n, present.shape[1]), bool)])
                decision, scores = (np.asarray(x)[:n] for x in _fusion(self.bundle.fusion, probs, present))
            bounds = np.cumsum([0] + [len(p.spans) for p in usable])
            fused = {id(p): (decision[a:b], scores[a:b]) for p, a, b in zip(usable, bounds[:-1], bounds[1:])}
        calibrated = bool(np.any(np.asarray(self.bundle.fusion.temperatures) != 1.0))
        for item in order:
            if isinstance(item, BadInputError):
                yield item
            elif id(item) not in fused:
                yield BadInputError(item.input, "no usable modality: " + "; ".join(item.missing_reasons()))
            else:
                yield item.prediction(*arrays[id(item)], *fused[id(item)], requested=self.requested,
                                      rule=self.bundle.fusion.rule, calibrated=calibrated)
