"""One normalisation for subtitles and ASR transcripts: mojibake repaired, typographic punctuation made plain."""

from __future__ import annotations

import re

import ftfy

_PUNCTUATION = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"', "…": "...", "—": "-", "–": "-", "\u00a0": " "})
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")


def normalize_text(text: str) -> str:
    """Repairs cp1252 mojibake (`â€™` → `’`) with ftfy, then plain ASCII punctuation and single spaces."""
    fixed = ftfy.fix_text(text).translate(_PUNCTUATION)
    return " ".join(fixed.split())


def word_tokens(text: str) -> list[str]:
    """Lowercase word tokens (apostrophes kept inside words) for term-frequency comparisons."""
    return _WORD.findall(normalize_text(text).lower())
