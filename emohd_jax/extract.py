"""The contract between a dataset and a tower: an `Utterance` in, records out, their fields declared as plain specs.

An extractor (one per modality: `emohd_jax.audio.extract`, `emohd_jax.vision.extract`, `emohd_jax.text.extract`)
turns one `Utterance` into one or more records (one per utterance for text, one per 0.96 s patch for audio,
one per face crop for video) and declares their `fields`. Offline `prepare` (data_pipeline) and online
`predict` (emohd_jax.serve) call the same extractor, so preprocessing exists once. Fields are plain
(shape, dtype) specs: `data_pipeline.shards` turns them into a shard schema, and nothing on the predict
path needs a dataset library. Bad input raises a `BadInputError`; the caller records it and goes on.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Protocol

import numpy as np

Record = dict[str, np.ndarray | str | int]


@dataclasses.dataclass(frozen=True)
class Utterance:
    """One labelled item of a dataset; media fields hold paths, absent ones are None."""

    uid: str                      # unique within the dataset, stable across runs (used as record key)
    dataset: str
    split: str
    label: int | None             # index into emohd_jax.classes.EMOTIONS; None when unlabelled
    text: str | None = None       # the dataset's own transcript / subtitle
    video: str | None = None
    audio: str | None = None
    image: str | None = None
    speaker: str | None = None
    dialogue: str | None = None   # conversation id, for dialogue context
    turn: int | None = None       # position in the dialogue
    start_s: float | None = None  # span inside a longer recording (IEMOCAP dialogues)
    end_s: float | None = None


@dataclasses.dataclass(frozen=True)
class Field:
    """One stored record field: `shape` (() a scalar, None a length that varies) and `dtype` (a NumPy dtype
    name, 'text' for a string, 'class' for an index into EMOTIONS)."""

    shape: tuple[int | None, ...]
    dtype: str


TEXT, CLASS = "text", "class"
# Every record names its utterance and carries its label.
BASE_FIELDS: Mapping[str, Field] = {"uid": Field((), TEXT), "label": Field((), CLASS)}


class Extractor(Protocol):
    name: str
    fields: Mapping[str, Field]  # BASE_FIELDS and the extractor's own

    def options(self) -> dict: ...

    def records(self, utterance: Utterance) -> list[Record]: ...
