"""How a recording is cut into utterances for `predict`: pure planning, no I/O.

A short clip is one utterance. A long recording follows the speech: each speech segment (from ASR, or
from the voice activity detector alone when the words are not requested) is an utterance (cut into
near-equal pieces when longer than `max_utterance_s`, its words shared out by time), and the stretches
between segments become fixed windows with face and voice only, so the spans tile the recording:
contiguous, from 0 to its end, none longer than `max_utterance_s`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence


@dataclasses.dataclass(frozen=True)
class SpeechSegment:
    """A stretch of speech, seconds from the start of the recording, with the words heard in it (None: found by
    the voice activity detector, no words recognised)."""

    start_s: float
    end_s: float
    text: str | None


@dataclasses.dataclass(frozen=True)
class Span:
    start_s: float
    end_s: float
    source: str            # 'clip' (the whole short input) | 'asr' (a segment with words) | 'vad' (speech,
    #                        words not recognised) | 'window' (no speech)
    text: str | None = None


def _pieces(start: float, end: float, longest: float) -> list[tuple[float, float]]:
    """[start, end) as the fewest near-equal pieces no longer than `longest`."""
    n = max(1, math.ceil((end - start) / longest - 1e-9))
    edges = [start + (end - start) * k / n for k in range(n + 1)]
    edges[-1] = end
    return list(zip(edges[:-1], edges[1:]))


def _split_words(text: str, n: int) -> list[str]:
    """A segment's words shared out over `n` equal-time pieces (Whisper gives no word times here)."""
    words = text.split()
    bounds = [round(len(words) * k / n) for k in range(n + 1)]
    return [" ".join(words[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def plan_utterances(duration_s: float, speech: Sequence[SpeechSegment] | None, *, max_utterance_s: float = 8.0,
                    window_s: float = 4.0, min_span_s: float = 0.5) -> list[Span]:
    """Spans tiling [0, duration_s]: one 'clip' span if short, else the speech segments ('asr' with words,
    'vad' without) plus windows over the gaps.

    Segments are clamped to the recording, sorted, and overlaps trimmed; a gap shorter than
    `min_span_s` is absorbed by the span before it (or after it, at the start).
    """
    speech = [s for s in (speech or []) if s.text is None or s.text.strip()]
    if duration_s <= max_utterance_s:
        text = " ".join(s.text.strip() for s in sorted(speech, key=lambda s: s.start_s) if s.text) or None
        return [Span(0.0, max(duration_s, 0.0), "clip", text)]
    segments, cursor = [], 0.0
    for seg in sorted(speech, key=lambda s: (s.start_s, s.end_s)):
        start, end = max(seg.start_s, cursor, 0.0), min(seg.end_s, duration_s)
        if end - start > 1e-6:
            segments.append(SpeechSegment(start, end, seg.text and seg.text.strip()))
            cursor = end
    spans: list[Span] = []

    def add_gap(start: float, end: float) -> None:
        if end - start < min_span_s:
            if spans:  # at the very start the next segment is stretched back to 0 instead
                spans[-1] = dataclasses.replace(spans[-1], end_s=end)
            return
        for a, b in _pieces(start, end, window_s):
            spans.append(Span(a, b, "window"))

    cursor = 0.0
    for seg in segments:
        add_gap(cursor, seg.start_s)
        if not spans:
            seg = dataclasses.replace(seg, start_s=0.0)
        pieces = _pieces(seg.start_s, seg.end_s, max_utterance_s)
        texts = _split_words(seg.text, len(pieces)) if seg.text else [None] * len(pieces)
        for (a, b), words in zip(pieces, texts):
            spans.append(Span(a, b, "asr" if seg.text else "vad", words or None))
        cursor = seg.end_s
    add_gap(cursor, duration_s)
    if spans[-1].end_s < duration_s:
        spans[-1] = dataclasses.replace(spans[-1], end_s=duration_s)
    return _cap(spans, max_utterance_s)


def _cap(spans: list[Span], longest: float) -> list[Span]:
    """Absorbed gaps can push a span past `longest`: cut those again."""
    out = []
    for span in spans:
        pieces = _pieces(span.start_s, span.end_s, longest)
        texts = _split_words(span.text, len(pieces)) if span.text else [None] * len(pieces)
        out += [Span(a, b, span.source, t or None) for (a, b), t in zip(pieces, texts)]
    return out
