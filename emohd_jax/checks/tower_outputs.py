"""One tower's clip-level outputs on a labelled set (`TowerOutputs`, an .npz without pickle), and how a bundle
tower produces them (`score_utterances`): what the fusion checks fit on and the cross-corpus tables score."""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Sequence

import numpy as np

from emohd_jax.classes import NUM_CLASSES
from emohd_jax.errors import BadInputError, MalformedTableError, SkipReport, UsageError


@dataclasses.dataclass(frozen=True)
class TowerOutputs:
    """One tower's clip-level outputs on one labelled set; `transcripts` only for words from ASR."""

    probs: np.ndarray        # [n, class] float32
    labels: np.ndarray       # [n] int32, index into EMOTIONS
    groups: np.ndarray       # [n] str: speaker / dialogue (FER2013: the image itself)
    uids: np.ndarray         # [n] str
    transcripts: np.ndarray | None = None  # [n] str

    def __post_init__(self):
        n = len(self.labels)
        if self.probs.shape != (n, NUM_CLASSES) or len(self.groups) != n or len(self.uids) != n:
            raise ValueError(f"tower outputs disagree in length: probs {self.probs.shape}, labels {n}, "
                             f"groups {len(self.groups)}, uids {len(self.uids)}")

    def save(self, path: str | pathlib.Path) -> None:
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"probs": self.probs.astype(np.float32), "labels": self.labels.astype(np.int32),
                  "groups": self.groups.astype(str), "uids": self.uids.astype(str)}
        if self.transcripts is not None:
            arrays["transcripts"] = self.transcripts.astype(str)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | pathlib.Path) -> "TowerOutputs":
        """Reads the format above (no pickle); MalformedTableError naming the file and what is wrong."""
        path = pathlib.Path(path)
        if not path.is_file():
            raise UsageError(path, "no such tower-output file",
                             "write it with `python -m emohd_jax.checks.fusion inputs --config fusion_checks`, "
                             "or point the config's inputs.* at yours")
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("probs", "labels", "groups", "uids") if k not in data.files]
            if missing:
                raise MalformedTableError(path, f"missing arrays {missing} (has {data.files})")
            probs = np.asarray(data["probs"], np.float32)
            if probs.ndim != 2 or probs.shape[1] != NUM_CLASSES:
                raise MalformedTableError(path, f"probs has shape {probs.shape}, expected [n, {NUM_CLASSES}]")
            if not np.all(np.isfinite(probs)) or np.any(probs < 0) or not np.allclose(probs.sum(1), 1, atol=1e-3):
                raise MalformedTableError(path, "probs rows must be finite, non-negative and sum to 1")
            labels = np.asarray(data["labels"])
            if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
                raise MalformedTableError(path, f"labels outside 0..{NUM_CLASSES - 1}")
            try:
                return cls(probs, labels.astype(np.int32), data["groups"].astype(str), data["uids"].astype(str),
                           data["transcripts"].astype(str) if "transcripts" in data.files else None)
            except ValueError as error:
                raise MalformedTableError(path, str(error)) from error


def score_utterances(tower, utterances: Sequence, *, extractor=None, batch_size: int = 64,
                     skips: SkipReport | None = None) -> TowerOutputs:
    """A bundle tower (`LoadedTower`) over utterances, through its own extractor (the records `prepare`
    writes) and clip rule (the decision `emohd eval` makes) → clip-level TowerOutputs."""
    from emohd_jax.clip_decision import group_by_clip
    from emohd_jax.input_pipeline import collate

    # Still face images (a class-folder set) or media: the same choice `emohd prepare` makes from the dataset.
    extractor = extractor or tower.task.extractor(stills=bool(utterances) and utterances[0].image is not None)
    records, groups = [], {}
    for utterance in utterances:
        try:
            records += extractor.records(utterance)
        except BadInputError as error:
            if skips is None:
                raise
            skips.add(utterance.uid, error)
            continue
        groups[utterance.uid] = utterance.dialogue or utterance.speaker or utterance.uid
    probs = []
    for start in range(0, len(records), batch_size):
        batch = collate(records[start:start + batch_size], padded=tower.task.padded)
        probs.append(np.asarray(tower.probs({k: batch[k] for k in tower.task.model_fields})))
    uids = [str(r["uid"]) for r in records]
    clip_uids, labels, _, clip_probs = group_by_clip(uids, np.asarray([int(r["label"]) for r in records]),
                                                     np.concatenate(probs), tower.config.eval.clip_rule)
    return TowerOutputs(clip_probs.astype(np.float32), labels.astype(np.int32),
                        np.asarray([groups[u] for u in clip_uids]), np.asarray(clip_uids))
