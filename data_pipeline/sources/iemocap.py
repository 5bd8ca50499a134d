"""IEMOCAP (Busso et al., 2008) from the released session folders.

Labels: `Session{n}/dialog/EmoEvaluation/*.txt`; text: `dialog/transcriptions/*.txt`;
audio: `sentences/wav/{dialogue}/{utterance}.wav`; video: `dialog/avi/DivX/{dialogue}.avi` (+ span).
"""

from __future__ import annotations

import os
import pathlib
import re
from typing import Mapping, Sequence

from data_pipeline.sources.base import Utterance, canonical_label
from emohd_jax.errors import BadInputError, EmptyTranscriptError, MalformedTableError, SkipReport, UsageError
from emohd_jax.text.normalize import normalize_text

# frustration joins anger; "xxx" (no agreement) and "oth" are dropped (SPEC §1).
BASE_LABELS: dict[str, str | None] = {
    "neu": "neutral", "hap": "happiness", "ang": "anger", "sad": "sadness", "fea": "fear",
    "dis": "disgust", "sur": "surprise", "fru": "anger", "xxx": None, "oth": None,
}
DEFAULT_SESSIONS: Mapping[str, Sequence[int]] = {"train": (1, 2, 3, 4), "test": (5,)}

_LABEL_LINE = re.compile(r"^\[(?P<start>[\d.]+) - (?P<end>[\d.]+)\]\t(?P<uid>\S+)\t(?P<label>\S+)\t")
_TEXT_LINE = re.compile(r"^(?P<uid>Ses\S+) \[[\d.]+-[\d.]+\]: ?(?P<text>.*)$")


def label_mapping(excitement: str = "happiness") -> dict[str, str | None]:
    """`excitement`: 'happiness' (SPEC decision, common practice) or 'drop'."""
    if excitement not in ("happiness", "drop"):
        raise UsageError("config.data.excitement", f"{excitement!r} is not a choice", "happiness or drop")
    return {**BASE_LABELS, "exc": None if excitement == "drop" else "happiness"}


def read_iemocap(root: str | os.PathLike, split: str, *, sessions: Mapping[str, Sequence[int]] = DEFAULT_SESSIONS,
                 excitement: str = "happiness") -> tuple[list[Utterance], SkipReport]:
    """Utterances of the sessions assigned to `split`; unlabelled or dropped labels are left out.

    Raises UsageError for a split without sessions or a missing session folder (config errors, not bad input).
    """
    if split not in sessions:
        raise UsageError("config.data.split", f"IEMOCAP split {split!r} has no sessions",
                         f"one of: {', '.join(sessions)}")
    mapping = label_mapping(excitement)
    utterances, skips = [], SkipReport()
    for session in sessions[split]:
        dialog_dir = pathlib.Path(root) / "iemocap" / f"Session{session}" / "dialog"
        if not (dialog_dir / "EmoEvaluation").is_dir():
            raise UsageError(dialog_dir / "EmoEvaluation", f"no such IEMOCAP folder (session {session})",
                             "expected ROOT/iemocap/SessionN/dialog/EmoEvaluation/*.txt; set --config.data.root")
        label_files = sorted((dialog_dir / "EmoEvaluation").glob("*.txt"))
        if not label_files:
            raise MalformedTableError(dialog_dir / "EmoEvaluation", "no label files")
        for label_file in label_files:
            texts = _read_transcripts(dialog_dir / "transcriptions" / label_file.name)
            for line_no, line in enumerate(label_file.read_text(errors="replace").splitlines(), 1):
                match = _LABEL_LINE.match(line)
                if not match:
                    continue
                where = f"{label_file} line {line_no}"
                try:
                    label = canonical_label(match["label"], mapping, where)
                    if label is None:
                        continue
                    uid = match["uid"]
                    text = texts.get(uid, "")
                    if not text:
                        raise EmptyTranscriptError(where, f"no transcript for {uid}")
                    dialogue = label_file.stem
                    session_dir = dialog_dir.parent
                    utterances.append(Utterance(
                        uid=f"iemocap/{uid}", dataset="iemocap", split=split, label=label, text=text,
                        audio=str(session_dir / "sentences" / "wav" / dialogue / f"{uid}.wav"),
                        video=str(dialog_dir / "avi" / "DivX" / f"{dialogue}.avi"),
                        speaker=f"{uid[:5]}{uid.split('_')[-1][0]}", dialogue=dialogue,
                        turn=int(re.sub(r"\D", "", uid.split("_")[-1]) or 0),
                        start_s=float(match["start"]), end_s=float(match["end"]),
                    ))
                except BadInputError as error:
                    skips.add(where, error)
    return utterances, skips


def _read_transcripts(path: pathlib.Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text(errors="replace").splitlines():
        match = _TEXT_LINE.match(line.strip())
        if match:
            out[match["uid"]] = normalize_text(match["text"])
    return out
