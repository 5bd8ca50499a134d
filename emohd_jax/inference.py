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

import dataclasses
import glob
import os
import pathlib
from typing import Iterable, Sequence

import jax.numpy as jnp
import numpy as np

from emohd_jax import fusion
from emohd_jax.bundle import Bundle, LoadedTower, load_bundle
from emohd_jax.classes import EMOTIONS
from emohd_jax.clip_decision import clip_probabilities
from emohd_jax.errors import EXIT_NONE, EXIT_OK, EXIT_PARTIAL, BadInputError, CommandLineParser, CorruptMediaError
from emohd_jax.input_pipeline import Collate
from emohd_jax.utterances import Span, plan_utterances

MEDIA_SUFFIXES = (".mp4", ".flv", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg",
                  ".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus", ".aac")


@dataclasses.dataclass
class PredictRun:
    results: list[dict]                  # one "emohd.predict/1" dict per predicted input
    failures: list[tuple[str, str]]      # (input, why it could not be predicted)

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


def _label(probs: np.ndarray) -> str:
    return EMOTIONS[int(np.argmax(probs))]


def _rounded(probs: np.ndarray) -> list[float]:
    return [round(float(p), 5) for p in probs]


class Predictor:
    """The whole system over one bundle: decode → utterances → extract → towers → fusion → result dicts."""

    def __init__(self, bundle: Bundle | None = None, *, transcriber=None, max_utterance_s: float = 8.0,
                 window_s: float = 4.0):
        self.bundle = bundle or load_bundle()
        self.towers = self.bundle.towers
        self.modalities = tuple(self.bundle.manifest["modalities"])
        self.max_utterance_s, self.window_s = max_utterance_s, window_s
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

    # ---- decoding --------------------------------------------------------------------------------

    def _decode(self, path: pathlib.Path) -> tuple[np.ndarray | None, tuple | None, dict[str, str]]:
        """(wave [samples] | None, (frames [n, h, w, 3], timestamps_s [n]) | None, reasons a stream is missing)."""
        from emohd_jax.audio_io import load_audio
        from emohd_jax.video_io import sample_frames

        reasons, wave, video = {}, None, None
        if self.audio is not None or self.text is not None:
            try:
                wave = load_audio(path)
            except BadInputError as error:
                reasons["audio"] = error.reason
        if self.faces is not None:
            try:
                video = sample_frames(path, fps=self.faces.fps)
            except BadInputError as error:
                reasons["visual"] = error.reason
        if wave is None and video is None:
            raise CorruptMediaError(path, "; ".join(f"{k}: {v}" for k, v in reasons.items()))
        return wave, video, reasons

    def _speech(self, wave: np.ndarray, duration_s: float):
        """ASR segments of the recording (one transcript for a short clip, timestamped segments for a long one)."""
        from emohd_jax.audio_io import SILENCE_THRESHOLD_DBFS, peak_dbfs
        from emohd_jax.utterances import SpeechSegment

        if wave.size == 0 or peak_dbfs(wave) < SILENCE_THRESHOLD_DBFS:
            return []
        if duration_s <= self.max_utterance_s:
            sentence = self.transcriber.transcribe([wave])[0].sentence
            return [SpeechSegment(0.0, duration_s, sentence)] if sentence else []
        return self.transcriber.segments(wave)

    # ---- one input -------------------------------------------------------------------------------

    def predict_file(self, path: str | os.PathLike | None, *, transcript: str | None = None) -> dict:
        """One input → its "emohd.predict/1" result; BadInputError naming the file when no modality is usable.

        `transcript` replaces ASR (a dataset's subtitles); with `path=None` only the text is predicted.
        """
        if path is None:
            path, wave, video = pathlib.Path("<transcript>"), None, None
            stream_reasons = {"visual": "no media file", "audio": "no media file"}
        else:
            path = pathlib.Path(path)
            wave, video, stream_reasons = self._decode(path)
        rate = 16000
        audio_s = 0.0 if wave is None else wave.size / rate
        video_s = 0.0 if video is None else float(video[1][-1]) + 0.5 / self.faces.fps
        duration = max(audio_s, video_s)
        if transcript is not None:
            from emohd_jax.utterances import SpeechSegment

            speech = [SpeechSegment(0.0, duration, transcript)] if transcript.strip() else []
        elif wave is not None and self.text is not None:
            speech = self._speech(wave, duration)
        else:
            speech = []
        spans = plan_utterances(duration, speech, max_utterance_s=self.max_utterance_s, window_s=self.window_s)

        present = np.zeros((len(spans), len(self.modalities)), bool)
        probs = np.full((len(spans), len(self.modalities), len(EMOTIONS)), 1.0 / len(EMOTIONS), np.float32)
        entries = [{} for _ in spans]

        def put(modality: str, i: int, p: np.ndarray | None, reason: str | None = None, **extra) -> None:
            if p is None:
                entries[i][modality] = {"present": False, "reason": reason}
                return
            m = self.modalities.index(modality)
            present[i, m], probs[i, m] = True, p
            entries[i][modality] = {"present": True, "probs": _rounded(p), "label": extra.pop("label", _label(p)),
                                    **extra}

        frames = []
        per_second = self._visual(path, video, spans, stream_reasons, put, frames) if self.faces is not None else []
        per_patch = self._audio(path, wave, spans, stream_reasons, put) if self.audio is not None else []
        if self.text is not None:
            self._text(spans, wave, stream_reasons, put)
        if not present.any():
            reasons = sorted({e["reason"] for entry in entries for e in entry.values() if not e["present"]})
            raise BadInputError(path, "no usable modality: " + "; ".join(reasons))
        decision, scores = fusion.fuse_with(self.bundle.fusion, jnp.asarray(probs), jnp.asarray(present))
        decision, scores = np.asarray(decision), np.asarray(scores)
        utterances = []
        for i, span in enumerate(spans):
            used = [m for j, m in enumerate(self.modalities) if present[i, j]]
            fused = {"label": EMOTIONS[decision[i]] if decision[i] >= 0 else None,
                     "scores": _rounded(scores[i]) if used else None, "modalities_used": used}
            utterances.append({"index": i, "start_s": round(span.start_s, 3), "end_s": round(span.end_s, 3),
                               "source": span.source, "transcript": span.text,
                               "modalities": {m: entries[i][m] for m in self.modalities}, "fused": fused})
        from emohd_jax.predict_outputs import SCHEMA

        return {"schema": SCHEMA, "input": str(path), "duration_s": round(duration, 3), "classes": list(EMOTIONS),
                "fusion": {"rule": self.bundle.fusion.rule, "calibrated": bool(np.any(
                    np.asarray(self.bundle.fusion.temperatures) != 1.0)), "modalities": list(self.modalities)},
                "utterances": utterances, "per_second": per_second, "per_patch": per_patch, "frames": frames}

    def _visual(self, path, video, spans: Sequence[Span], stream_reasons, put, frames_out: list) -> list[dict]:
        if video is None:
            for i in range(len(spans)):
                put("visual", i, None, stream_reasons.get("visual", "no video stream"))
            return []
        frames, timestamps = video
        try:
            faces, face_times, detections = self.faces.faces_in_frames(frames, timestamps, source=path)
        except BadInputError:
            faces, face_times, detections = np.zeros((0,)), np.zeros((0,)), None
        # Every detected face's probability per sampled frame: what the MELD-sub filter (SPEC §6) reads.
        frames_out.extend({"t": round(float(t), 3), "face_probs": [] if detections is None else
                           [round(float(p), 4) for p in detections[k].probs]} for k, t in enumerate(timestamps))
        frame_probs = _run_tower(self.towers["visual"], {"face": faces}) if len(faces) else np.zeros((0, 7))
        for i, span in enumerate(spans):
            inside = (face_times >= span.start_s) & (face_times < span.end_s)
            sampled = int(np.sum((timestamps >= span.start_s) & (timestamps < span.end_s)))
            if not inside.any():
                put("visual", i, None, f"no face in the {sampled} frame(s) sampled" if sampled else "no frame sampled")
                continue
            decided, mean = clip_probabilities(frame_probs[inside], "vote")  # SPEC §2.5: majority vote
            put("visual", i, mean, label=EMOTIONS[decided], frames=int(inside.sum()))
        return [{"t": round(float(t), 3), "probs": _rounded(p), "label": _label(p)}
                for t, p in zip(face_times, frame_probs)]

    def _audio(self, path, wave, spans: Sequence[Span], stream_reasons, put) -> list[dict]:
        if wave is None:
            for i in range(len(spans)):
                put("audio", i, None, stream_reasons.get("audio", "no audio track"))
            return []
        rate = self.audio.spec.sample_rate
        patch_s = self.audio.spec.patch_samples / rate
        owners, patches, starts = [], [], []
        for i, span in enumerate(spans):
            piece = wave[int(span.start_s * rate):int(span.end_s * rate)]
            try:
                span_patches, offset = self.audio.wave_patches(piece, path)
            except BadInputError as error:
                put("audio", i, None, error.reason)
                continue
            owners += [i] * len(span_patches)
            patches.append(span_patches)
            starts += [span.start_s + offset + k * patch_s for k in range(len(span_patches))]
        if not patches:
            return []
        patch_probs = _run_tower(self.towers["audio"], {"patches": np.concatenate(patches)})
        owners = np.asarray(owners)
        for i in np.unique(owners):
            decided, mean = clip_probabilities(patch_probs[owners == i], self.towers["audio"].config.eval.clip_rule)
            put("audio", int(i), mean, label=EMOTIONS[decided], patches=int(np.sum(owners == i)))
        return [{"start_s": round(s, 3), "end_s": round(s + patch_s, 3), "probs": _rounded(p), "label": _label(p)}
                for s, p in zip(starts, patch_probs)]

    def _text(self, spans: Sequence[Span], wave, stream_reasons, put) -> None:
        spoken = [i for i, span in enumerate(spans) if span.text]
        for i, span in enumerate(spans):
            if not span.text:
                put("text", i, None, "no speech recognised" if wave is not None
                    else stream_reasons.get("audio", "no audio track"))
        if not spoken:
            return
        tower = self.towers["text"]
        records = [self.text.encode(spans[i].text) for i in spoken]
        batch = Collate(tower.task.padded)(records)
        text_probs = _run_tower(tower, {k: batch[k] for k in tower.task.model_fields})
        for i, p in zip(spoken, text_probs):
            put("text", i, p)


def predict(paths: Sequence[str | os.PathLike], bundle: Bundle | str | os.PathLike | None = None, *,
            out_dir: str | os.PathLike | None = None, progress: bool = True,
            **options) -> PredictRun:
    """Predicts every input (files, folders, globs); writes JSON + CSV + timeline PNG per input to `out_dir`.

    Bad inputs are listed in `failures` with their reason and the others go on. `options`:
    `max_utterance_s`, `window_s` (see `Predictor`).
    """
    from tqdm import tqdm

    from emohd_jax.predict_outputs import write_result

    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle)
    predictor = Predictor(bundle, **options)
    inputs, failures = resolve_inputs(paths)
    results = []
    for path in tqdm(inputs, desc="predict", unit="input", disable=not progress):
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
            write_result(result, out_dir, stem=path.stem)
    return PredictRun(results, failures)


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
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no table")
    args = parser.parse_args(argv)
    run = predict(args.paths, args.bundle, out_dir=args.out, progress=not args.quiet,
                  max_utterance_s=args.max_utterance_s, window_s=args.window_s)
    if not args.quiet:
        Console().print(summary_table(run.results, run.failures))
        print(f"{len(run.results)} predicted, {len(run.failures)} failed → {args.out}")
    return run.exit_code
