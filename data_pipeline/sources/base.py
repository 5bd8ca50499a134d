"""What every dataset adapter produces: a list of `Utterance`s in the canonical label space."""

from __future__ import annotations

import os
from typing import Mapping

from emohd_jax.classes import CLASS_INDEX
from emohd_jax.errors import UnknownLabelError
from emohd_jax.extract import Utterance  # noqa: F401  (what every adapter produces)

CLASS_FOLDER_SETS = ("fer2013", "cife")  # ROOT/<set>/<split>/<class>/*.jpg: still faces rather than media


def canonical_label(raw: str, mapping: Mapping[str, str | None], where: str | os.PathLike) -> int | None:
    """Map a dataset's label to a class index; None means the dataset's label is dropped on purpose.

    Raises UnknownLabelError (naming `where`, e.g. "file.csv row 12") for a label the mapping lacks.
    """
    key = raw.strip().lower()
    if key not in mapping:
        raise UnknownLabelError(where, f"unknown label {raw!r} (known: {', '.join(sorted(mapping))})")
    name = mapping[key]
    return None if name is None else CLASS_INDEX[name]
