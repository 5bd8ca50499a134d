"""`emohd predict` (and `emohd_jax.predict`): media files → per-utterance, per-second and per-patch emotions from three towers and fusion.

Each input is decoded once (16 kHz mono audio, 1 fps frames), cut into utterances (the whole clip when
short; ASR segments and fixed windows over silence when long), and fed through the same extractors that
`prepare` uses, the bundle's three towers (one jitted call per tower and bucket of shapes) and the fitted
fusion (one jitted call per input). A modality that cannot be used (no face, silence, no speech
recognised, no audio track) is reported missing with its reason and masked out of fusion.

    results = emohd_jax.predict(["clip.mp4", "folder/"])      # Python
    emohd predict clip.mp4 folder/ "takes/*.flv" --out preds/   # CLI: JSON + CSV + timeline PNG per input
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import os
import pathlib
import time
from typing import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from emohd_jax import fusion
from emohd_jax.audio.io import SAMPLE_RATE, SILENCE_THRESHOLD_DBFS, iter_audio, peak_dbfs
from emohd_jax.bundle import Bundle, LoadedTower, load_bundle
from emohd_jax.classes import EMOTIONS
from emohd_jax.clip_decision import clip_probabilities
from emohd_jax.errors import EXIT_NONE, EXIT_OK, EXIT_PARTIAL, BadInputError, CommandLineParser, CorruptMediaError
from emohd_jax.input_pipeline import Collate
from emohd_jax.utterances import Span, SpeechSegment, plan_utterances

MEDIA_SUFFIXES = (".mp4", ".flv", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg",
                  ".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus", ".aac")


@dataclasses.dataclass
class PredictRun:
    results: list[dict]                  # one "emohd.predict/1" dict per predicted input
    failures: list[tuple[str, str]]      # (input, why it could not be predicted)
    resumed: list[str] = dataclasses.field(default_factory=list)  # inputs whose earlier result was read back

    @property
    def exit_code(self) -> int:
        if not self.failures:
            return EXIT_OK
        return EXIT_PARTIAL if self.results else EXIT_NONE


def resolve_inputs(paths: Iterable[str | os.PathLike]) -> tuple[list[pathlib.Path], list[tuple[str, str]]]:
    """Files as given, folders searched recursively for media, globs expanded; (inputs, not found)."""
    inputs, missing = [], []
    for raw in paths:
        text = str(raw)
        path = pathlib.Path(text)
        if path.is_dir():
            inputs += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES)
        elif path.is_file():
            inputs.append(path)
        elif glob.has_magic(text) and (matches := sorted(glob.glob(text, recursive=True))):
            inputs += [pathlib.Path(m) for m in matches if pathlib.Path(m).is_file()]
        else:
            missing.append((text, "no such file, folder or matching glob"))
    unique = list(dict.fromkeys(p.resolve() for p in inputs))
    return unique, missing


def _bucket(n: int) -> int:
    """Batch sizes padded to powers of two (≥ 8): a jitted tower compiles once per bucket, not per input."""
    return max(8, 1 << (max(n, 1) - 1).bit_length())


def _run_tower(tower: LoadedTower, fields: dict[str, np.ndarray], max_batch: int = 256) -> np.ndarray:
    """fields: each [n, ...] → probs [n, classes], in padded chunks of at most `max_batch`."""
    n = len(next(iter(fields.values())))
    out = []
    for start in range(0, n, max_batch):
        chunk = {k: v[start:start + max_batch] for k, v in fields.items()}
        size = len(next(iter(chunk.values())))
        padded = {k: np.concatenate([v, np.zeros((_bucket(size) - size, *v.shape[1:]), v.dtype)])
                  for k, v in chunk.items()}
        out.append(np.asarray(tower.probs({k: jnp.asarray(v) for k, v in padded.items()}))[:size])
    return np.concatenate(out) if out else np.zeros((0, len(EMOTIONS)), np.float32)


class StageClock:
    """Seconds spent per stage of `predict` (decode, faces, log-mel, ASR, each tower, fusion), summed over inputs:
    where the time goes, for `emohd bench predict` and anyone tuning a deployment."""

    STAGES = ("decode_video", "decode_audio", "faces", "visual_tower", "log_mel", "audio_tower", "asr",
              "text_tokens", "text_tower", "fusion")

    def __init__(self):
        self.seconds = dict.fromkeys(self.STAGES, 0.0)

    @contextlib.contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - start

    def iterate(self, stage: str, items: Iterable):
        """`items` with the time spent producing each one (a decoder) counted to `stage`."""
        iterator = iter(items)
        while True:
            with self(stage):
                item = next(iterator, _END)
            if item is _END:
                return
            yield item


_END = object()
_fuse = jax.jit(fusion.fuse_with)  # params, probs [spans, modality, class], present [spans, modality]


def _label(probs: np.ndarray) -> str:
    return EMOTIONS[int(np.argmax(probs))]


def _rounded(probs: np.ndarray) -> list[float]:
    return [round(float(p), 5) for p in probs]


@dataclasses.dataclass
class FaceTrack:
    """The face tower over a recording's sampled frames: a few numbers per frame, never the frames."""

    frame_times: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))  # [frames] s
    face_times: list[np.ndarray] = dataclasses.field(default_factory=list)  # per chunk: [faces] s
    face_probs: list[np.ndarray] = dataclasses.field(default_factory=list)  # per chunk: [faces, classes]
    frames: list[dict] = dataclasses.field(default_factory=list)             # the result's "frames"
    reason: str | None = None                                               # why the video is unusable
    duration_s: float = 0.0


@dataclasses.dataclass
class _Plan:
    """A recording's utterances as they are planned block by block, and each modality's entry for each."""

    modalities: tuple[str, ...]
    duration_s: float = 0.0
    spans: list[Span] = dataclasses.field(default_factory=list)
    entries: list[dict] = dataclasses.field(default_factory=list)
    probs: dict[tuple[int, str], np.ndarray] = dataclasses.field(default_factory=dict)
    per_second: list[dict] = dataclasses.field(default_factory=list)
    per_patch: list[dict] = dataclasses.field(default_factory=list)
    frames: list[dict] = dataclasses.field(default_factory=list)

    def add(self, spans: Sequence[Span]) -> range:
        first = len(self.spans)
        self.spans += spans
        self.entries += [{} for _ in spans]
        return range(first, len(self.spans))

    def put(self, modality: str, i: int, probs: np.ndarray | None, reason: str | None = None, **extra) -> None:
        if modality not in self.modalities:
            return
        if probs is None:
            self.entries[i][modality] = {"present": False, "reason": reason}
            return
        self.probs[i, modality] = probs
        self.entries[i][modality] = {"present": True, "probs": _rounded(probs),
                                     "label": extra.pop("label", _label(probs)), **extra}


class Predictor:
    """The whole system over one bundle: decode → utterances → extract → towers → fusion → result dicts.

    `block_s`: seconds of audio planned and run at once (a longer recording is a stream of blocks);
    `frame_chunk`: sampled frames through the face detector at once. Both bound the memory a recording needs.
    """

    def __init__(self, bundle: Bundle | None = None, *, transcriber=None, max_utterance_s: float = 8.0,
                 window_s: float = 4.0, block_s: float = 120.0, frame_chunk: int = 16, carry_s: float = 1.0):
        self.bundle = bundle or load_bundle()
        self.towers = self.bundle.towers
        self.modalities = tuple(self.bundle.manifest["modalities"])
        self.max_utterance_s, self.window_s = max_utterance_s, window_s
        self.block_s, self.frame_chunk, self.carry_s = block_s, frame_chunk, carry_s
        self.clock = StageClock()
        self._transcriber = transcriber
        # The extractors `prepare` uses, built from each tower's own recipe (train/serve skew cannot creep in).
        self.faces = self.towers["visual"].task.extractor(None) if "visual" in self.towers else None
        self.audio = self.towers["audio"].task.extractor(None) if "audio" in self.towers else None
        self.text = self.towers["text"].task.extractor(None) if "text" in self.towers else None

    @property
    def transcriber(self):
        if self._transcriber is None:  # Whisper loads in seconds: only when an input has audio
            from emohd_jax.asr.whisper import WhisperTranscriber

            self._transcriber = WhisperTranscriber()
        return self._transcriber

    # ---- the face track: every sampled frame, streamed in chunks ----------------------------------

    def _face_track(self, path: pathlib.Path) -> FaceTrack:
        """The face tower over the whole video, `frame_chunk` frames at a time (bounded memory)."""
        from emohd_jax.vision.video_io import iter_sampled_frames

        track = FaceTrack()
        stamps, chunk = [], []

        def flush() -> None:
            frames, times = np.stack(chunk), np.asarray(stamps[-len(chunk):])
            try:
                with self.clock("faces"):
                    faces, face_times, detections = self.faces.faces_in_frames(frames, times, source=path)
            except BadInputError:  # no face in this chunk
                faces, face_times, detections = np.zeros((0,)), np.zeros((0,)), None
            # Every detected face's probability per sampled frame: what the MELD-sub filter (SPEC §6) reads.
            track.frames += [{"t": round(float(t), 3), "face_probs": [] if detections is None else
                              [round(float(p), 4) for p in detections[k].probs]} for k, t in enumerate(times)]
            if len(faces):
                track.face_times.append(face_times)
                with self.clock("visual_tower"):
                    track.face_probs.append(_run_tower(self.towers["visual"], {"face": faces}))
            chunk.clear()

        try:
            for frame, t in self.clock.iterate("decode_video", iter_sampled_frames(path, fps=self.faces.fps)):
                chunk.append(frame)
                stamps.append(t)
                if len(chunk) == self.frame_chunk:
                    flush()
        except BadInputError as error:  # unusable video; frames decoded before a late failure are kept
            track.reason = error.reason
        if chunk:
            flush()
        track.frame_times = np.asarray(stamps, np.float64)
        track.duration_s = float(track.frame_times[-1]) + 0.5 / self.faces.fps if stamps else 0.0
        return track

    # ---- the audio stream: blocks → utterances with voice and words --------------------------------

    def _speech(self, wave: np.ndarray, whole_clip: bool):
        """ASR segments of a block: one transcript for a short clip, timestamped segments otherwise."""
        if wave.size == 0 or peak_dbfs(wave) < SILENCE_THRESHOLD_DBFS:
            return []
        if whole_clip:
            sentence = self.transcriber.transcribe([wave])[0].sentence
            return [SpeechSegment(0.0, wave.size / SAMPLE_RATE, sentence)] if sentence else []
        return self.transcriber.segments(wave)

    def _plan(self, plan: _Plan, offset: float, end: float, speech) -> range:
        """Spans over [offset, end) from speech times relative to `offset`; only a whole short input is a 'clip'."""
        if end - offset <= 1e-6 and plan.spans:  # nothing left to cover
            return range(len(plan.spans), len(plan.spans))
        spans = plan_utterances(end - offset, speech, max_utterance_s=self.max_utterance_s, window_s=self.window_s)
        whole = offset == 0.0 and end == plan.duration_s
        return plan.add([Span(offset + s.start_s, offset + s.end_s,
                              s.source if whole or s.source != "clip" else ("asr" if s.text else "window"), s.text)
                         for s in spans])

    def _audio_block(self, path, plan: _Plan, wave: np.ndarray, offset: float, final: bool,
                     transcript: str | None) -> int:
        """Plans the utterances of one block, runs the voice and word towers on them; returns the samples used.

        A block that is not the last stops before a speech segment that runs into its end, so no utterance is
        cut at a block boundary: those samples start the next block. The last block runs to `plan.duration_s`
        (the longer of the audio and the video).
        """
        length = wave.size / SAMPLE_RATE
        end = plan.duration_s if final else offset + length
        whole_clip = final and offset == 0.0 and end <= self.max_utterance_s
        if transcript is not None:
            speech = [SpeechSegment(0.0, end, transcript)] if transcript.strip() and offset == 0.0 else []
        else:
            with self.clock("asr"):
                speech = self._speech(wave, whole_clip) if self.text is not None else []
        if not final and speech and speech[-1].end_s > length - self.carry_s and speech[-1].start_s > 0:
            end, speech = offset + speech[-1].start_s, speech[:-1]
        indices = self._plan(plan, offset, end, speech)
        if self.audio is not None:
            self._voice(path, plan, wave, offset, indices)
        if self.text is not None:
            self._words(plan, indices, "no speech recognised")
        return int(round((end - offset) * SAMPLE_RATE)) if not final else wave.size

    def _voice(self, path, plan: _Plan, wave: np.ndarray, offset: float, indices: range) -> None:
        rate = self.audio.spec.sample_rate
        patch_s = self.audio.spec.patch_samples / rate
        owners, patches, starts = [], [], []
        for i in indices:
            span = plan.spans[i]
            piece = wave[int(round((span.start_s - offset) * rate)):int(round((span.end_s - offset) * rate))]
            try:
                with self.clock("log_mel"):
                    span_patches, first = self.audio.wave_patches(piece, path)
            except BadInputError as error:
                plan.put("audio", i, None, error.reason)
                continue
            owners += [i] * len(span_patches)
            patches.append(span_patches)
            starts += [span.start_s + first + k * patch_s for k in range(len(span_patches))]
        if not patches:
            return
        with self.clock("audio_tower"):
            patch_probs = _run_tower(self.towers["audio"], {"patches": np.concatenate(patches)})
        owners = np.asarray(owners)
        for i in np.unique(owners):
            decided, mean = clip_probabilities(patch_probs[owners == i], self.towers["audio"].config.eval.clip_rule)
            plan.put("audio", int(i), mean, label=EMOTIONS[decided], patches=int(np.sum(owners == i)))
        plan.per_patch += [{"start_s": round(s, 3), "end_s": round(s + patch_s, 3), "probs": _rounded(p),
                            "label": _label(p)} for s, p in zip(starts, patch_probs)]

    def _words(self, plan: _Plan, indices: range, reason: str) -> None:
        spoken = [i for i in indices if plan.spans[i].text]
        for i in indices:
            if not plan.spans[i].text:
                plan.put("text", i, None, reason)
        if not spoken:
            return
        tower = self.towers["text"]
        with self.clock("text_tokens"):
            batch = Collate(tower.task.padded)([self.text.encode(plan.spans[i].text) for i in spoken])
        with self.clock("text_tower"):
            text_probs = _run_tower(tower, {k: batch[k] for k in tower.task.model_fields})
        for i, p in zip(spoken, text_probs):
            plan.put("text", i, p)

    def _without_audio(self, plan: _Plan, offset: float, reason: str) -> None:
        """Windows over [offset, end) where the audio is missing (no track, or it failed part-way)."""
        indices = self._plan(plan, offset, max(plan.duration_s, offset), [])
        for modality in ("audio", "text"):
            if modality in self.modalities:
                for i in indices:
                    plan.put(modality, i, None, reason)

    def _visual(self, plan: _Plan, track: FaceTrack) -> None:
        if not len(track.frame_times):
            for i in range(len(plan.spans)):
                plan.put("visual", i, None, track.reason or "no video frame decoded")
            return
        face_times = np.concatenate(track.face_times) if track.face_times else np.zeros(0)
        face_probs = np.concatenate(track.face_probs) if track.face_probs else np.zeros((0, len(EMOTIONS)))
        for i, span in enumerate(plan.spans):
            inside = (face_times >= span.start_s) & (face_times < span.end_s)
            sampled = int(np.sum((track.frame_times >= span.start_s) & (track.frame_times < span.end_s)))
            if not inside.any():
                plan.put("visual", i, None, f"no face in the {sampled} frame(s) sampled" if sampled
                         else "no frame sampled")
                continue
            decided, mean = clip_probabilities(face_probs[inside], "vote")  # SPEC §2.5: majority vote
            plan.put("visual", i, mean, label=EMOTIONS[decided], frames=int(inside.sum()))
        plan.per_second = [{"t": round(float(t), 3), "probs": _rounded(p), "label": _label(p)}
                           for t, p in zip(face_times, face_probs)]

    # ---- one input -------------------------------------------------------------------------------

    def predict_file(self, path: str | os.PathLike | None, *, transcript: str | None = None) -> dict:
        """One input → its "emohd.predict/1" result; BadInputError naming the file when no modality is usable.

        The video and the audio are each decoded once, as streams (frames in chunks, audio in blocks of
        `block_s`), so memory stays flat however long the recording. `transcript` replaces ASR (a dataset's
        subtitles); with `path=None` only the text is predicted.
        """
        plan = _Plan(self.modalities)
        if path is None:
            path = pathlib.Path("<transcript>")
            said = [SpeechSegment(0.0, 0.0, transcript)] if transcript and transcript.strip() else []
            indices = self._plan(plan, 0.0, 0.0, said)
            self._words(plan, indices, "no transcript")
            for i in indices:
                plan.put("visual", i, None, "no media file")
                plan.put("audio", i, None, "no media file")
            return self._result(path, plan)
        path = pathlib.Path(path)
        track = self._face_track(path) if self.faces is not None else None
        plan.duration_s = track.duration_s if track else 0.0
        audio_reason, offset = None, 0.0
        if self.audio is not None or self.text is not None:
            buffer = np.zeros(0, np.float32)
            try:
                for block in self.clock.iterate("decode_audio", iter_audio(path, block_s=self.block_s)):
                    buffer = np.concatenate([buffer, block])
                    if buffer.size >= self.block_s * SAMPLE_RATE:  # more may follow: plan what is finished
                        used = self._audio_block(path, plan, buffer, offset, False, transcript)
                        buffer, offset = buffer[used:], offset + used / SAMPLE_RATE
            except BadInputError as error:
                audio_reason = error.reason
            if audio_reason is None:
                plan.duration_s = max(plan.duration_s, offset + buffer.size / SAMPLE_RATE)
                self._audio_block(path, plan, buffer, offset, True, transcript)
        if audio_reason is not None or (self.audio is None and self.text is None):
            if track is not None and track.reason and not len(track.frame_times) and not plan.spans:
                raise CorruptMediaError(path, f"audio: {audio_reason}; visual: {track.reason}")
            self._without_audio(plan, offset, audio_reason or "")
        if self.faces is not None:
            self._visual(plan, track)
            plan.frames = track.frames
        return self._result(path, plan)

    def _result(self, path: pathlib.Path, plan: _Plan) -> dict:
        present = np.zeros((len(plan.spans), len(self.modalities)), bool)
        probs = np.full((len(plan.spans), len(self.modalities), len(EMOTIONS)), 1.0 / len(EMOTIONS), np.float32)
        for (i, modality), p in plan.probs.items():
            m = self.modalities.index(modality)
            present[i, m], probs[i, m] = True, p
        if not present.any():
            reasons = sorted({e["reason"] for entry in plan.entries for e in entry.values() if not e["present"]})
            raise BadInputError(path, "no usable modality: " + "; ".join(reasons))
        with self.clock("fusion"):
            n, padded = len(plan.spans), _bucket(len(plan.spans))  # one compiled fusion per bucket of spans
            probs = np.concatenate([probs, np.full((padded - n, *probs.shape[1:]), 1 / len(EMOTIONS), np.float32)])
            present = np.concatenate([present, np.zeros((padded - n, present.shape[1]), bool)])
            decision, scores = (np.asarray(x)[:n] for x in _fuse(self.bundle.fusion, probs, present))
        utterances = []
        for i, span in enumerate(plan.spans):
            used = [m for j, m in enumerate(self.modalities) if present[i, j]]
            fused = {"label": EMOTIONS[decision[i]] if decision[i] >= 0 else None,
                     "scores": _rounded(scores[i]) if used else None, "modalities_used": used}
            utterances.append({"index": i, "start_s": round(span.start_s, 3), "end_s": round(span.end_s, 3),
                               "source": span.source, "transcript": span.text,
                               "modalities": {m: plan.entries[i][m] for m in self.modalities}, "fused": fused})
        from emohd_jax.predict_outputs import SCHEMA

        calibrated = bool(np.any(np.asarray(self.bundle.fusion.temperatures) != 1.0))
        return {"schema": SCHEMA, "input": str(path), "duration_s": round(plan.duration_s, 3),
                "classes": list(EMOTIONS),
                "fusion": {"rule": self.bundle.fusion.rule, "calibrated": calibrated,
                           "modalities": list(self.modalities)},
                "utterances": utterances, "per_second": plan.per_second, "per_patch": plan.per_patch,
                "frames": plan.frames}


def predict(paths: Sequence[str | os.PathLike], bundle: Bundle | str | os.PathLike | None = None, *,
            out_dir: str | os.PathLike | None = None, progress: bool = True, overwrite: bool = False,
            **options) -> PredictRun:
    """Predicts every input (files, folders, globs); writes JSON + CSV + timeline PNG per input to `out_dir`.

    Bad inputs are listed in `failures` with their reason and the others go on. Each input's files are
    written as soon as it is done, atomically; run again, inputs whose result is already in `out_dir` are
    read back instead of predicted (`overwrite=True` redoes them), so an interrupted run loses nothing
    finished. `options`: `max_utterance_s`, `window_s`, `block_s`, `frame_chunk` (see `Predictor`).
    """
    from tqdm import tqdm

    from emohd_jax.predict_outputs import write_result

    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle)
    predictor = Predictor(bundle, **options)
    inputs, failures = resolve_inputs(paths)
    results, resumed, stems = [], [], set()
    for path in tqdm(inputs, desc="predict", unit="input", disable=not progress):
        stem = _unique_stem(path, stems)
        if out_dir is not None and not overwrite and (done := _finished(pathlib.Path(out_dir) / f"{stem}.json", path)):
            results.append(done)
            resumed.append(str(path))
            continue
        try:
            result = predictor.predict_file(path)
        except BadInputError as error:
            failures.append((str(path), error.reason))
            continue
        except FileNotFoundError as error:
            failures.append((str(path), str(error)))
            continue
        results.append(result)
        if out_dir is not None:
            write_result(result, out_dir, stem=stem)
    return PredictRun(results, failures, resumed)


def _unique_stem(path: pathlib.Path, taken: set[str]) -> str:
    """`clip`, or `clip-2`, `clip-3`… when inputs from several folders share a name."""
    stem, n = path.stem, 1
    while stem in taken:
        n += 1
        stem = f"{path.stem}-{n}"
    taken.add(stem)
    return stem


def _finished(json_path: pathlib.Path, path: pathlib.Path) -> dict | None:
    """The result an earlier run wrote for `path`, or None (absent, unreadable, or another input's)."""
    from emohd_jax.predict_outputs import SCHEMA

    try:
        result = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return result if result.get("schema") == SCHEMA and result.get("input") == str(path) else None


def main(argv: list[str] | None = None) -> int:
    """`emohd predict PATH... [--bundle DIR] [--out DIR]`: prints a table, returns the documented exit code."""
    from rich.console import Console

    from emohd_jax.predict_outputs import summary_table

    parser = CommandLineParser(prog="emohd predict", description=(
        "Emotions of the person in each video or audio file: per utterance (face, voice, words and their fusion), "
        "per second (face) and per 0.96 s (voice). Writes <name>.json, <name>.csv and <name>.png per input. "
        f"Exit code {EXIT_OK}: all inputs predicted; {EXIT_PARTIAL}: some failed (listed); "
        f"{EXIT_NONE}: none could be predicted."))
    parser.add_argument("paths", nargs="+", help="media files, folders (searched recursively) or quoted globs")
    parser.add_argument("--bundle", default=None, help="model bundle folder (default: the one shipped in the package)")
    parser.add_argument("--out", default="emohd_predictions", help="output folder (default: %(default)s)")
    parser.add_argument("--max-utterance-s", type=float, default=8.0,
                        help="a recording up to this long is one utterance; longer ones are cut at ASR segments")
    parser.add_argument("--window-s", type=float, default=4.0, help="window length over stretches without speech")
    parser.add_argument("--block-s", type=float, default=120.0,
                        help="seconds of audio decoded and processed at once: memory stays flat however long the input")
    parser.add_argument("--overwrite", action="store_true",
                        help="predict inputs again even when --out already holds their result (default: skip them)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no table")
    args = parser.parse_args(argv)
    run = predict(args.paths, args.bundle, out_dir=args.out, progress=not args.quiet, overwrite=args.overwrite,
                  max_utterance_s=args.max_utterance_s, window_s=args.window_s, block_s=args.block_s)
    if not args.quiet:
        Console().print(summary_table(run.results, run.failures))
        again = f" ({len(run.resumed)} done by an earlier run: --overwrite redoes them)" if run.resumed else ""
        print(f"{len(run.results)} predicted{again}, {len(run.failures)} failed → {args.out}")
    return run.exit_code
