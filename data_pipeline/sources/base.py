"""What every dataset adapter produces: a list of `Utterance`s in the canonical label space."""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping

from emohd_jax.classes import CLASS_INDEX
from emohd_jax.errors import UnknownLabelError

CLASS_FOLDER_SETS = ("fer2013", "cife")  # ROOT/<set>/<split>/<class>/*.jpg: still faces rather than media

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


def canonical_label(raw: str, mapping: Mapping[str, str | None], where: str | os.PathLike) -> int | None:
    """Map a dataset's label to a class index; None means the dataset's label is dropped on purpose.

    Raises UnknownLabelError (naming `where`, e.g. "file.csv row 12") for a label the mapping lacks.
    """
    key = raw.strip().lower()
    if key not in mapping:
        raise UnknownLabelError(where, f"unknown label {raw!r} (known: {', '.join(sorted(mapping))})")
    name = mapping[key]
    return None if name is None else CLASS_INDEX[name]
