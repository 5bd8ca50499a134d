"""TESS (Dupuis & Pichora-Fuller, 2010): two English speakers saying "Say the word ___" in 7 emotions.

`ROOT/tess/manifest.csv` (path,label,speaker) lists the clips; ps (pleasant surprise) is surprise.
A cross-corpus set: every clip is one split (the caller names it), the speaker (OAF, YAF) is the group.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

from data_pipeline.sources.base import Utterance
from data_pipeline.sources.manifest import read_manifest
from emohd_jax.errors import SkipReport

DATASET = "tess"
TESS_LABELS: dict[str, str | None] = {
    "angry": "anger", "disgust": "disgust", "fear": "fear", "happy": "happiness", "neutral": "neutral",
    "sad": "sadness", "surprise": "surprise", "ps": "surprise",
}


def read_tess(root: str | os.PathLike, *, split: str) -> tuple[list[Utterance], SkipReport]:
    """Every TESS clip of `root` (the tess/ folder) as Utterances of `split`, each with its sentence ("Say the
    word base" from OAF_base_angry.flac); bad rows go to the SkipReport."""
    utterances, skips = read_manifest(root, dataset=DATASET, split=split, labels=TESS_LABELS)
    return [dataclasses.replace(u, text=f"Say the word {_word(u.audio)}") for u in utterances], skips


def _word(path: str) -> str:
    """The target word of `<SPEAKER>_<word>_<emotion>.flac` (a word may hold no underscore)."""
    return pathlib.Path(path).stem.split("_")[1]
