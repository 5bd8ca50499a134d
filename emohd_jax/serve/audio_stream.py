"""The audio of `predict`: decoded in blocks, each block cut into utterances that follow the speech.

Speech comes from ASR when the words are requested (its segments carry the transcript when the
words can be trusted, `emohd_jax.asr.trust`), from the voice activity detector alone otherwise (no
recogniser runs); stretches without speech become windows. Each block keeps what was heard (`heard`,
for the words' reasons) and where the speech is (`stretches`, for the voice: only speech is voice).
A block that is not the last stops before a speech segment that runs into its end, so no utterance
is cut at a block boundary: those samples start the next block. Memory stays flat however long the
recording.
"""

from __future__ import annotations

import concurrent.futures
import pathlib
from typing import Iterator

import numpy as np

from emohd_jax.asr.transcriber import TimedTranscript
from emohd_jax.asr.trust import NO_SPEECH, WordsPolicy, words_missing_reason, words_missing_reason_at
from emohd_jax.audio.io import SAMPLE_RATE, SILENCE_THRESHOLD_DBFS, iter_audio, peak_dbfs
from emohd_jax.serve.clock import StageClock
from emohd_jax.serve.plan import Plan
from emohd_jax.utterances import SpeechSegment


class AudioStream:
    """Blocks of `block_s` seconds → utterances planned into a `Plan`; `words`: run ASR (else the VAD only);
    `voice`: find the speech stretches of every block (the voice is present only where there is speech);
    `policy`: when ASR words may be used (a transcript the user gives skips it)."""

    def __init__(self, clock: StageClock, *, words: bool, voice: bool = True, transcriber=None,
                 policy: WordsPolicy = WordsPolicy(), max_utterance_s: float = 8.0, window_s: float = 4.0,
                 block_s: float = 120.0, carry_s: float = 1.0):
        self.clock, self.words, self.voice, self._transcriber, self.policy = clock, words, voice, transcriber, policy
        self.max_utterance_s, self.window_s, self.block_s, self.carry_s = max_utterance_s, window_s, block_s, carry_s
        self.heard: list[TimedTranscript] = []      # the last planned block's ASR stretches, block-relative s
        self.stretches: list[tuple[float, float]] = []  # the last planned block's speech (start_s, end_s), same

    @property
    def transcriber(self):
        if isinstance(self._transcriber, concurrent.futures.Future):  # loading on a worker thread (Predictor)
            self._transcriber = self._transcriber.result()
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
            self.heard, self.stretches = [], self._vad(wave) if self.voice else []
        else:
            speech = self.speech(wave, whole_clip)
        if not final and speech and speech[-1].end_s > length - self.carry_s and speech[-1].start_s > 0:
            end, speech = offset + speech[-1].start_s, speech[:-1]
        indices = self.cover(plan, offset, end, speech)
        return indices, (int(round((end - offset) * SAMPLE_RATE)) if not final else wave.size)

    def speech(self, wave: np.ndarray, whole_clip: bool) -> list[SpeechSegment]:
        """A block's speech: one transcript for a short clip, the ASR of each VAD stretch otherwise, the words of
        a stretch kept only when `policy` trusts them (an untrusted stretch stays an utterance, without words);
        without words, the VAD's stretches for a long block and nothing for a clip (it is one utterance anyway).
        Sets `heard` and `stretches` for the block."""
        self.heard, self.stretches = [], []
        if wave.size == 0 or peak_dbfs(wave) < SILENCE_THRESHOLD_DBFS:
            return []
        if not self.words:
            if whole_clip and not self.voice:
                return []
            self.stretches = self._vad(wave)
            return [] if whole_clip else [SpeechSegment(a, b, None) for a, b in self.stretches]
        with self.clock("asr"):
            self.heard = ([TimedTranscript(0.0, wave.size / SAMPLE_RATE, self.transcriber.transcribe([wave])[0])]
                          if whole_clip else self.transcriber.timed_transcripts(wave))
        if whole_clip:
            self.stretches = self._vad(wave) if self.voice else []
            sentence = self.heard[0].transcript.sentence
            trusted = words_missing_reason(self.heard[0].transcript, self.policy) is None
            return [SpeechSegment(0.0, wave.size / SAMPLE_RATE, sentence)] if trusted else []
        self.stretches = [(t.start_s, t.end_s) for t in self.heard]
        return [SpeechSegment(t.start_s, t.end_s, t.transcript.sentence
                              if words_missing_reason(t.transcript, self.policy) is None else None)
                for t in self.heard]

    def _vad(self, wave: np.ndarray) -> list[tuple[float, float]]:
        """wave: [samples] → its speech stretches (start_s, end_s) by the Silero VAD; none in noise or silence."""
        from emohd_jax.asr.whisper import speech_stretches

        with self.clock("vad"):
            return [(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in speech_stretches(wave)]

    def words_reason(self, start_s: float, end_s: float, offset: float) -> str:
        """Why an utterance [start_s, end_s) of the block at `offset` has no words: the reason of the ASR stretch
        it overlaps most ("language: ur", "low ASR confidence", …), else "no speech recognised"."""
        return words_missing_reason_at(self.heard, start_s - offset, end_s - offset, self.policy) or NO_SPEECH

    def has_speech(self, start_s: float, end_s: float, offset: float) -> bool:
        """Whether an utterance [start_s, end_s) of the block at `offset` overlaps a speech stretch."""
        return any(min(end_s - offset, b) > max(start_s - offset, a) for a, b in self.stretches)
