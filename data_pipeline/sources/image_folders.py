"""Class-folder image sets (FER2013, CIFE, or any `ROOT/<split>/<class>/*.jpg` set) → Utterances.

A set whose folder names differ from FER2013's is read with its own `label_map`
(folder name → canonical class, or None to drop that folder on purpose).
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Mapping

from data_pipeline.sources.base import Utterance, canonical_label
from emohd_jax.classes import EMOTIONS, FER2013_LABELS
from emohd_jax.errors import SkipReport, UnknownLabelError, UsageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def read_class_folders(root: str | os.PathLike, split: str, *,
                       label_map: Mapping[str, str | None] = FER2013_LABELS,
                       dataset: str = "fer2013", strict: bool = False) -> tuple[list[Utterance], SkipReport]:
    """Every image under `root/split/<class>/`, sorted; a folder the map lacks is skipped and reported.

    With `strict`, an unknown folder raises UnknownLabelError instead of being skipped; a missing `root` or
    split folder raises UsageError (a config error, not bad input).
    """
    root = pathlib.Path(root)
    if not root.is_dir():
        raise UsageError(root, "no such image folder", f"set --config.data.root to the folder holding {root.name}/")
    split_dir = root / split
    if not split_dir.is_dir():
        splits = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise UsageError(split_dir, "no such split folder",
                         f"expected {split_dir}/<class>/*.jpg; splits here: {', '.join(splits) or 'none'}")
    label_map = _lowercase_keys(label_map)
    utterances, skips = [], SkipReport()
    for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        images = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        try:
            label = canonical_label(class_dir.name, label_map, class_dir)
        except UnknownLabelError as e:
            if strict:
                raise
            skips.add(str(class_dir), UnknownLabelError(class_dir, f"{e.reason}; {len(images)} images skipped"))
            continue
        if label is None:
            continue
        utterances.extend(Utterance(uid=f"{dataset}/{split}/{class_dir.name}/{image.stem}", dataset=dataset,
                                    split=split, label=label, image=str(image)) for image in images)
    return utterances, skips


def parse_label_map(spec: str) -> dict[str, str | None]:
    """A label map from a JSON file path or "folder=class,folder=class,dropped=" (empty class: drop)."""
    if spec.endswith(".json"):
        mapping = json.loads(pathlib.Path(spec).read_text())
    else:
        pairs = [item.split("=", 1) for item in spec.split(",") if item.strip()]
        if any(len(pair) != 2 for pair in pairs):
            raise UsageError("config.data.label_map", f"{spec!r} is not a label map",
                             "folder=class pairs separated by commas, or a .json file")
        mapping = {folder.strip(): name.strip() or None for folder, name in pairs}
    return _lowercase_keys(mapping)


def _lowercase_keys(mapping: Mapping[str, str | None]) -> dict[str, str | None]:
    unknown = sorted(name for name in mapping.values() if name is not None and name not in EMOTIONS)
    if unknown:
        raise UsageError("config.data.label_map", f"targets {unknown} are not classes",
                         f"one of: {', '.join(EMOTIONS)}")
    return {folder.strip().lower(): name for folder, name in mapping.items()}
