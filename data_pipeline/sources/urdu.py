"""URDU-Dataset (Latif et al., 2018): 400 clips of Urdu TV talk-show speech, 29 speakers, 4 emotions.

`ROOT/urdu/manifest.csv` (path,label,speaker,gender) lists the clips. Only neutral, happiness, anger and
sadness occur, so a 7-class model is scored by its argmax over these 4 (`URDU_CLASSES`). Most speakers
speak in one emotion only: per-speaker normalisation would remove the label, so the corpus is the group.
"""

from __future__ import annotations

import os

from data_pipeline.sources.base import Utterance
from data_pipeline.sources.manifest import read_manifest
from emohd_jax.errors import SkipReport

DATASET = "urdu"
URDU_LABELS: dict[str, str | None] = {"angry": "anger", "happy": "happiness", "neutral": "neutral", "sad": "sadness"}
URDU_CLASSES = ("neutral", "happiness", "anger", "sadness")


def read_urdu(root: str | os.PathLike, *, split: str) -> tuple[list[Utterance], SkipReport]:
    """Every URDU clip of `root` (the urdu/ folder) as Utterances of `split`; bad rows go to the SkipReport."""
    return read_manifest(root, dataset=DATASET, split=split, labels=URDU_LABELS)
