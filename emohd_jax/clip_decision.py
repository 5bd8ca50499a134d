"""From per-record probabilities (frames, 0.96 s patches) to one decision per clip (SPEC §2.5, §3.4)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

RULES = ("mean", "vote")


def clip_probabilities(probs: np.ndarray, rule: str = "mean") -> tuple[int, np.ndarray]:
    """probs: [records, classes] of one clip → (decided class, clip probability vector [classes]).

    `mean`: argmax of the mean probability. `vote`: majority of the records' argmax, ties broken
    by the mean probability. The probability vector handed to fusion is the mean either way.
    """
    if rule not in RULES:
        raise ValueError(f"clip rule must be one of {RULES}, not {rule!r}")
    mean = probs.mean(axis=0)
    if rule == "mean":
        return int(mean.argmax()), mean
    votes = np.bincount(probs.argmax(axis=1), minlength=probs.shape[1])
    tied = votes == votes.max()
    return int(np.where(tied, mean, -np.inf).argmax()), mean


def group_by_clip(uids: Sequence[str], labels: np.ndarray, probs: np.ndarray, rule: str = "mean"):
    """Records → clips, in first-seen order: (clip uids, labels [clips], decisions [clips], probs [clips, classes])."""
    order: dict[str, list[int]] = {}
    for i, uid in enumerate(uids):
        order.setdefault(uid, []).append(i)
    clip_uids = list(order)
    decisions, clip_probs = zip(*(clip_probabilities(probs[idx], rule) for idx in order.values()))
    clip_labels = np.asarray([labels[idx[0]] for idx in order.values()])
    return clip_uids, clip_labels, np.asarray(decisions), np.stack(clip_probs)
