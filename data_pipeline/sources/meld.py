"""MELD (Poria et al., 2019): the `{split}_sent_emo.csv` label files and the MELD.Raw clip layout."""

from __future__ import annotations

import csv
import io
import os
import pathlib

from data_pipeline.sources.base import Utterance, canonical_label
from emohd_jax.errors import BadInputError, EmptyTranscriptError, MalformedTableError, SkipReport, UsageError
from emohd_jax.text.normalize import normalize_text

LABELS: dict[str, str | None] = {
    "neutral": "neutral", "joy": "happiness", "surprise": "surprise", "anger": "anger",
    "sadness": "sadness", "disgust": "disgust", "fear": "fear",
}
REQUIRED_COLUMNS = ("Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID")
# Folder names of the official MELD.Raw release, per split.
RAW_CLIP_DIRS = {"train": "train_splits", "dev": "dev_splits_complete", "test": "output_repeated_splits_test"}


def csv_path(root: str | os.PathLike, split: str) -> pathlib.Path:
    return pathlib.Path(root) / "meld" / f"{split}_sent_emo.csv"


def clip_path(root: str | os.PathLike, split: str, dialogue: int | str, utterance: int | str) -> pathlib.Path:
    """Where MELD.Raw keeps the clip of one utterance."""
    return pathlib.Path(root) / "meld" / "MELD.Raw" / RAW_CLIP_DIRS[split] / f"dia{dialogue}_utt{utterance}.mp4"


def read_meld(root: str | os.PathLike, split: str) -> tuple[list[Utterance], SkipReport]:
    """Utterances of one split, in file order; bad rows go to the skip report, the rest is kept.

    Raises UsageError when the split's file is missing, MalformedTableError when it lacks a required column.
    """
    path = csv_path(root, split)
    if not path.is_file():
        raise UsageError(path, f"no MELD label file for split {split!r}",
                         "expected ROOT/meld/{train,dev,test}_sent_emo.csv; set --config.data.root or the split")
    # utf-8-sig drops a byte-order mark (Excel writes one before "Utterance"); surrogateescape keeps
    # undecodable bytes visible per row instead of failing the whole file.
    text = path.read_bytes().decode("utf-8-sig", errors="surrogateescape")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise MalformedTableError(path, f"missing column(s) {', '.join(missing)}; found {reader.fieldnames}")
    utterances, skips = [], SkipReport()
    for row in reader:
        where = f"{path} row {reader.line_num}"
        try:
            utterances.append(_row_to_utterance(row, root, split, where))
        except BadInputError as error:
            skips.add(where, error)
    return utterances, skips


def _row_to_utterance(row: dict, root, split: str, where: str) -> Utterance:
    if any("\udc80" <= ch <= "\udcff" for value in row.values() if value for ch in value):
        raise MalformedTableError(where, "undecodable bytes (not UTF-8)")
    label = canonical_label(row["Emotion"], LABELS, where)
    text = normalize_text(row["Utterance"])
    if not text:
        raise EmptyTranscriptError(where, "empty utterance")
    dialogue, turn = row["Dialogue_ID"].strip(), row["Utterance_ID"].strip()
    return Utterance(
        uid=f"meld/{split}/dia{dialogue}_utt{turn}", dataset="meld", split=split, label=label, text=text,
        video=str(clip_path(root, split, dialogue, turn)), speaker=normalize_text(row["Speaker"]),
        dialogue=f"{split}/{dialogue}", turn=int(turn),
    )
