"""The one interface every speech recogniser implements (SPEC §4.1): waves in, word tokens and a sentence out."""

from __future__ import annotations

import dataclasses
from typing import Protocol, Sequence

import numpy as np

from emohd_jax.text.normalize import normalize_text, word_tokens

SAMPLE_RATE = 16000


class BackendUnavailableError(ImportError):
    """An ASR backend's package or model is not installed; the message says what to install."""


@dataclasses.dataclass
class Transcript:
    """`words` feed the similarity check; `sentence` (punctuated) feeds the text model; `seconds`: clip length."""

    words: list[str]
    sentence: str
    seconds: float

    @classmethod
    def from_text(cls, text: str, seconds: float) -> "Transcript":
        """Both outputs from one raw recogniser string, normalised like the datasets' own transcripts."""
        sentence = normalize_text(text)
        return cls(words=word_tokens(sentence), sentence=sentence, seconds=seconds)


class Transcriber(Protocol):
    """Batch-friendly: one call per batch so a backend can pad and run the clips together."""

    def transcribe(self, waves: Sequence[np.ndarray]) -> list[Transcript]:
        """waves: each [samples] float32 mono at 16 kHz → one Transcript per wave, in order."""
        ...
