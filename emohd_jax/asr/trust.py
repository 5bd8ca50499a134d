"""Whether a transcript's words may reach the text tower: it reads English only, so words are used only when the
recogniser heard English, was sure of it and of the words, and gave some; otherwise the words modality is missing
with its reason, never guessed from words read into another language.

The defaults are measured (`emohd asr language`, reports/asr_language/): see `WordsPolicy`.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from emohd_jax.asr.transcriber import TimedTranscript, Transcript
from emohd_jax.errors import UsageError

NO_SPEECH = "no speech recognised"          # the predictor's reason for a span without words
LOW_CONFIDENCE = "low ASR confidence"
UNCLEAR_LANGUAGE = "language unclear"       # heard as English, but the detector was not sure of it


def language_reason(code: str) -> str:
    """The reason for speech heard in another language than English, e.g. "language: ur"."""
    return f"language: {code}"


@dataclasses.dataclass(frozen=True)
class WordsPolicy:
    """Thresholds of `words_missing_reason`.

    `min_language_probability`: the language detector's probability that the speech is English, when English is
    its first choice (multilingual models only; tiny.en cannot tell and has no such number).
    `min_avg_logprob`: the decode's mean log-probability per token (seconds-weighted over windows).
    `max_no_speech_prob`: the probability Whisper gives "no speech" at the window start.
    """

    min_language_probability: float = 0.5
    min_avg_logprob: float = -1.0
    max_no_speech_prob: float = 0.6

    def __post_init__(self):
        # A probability outside [0, 1] or a positive log-probability would silently keep or drop every word.
        for name in ("min_language_probability", "max_no_speech_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UsageError(f"WordsPolicy.{name}={getattr(self, name)!r}", "not a probability",
                                 "a value in [0, 1]")
        if not self.min_avg_logprob <= 0.0:
            raise UsageError(f"WordsPolicy.min_avg_logprob={self.min_avg_logprob!r}", "not a log-probability",
                             "a value <= 0 (the default is -1.0)")


def words_missing_reason(transcript: Transcript, policy: WordsPolicy = WordsPolicy()) -> str | None:
    """None when the words may be used; else why not: "language: ur" (another language heard), "language unclear"
    (English heard with a probability below the policy's), "no speech recognised" (no words), "low ASR confidence"
    (the decode's log-probability too low or its no-speech probability too high). A transcript without language or
    confidence numbers (a backend without them, a transcript given by the user) is judged on what it has."""
    if transcript.language is not None and transcript.language != "en":
        return language_reason(transcript.language)
    probability = transcript.language_probability
    if probability is not None and probability < policy.min_language_probability:
        return UNCLEAR_LANGUAGE
    if not transcript.words:
        return NO_SPEECH
    confidence = transcript.confidence
    if confidence is not None and (confidence.avg_logprob < policy.min_avg_logprob
                                   or confidence.no_speech_prob > policy.max_no_speech_prob):
        return LOW_CONFIDENCE
    return None


def words_missing_reason_at(timed: Sequence[TimedTranscript], start_s: float, end_s: float,
                            policy: WordsPolicy = WordsPolicy()) -> str | None:
    """The reason for an utterance [start_s, end_s) of a long recording: that of the speech stretch overlapping it
    most (None when its words may be used), "no speech recognised" when it overlaps none."""
    overlaps = [(min(end_s, t.end_s) - max(start_s, t.start_s), t) for t in timed]
    overlap, stretch = max(overlaps, key=lambda pair: pair[0], default=(0.0, None))
    return words_missing_reason(stretch.transcript, policy) if stretch is not None and overlap > 0 else NO_SPEECH
