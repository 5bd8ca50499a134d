"""CREMA-D (Cao et al., 2014): `Actor_Sentence_Emotion_Level.{wav,mp3,flv,mp4}` anywhere under ROOT → Utterances.

The release keeps audio (AudioWAV/, AudioMP3/) and video (VideoFlash/) of one clip in separate
folders under the same file stem; files sharing a stem become one Utterance. A clip with video only
takes its audio from the video's audio track (`audio` = the video path). Six emotions, no surprise.
"""

from __future__ import annotations

import os
import pathlib
from typing import Iterable

from data_pipeline.sources.base import Utterance, canonical_label
from emohd_jax.errors import BadFileNameError, SkipReport, UnknownLabelError, UsageError

DATASET = "cremad"
CREMAD_LABELS: dict[str, str | None] = {
    "ang": "anger", "dis": "disgust", "fea": "fear", "hap": "happiness", "neu": "neutral", "sad": "sadness",
}
SENTENCES: dict[str, str] = {
    "IEO": "It's eleven o'clock",
    "TIE": "That is exactly what happened",
    "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about",
    "TAI": "The airplane is almost full",
    "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock",
    "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket",
    "ITS": "I think I've seen this before",
    "TSI": "The surface is slick",
    "WSI": "We'll stop in a couple of minutes",
}
LEVELS = ("LO", "MD", "HI", "XX")
AUDIO_SUFFIXES = (".wav", ".mp3")
VIDEO_SUFFIXES = (".flv", ".mp4")


def read_cremad(root: str | os.PathLike, *, split: str,
                actors: Iterable[int] | None = None) -> tuple[list[Utterance], SkipReport]:
    """Every clip under `root` (recursively) of the given actors (all when None), sorted by stem."""
    root = pathlib.Path(root)
    if not root.is_dir():
        raise UsageError(root, "no such CREMA-D folder", "set --config.data.root to the folder holding cremad/")
    wanted = None if actors is None else set(actors)
    by_stem: dict[str, dict[str, pathlib.Path]] = {}
    for path in sorted(root.rglob("*")):
        suffix = path.suffix.lower()
        if path.is_file() and suffix in AUDIO_SUFFIXES + VIDEO_SUFFIXES:
            kind = "audio" if suffix in AUDIO_SUFFIXES else "video"
            by_stem.setdefault(path.stem, {}).setdefault(kind, path)
    utterances, skips = [], SkipReport()
    for stem, media in sorted(by_stem.items()):
        where = media.get("audio") or media["video"]
        try:
            actor, sentence, label = _parse_name(stem, where)
        except (UnknownLabelError, BadFileNameError) as err:
            skips.add(str(where), err)
            continue
        if wanted is not None and actor not in wanted:
            continue
        video = media.get("video")
        audio = media.get("audio") or video
        utterances.append(Utterance(uid=f"{DATASET}/{stem}", dataset=DATASET, split=split, label=label,
                                    text=SENTENCES[sentence], audio=str(audio),
                                    video=None if video is None else str(video), speaker=str(actor)))
    return utterances, skips


def _parse_name(stem: str, where: pathlib.Path) -> tuple[int, str, int]:
    """(actor, sentence code, class index) from `1001_DFA_ANG_XX`."""
    fields = stem.split("_")
    if len(fields) != 4 or not (fields[0].isascii() and fields[0].isdigit()):
        raise BadFileNameError(where, "file name does not follow CREMA-D Actor_Sentence_Emotion_Level")
    actor, sentence, emotion, level = fields
    if sentence not in SENTENCES:
        raise UnknownLabelError(where, f"unknown sentence code {sentence!r}")
    if level not in LEVELS:
        raise UnknownLabelError(where, f"unknown intensity level {level!r} (known: {', '.join(LEVELS)})")
    return int(actor), sentence, canonical_label(emotion, CREMAD_LABELS, where)
