"""Bad-input errors (one type per kind, naming the file and the reason) and the skip report.

Extraction code raises; the batch driver catches `BadInputError`, records it in a `SkipReport`
and goes on with the next item.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
from typing import Iterable


class BadInputError(ValueError):
    """Base of every bad-input error: `path` names the file, `reason` says what is wrong."""

    kind = "bad_input"

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class CorruptMediaError(BadInputError):
    kind = "corrupt_media"


class NoAudioTrackError(BadInputError):
    kind = "no_audio_track"


class NoVideoStreamError(BadInputError):
    kind = "no_video_stream"


class SilenceError(BadInputError):
    kind = "silence"


class SampleRateError(BadInputError):
    kind = "wrong_sample_rate"


class NoFaceError(BadInputError):
    kind = "no_face"


class EmptyTranscriptError(BadInputError):
    kind = "empty_transcript"


class UnknownLabelError(BadInputError):
    kind = "unknown_label"


class ImageTooSmallError(BadInputError):
    """An image whose header gives a side too short to hold a recognisable face."""

    kind = "image_too_small"


class ImageTooLargeError(BadInputError):
    """An image whose header gives more pixels than is safe to decode (refused before decoding)."""

    kind = "image_too_large"


class BadFileNameError(BadInputError):
    """A file whose name should carry its label (RAVDESS, CREMA-D) but does not follow the dataset's pattern."""

    kind = "bad_file_name"


class CheckpointLayoutError(BadInputError):
    """A weights file whose tensors do not match the model (missing, unknown or mis-shaped names)."""

    kind = "checkpoint_layout"


class CorruptBundleError(CheckpointLayoutError):
    """A model bundle file that is not what `emohd export` wrote: unparsable, or its size or sha256 differs from
    the manifest's (a truncated copy or download, an edit)."""

    kind = "corrupt_bundle"


class MalformedTableError(BadInputError):
    """A label/transcript table that cannot be read at all (missing column, undecodable file)."""

    kind = "malformed_table"


class UsageError(Exception):
    """A mistake in how a command was called (a missing config, an unknown flag, a bad override, a split the
    dataset lacks): the CLI prints `emohd: error: <where>: <problem> (<fix>)` and exits with `EXIT_USAGE`."""

    def __init__(self, where: str | os.PathLike, problem: str, fix: str = ""):
        self.where, self.problem, self.fix = str(where), problem, fix
        super().__init__(f"{self.where}: {problem}" + (f" ({fix})" if fix else ""))


EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_PARTIAL, EXIT_NONE = 0, 1, 2, 3, 4


class CommandLineParser(argparse.ArgumentParser):
    """argparse whose mistakes raise UsageError, so every command reports them in the CLI's one-line style."""

    def error(self, message: str):
        raise UsageError(self.prog, message, f"`{self.prog} --help` lists the flags")


@dataclasses.dataclass(frozen=True)
class Skip:
    item: str  # utterance id, or the file when no id exists yet
    kind: str
    reason: str
    split: str = ""  # the split(s) that met it, "train,dev" when several read the same file


class SkipReport:
    """What a batch dropped and why; written next to the shards as part of the manifest."""

    def __init__(self, skips: Iterable[Skip] = ()):
        self.skips: list[Skip] = list(skips)

    def add(self, item: str, error: BadInputError) -> None:
        self.skips.append(Skip(item=item, kind=error.kind, reason=str(error)))

    def extend(self, other: "SkipReport") -> None:
        self.skips.extend(other.skips)

    def one_per_item(self) -> "SkipReport":
        """Each (item, kind, reason) once, naming every split that met it: two splits reading one folder
        would otherwise list every bad file twice."""
        splits: dict[tuple[str, str, str], list[str]] = {}
        for skip in self.skips:
            met = splits.setdefault((skip.item, skip.kind, skip.reason), [])
            if skip.split and skip.split not in met:
                met.append(skip.split)
        return SkipReport(Skip(item, kind, reason, ",".join(met)) for (item, kind, reason), met in splits.items())

    def __len__(self) -> int:
        return len(self.skips)

    def counts(self) -> dict[str, int]:
        return dict(collections.Counter(s.kind for s in self.skips))

    def to_json(self) -> dict:
        return {"n_skipped": len(self.skips), "by_kind": self.counts(),
                "skipped": [dataclasses.asdict(s) for s in self.skips]}

    def write(self, path: str | os.PathLike) -> None:
        with open(path, "w") as f:
            json.dump(self.to_json(), f, indent=1)
