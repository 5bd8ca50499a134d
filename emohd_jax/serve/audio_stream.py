"""The audio of `predict`: decoded in blocks, each block cut into utterances that follow the speech.

Speech comes from ASR when the words are requested (its segments carry the transcript), from the
voice activity detector alone otherwise (no recogniser runs); stretches without speech become
windows. A block that is not the last stops before a speech segment that runs into its end, so no
utterance is cut at a block boundary: those samples start the next block. Memory stays flat however
long the recording.
"""

from __future__ import annotations

import pathlib
from typing import Iterator

import numpy as np

from emohd_jax.audio.io import SAMPLE_RATE, SILENCE_THRESHOLD_DBFS, iter_audio, peak_dbfs
from emohd_jax.serve.clock import StageClock
from emohd_jax.serve.plan import Plan
from emohd_jax.utterances import SpeechSegment


class AudioStream:
    """Blocks of `block_s` seconds → utterances planned into a `Plan`; `words`: run ASR (else the VAD only)."""

    def __init__(self, clock: StageClock, *, words: bool, transcriber=None, max_utterance_s: float = 8.0,
                 window_s: float = 4.0, block_s: float = 120.0, carry_s: float = 1.0):
        self.clock, self.words, self._transcriber = clock, words, transcriber
        self.max_utterance_s, self.window_s, self.block_s, self.carry_s = max_utterance_s, window_s, block_s, carry_s

    @property
    def transcriber(self):
        if self._transcriber is None:  # Whisper loads in seconds: only when an input has speech to transcribe
            from emohd_jax.asr.whisper import WhisperTranscriber

            self._transcriber = WhisperTranscriber()
        return self._transcriber

    def blocks(self, path: pathlib.Path, plan: Plan, transcript: str | None
               ) -> Iterator[tuple[np.ndarray, float, range, bool]]:
        """Decodes and plans block by block: (wave [samples] 16 kHz, offset_s of wave[0], its utterances in
        `plan`, whether it is the last block). The last block runs to `plan.duration_s` (the longer of the audio
        and the video). `transcript` replaces ASR (a dataset's subtitles). BadInputError when decoding fails."""
        buffer, offset = np.zeros(0, np.float32), 0.0
        for block in self.clock.iterate("decode_audio", iter_audio(path, block_s=self.block_s)):
            buffer = np.concatenate([buffer, block])
            if buffer.size >= self.block_s * SAMPLE_RATE:  # more may follow: plan what is finished
                indices, used = self._plan_block(plan, buffer, offset, False, transcript)
                yield buffer, offset, indices, False
                buffer, offset = buffer[used:], offset + used / SAMPLE_RATE
        plan.duration_s = max(plan.duration_s, offset + buffer.size / SAMPLE_RATE)
        indices, _ = self._plan_block(plan, buffer, offset, True, transcript)
        yield buffer, offset, indices, True

    def cover(self, plan: Plan, offset: float, end: float, speech: list[SpeechSegment]) -> range:
        """Spans over [offset, end) from speech times relative to `offset`; only a whole short input is a 'clip'."""
        return plan.cover(offset, end, speech, max_utterance_s=self.max_utterance_s, window_s=self.window_s)

    def _plan_block(self, plan: Plan, wave: np.ndarray, offset: float, final: bool,
                    transcript: str | None) -> tuple[range, int]:
        """(the block's utterances, samples of `wave` they use)."""
        length = wave.size / SAMPLE_RATE
        end = plan.duration_s if final else offset + length
        whole_clip = final and offset == 0.0 and end <= self.max_utterance_s
        if transcript is not None:
            speech = [SpeechSegment(0.0, end, transcript)] if transcript.strip() and offset == 0.0 else []
        else:
            speech = self.speech(wave, whole_clip)
        if not final and speech and speech[-1].end_s > length - self.carry_s and speech[-1].start_s > 0:
            end, speech = offset + speech[-1].start_s, speech[:-1]
        indices = self.cover(plan, offset, end, speech)
        return indices, (int(round((end - offset) * SAMPLE_RATE)) if not final else wave.size)

    def speech(self, wave: np.ndarray, whole_clip: bool) -> list[SpeechSegment]:
        """A block's speech: one transcript for a short clip, timestamped ASR segments otherwise; without
        words, the VAD's stretches for a long block and nothing for a clip (it is one utterance anyway)."""
        if wave.size == 0 or peak_dbfs(wave) < SILENCE_THRESHOLD_DBFS:
            return []
        if not self.words:
            if whole_clip:
                return []
            from emohd_jax.asr.whisper import speech_stretches

            with self.clock("vad"):
                return [SpeechSegment(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE, None)
                        for s in speech_stretches(wave)]
        with self.clock("asr"):
            if whole_clip:
                sentence = self.transcriber.transcribe([wave])[0].sentence
                return [SpeechSegment(0.0, wave.size / SAMPLE_RATE, sentence)] if sentence else []
            return self.transcriber.segments(wave)
