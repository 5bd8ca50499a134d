"""The one interface every speech recogniser implements (SPEC §4.1): waves in, word tokens and a sentence out."""

from __future__ import annotations

import dataclasses
from typing import Protocol, Sequence

import numpy as np

from emohd_jax.text.normalize import normalize_text, word_tokens

SAMPLE_RATE = 16000


class BackendUnavailableError(ImportError):
    """An ASR backend's package or model is not installed; the message says what to install."""


@dataclasses.dataclass(frozen=True)
class Confidence:
    """How sure the recogniser was of the words it gave, seconds-weighted over the windows that gave words.

    `avg_logprob`: mean log-probability per decoded token (Whisper's own rule reads < -1 as a failed decode);
    `no_speech_prob`: probability of the no-speech token at the window start; `windows`: how many windows.
    """

    avg_logprob: float
    no_speech_prob: float
    windows: int


@dataclasses.dataclass
class Transcript:
    """`words` feed the similarity check; `sentence` (punctuated) feeds the text model; `seconds`: clip length.

    `language`: ISO code the recogniser heard ("en" from an English-only model, which cannot tell; None when no
    window was listened to, e.g. silence); `language_probability`: the language detector's probability for it
    (None without a detector); `confidence`: None when the backend gives none or no window gave words. Whether the
    words may be used is `emohd_jax.asr.trust.words_missing_reason`'s call, not the recogniser's.
    """

    words: list[str]
    sentence: str
    seconds: float
    language: str | None = "en"
    language_probability: float | None = None
    confidence: Confidence | None = None

    @classmethod
    def from_text(cls, text: str, seconds: float, **signals) -> "Transcript":
        """Both outputs from one raw recogniser string, normalised like the datasets' own transcripts; `signals`:
        language, language_probability, confidence."""
        sentence = normalize_text(text)
        return cls(words=word_tokens(sentence), sentence=sentence, seconds=seconds, **signals)


@dataclasses.dataclass(frozen=True)
class TimedTranscript:
    """A stretch of a long recording (seconds from its start) and what the recogniser heard in it."""

    start_s: float
    end_s: float
    transcript: Transcript


class Transcriber(Protocol):
    """Batch-friendly: one call per batch so a backend can pad and run the clips together."""

    def transcribe(self, waves: Sequence[np.ndarray]) -> list[Transcript]:
        """waves: each [samples] float32 mono at 16 kHz → one Transcript per wave, in order."""
        ...
