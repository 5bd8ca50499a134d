"""Speech corpora described by a `manifest.csv` (path,label,speaker[,…]) beside their audio: TESS and URDU.

One row = one clip. The label column is the corpus's own emotion name, mapped by the adapter's table;
a row whose label is unknown or whose file is missing goes to the SkipReport, never into a split.
"""

from __future__ import annotations

import csv
import os
import pathlib
from typing import Mapping

from data_pipeline.sources.base import Utterance, canonical_label
from emohd_jax.errors import BadInputError, CorruptMediaError, MalformedTableError, SkipReport, UsageError

MANIFEST = "manifest.csv"
REQUIRED = ("path", "label", "speaker")


def read_manifest(folder: str | os.PathLike, *, dataset: str, split: str, labels: Mapping[str, str | None],
                  text: str | None = None) -> tuple[list[Utterance], SkipReport]:
    """Every row of `folder/manifest.csv` as an Utterance (uid `dataset/<path without suffix>`), sorted by path.

    Raises UsageError when the folder or its manifest is missing, MalformedTableError when a column is.
    """
    folder = pathlib.Path(folder)
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise UsageError(manifest, f"no {dataset} manifest", f"expected ROOT/{dataset}/{MANIFEST}; set --config.data.root")
    with open(manifest, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
        columns = rows[0].keys() if rows else ()
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise MalformedTableError(manifest, f"missing column(s) {', '.join(missing)}; found {list(columns)}")
    utterances, skips = [], SkipReport()
    for row_number, row in sorted(enumerate(rows, start=2), key=lambda item: item[1]["path"]):
        media = folder / row["path"]
        try:
            label = canonical_label(row["label"], labels, f"{manifest} row {row_number}")
            if not media.is_file():
                raise CorruptMediaError(media, f"listed in {manifest} row {row_number} but missing")
        except BadInputError as err:
            skips.add(str(media), err)
            continue
        if label is None:
            continue
        uid = f"{dataset}/{pathlib.PurePosixPath(row['path']).with_suffix('')}"
        utterances.append(Utterance(uid=uid, dataset=dataset, split=split, label=label, text=text, audio=str(media),
                                    speaker=row["speaker"].strip() or None))
    return utterances, skips
