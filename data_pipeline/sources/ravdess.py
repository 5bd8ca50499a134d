"""RAVDESS (Livingstone & Russo, 2018): `ROOT/Actor_XX/MM-VV-EE-II-SS-RR-AA.{wav,flac,mp4}` → Utterances.

Everything is in the file name: modality (01 audio-video, 02 video only, 03 audio only), vocal
channel, emotion, intensity, statement, repetition, actor. Splits are by actor (never by file): the
caller names the actors of each split, so a held-out set laid out the same way (Actor_21 … 24) is
read with no code change.
"""

from __future__ import annotations

import os
import pathlib
from typing import Iterable, Literal

from data_pipeline.sources.base import Utterance, canonical_label
from emohd_jax.errors import BadFileNameError, SkipReport, UnknownLabelError, UsageError

DATASET = "ravdess"
# Emotion field → canonical class; calm (02) is dropped unless merged into neutral (`calm="neutral"`).
RAVDESS_LABELS: dict[str, str | None] = {
    "01": "neutral", "02": None, "03": "happiness", "04": "sadness",
    "05": "anger", "06": "fear", "07": "disgust", "08": "surprise",
}
STATEMENTS: dict[str, str] = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
MEDIA_SUFFIXES = (".wav", ".flac", ".mp4")
_AUDIO_ONLY, _VIDEO_ONLY = "03", "02"


def read_ravdess(root: str | os.PathLike, *, actors: Iterable[int], split: str,
                 calm: Literal["drop", "neutral"] = "drop") -> tuple[list[Utterance], SkipReport]:
    """Every media file of the given actors, sorted; badly named files go to the SkipReport.

    Raises UsageError when an actor's folder is missing (a config error, not bad input).
    """
    if calm not in ("drop", "neutral"):
        raise UsageError("config.data.calm", f"{calm!r} is not a choice", "drop, or neutral to merge calm into it")
    labels = {**RAVDESS_LABELS, "02": "neutral" if calm == "neutral" else None}
    utterances, skips = [], SkipReport()
    for actor in sorted(set(actors)):
        folder = pathlib.Path(root) / f"Actor_{actor:02d}"
        if not folder.is_dir():
            raise UsageError(folder, "no such RAVDESS actor folder",
                             "expected ROOT/ravdess/Actor_XX/*.flac; set --config.data.root or the split's actors")
        for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in MEDIA_SUFFIXES):
            try:
                utterance = _utterance(path, actor, split, labels)
            except (UnknownLabelError, BadFileNameError) as err:
                skips.add(str(path), err)
                continue
            if utterance is not None:
                utterances.append(utterance)
    return utterances, skips


def _utterance(path: pathlib.Path, actor: int, split: str, labels: dict[str, str | None]) -> Utterance | None:
    """The Utterance a file name describes; None for a label dropped on purpose (calm)."""
    fields = path.stem.split("-")
    if len(fields) != 7 or not all(len(f) == 2 and f.isascii() and f.isdigit() for f in fields):
        raise BadFileNameError(path, "file name does not follow RAVDESS MM-VV-EE-II-SS-RR-AA (ASCII digits)")
    modality, _, emotion, _, statement, _, file_actor = fields
    if int(file_actor) != actor:
        raise UnknownLabelError(path, f"actor field {file_actor} does not match folder Actor_{actor:02d}")
    if statement not in STATEMENTS:
        raise UnknownLabelError(path, f"unknown statement code {statement!r} (known: 01, 02)")
    label = canonical_label(emotion, labels, path)
    if label is None:
        return None
    media = str(path)
    return Utterance(uid=f"{DATASET}/{path.stem}", dataset=DATASET, split=split, label=label,
                     text=STATEMENTS[statement],
                     audio=None if modality == _VIDEO_ONLY else media,
                     video=None if modality == _AUDIO_ONLY else media,
                     speaker=f"Actor_{actor:02d}")
