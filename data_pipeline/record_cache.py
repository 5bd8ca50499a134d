"""The per-utterance extraction cache that both prepare runners fill (this process or Beam workers): each
utterance's records (or its skip) in one atomically written npz, keyed by its uid, and the shard key of each
record, so either runner writes the same records in the same order."""

from __future__ import annotations

import hashlib
import json

import numpy as np
from etils import epath

from emohd_jax.errors import BadInputError
from emohd_jax.extract import Extractor, Record, Utterance


def cache_path(cache_dir: epath.Path, uid: str) -> epath.Path:
    digest = hashlib.sha1(uid.encode()).hexdigest()[:16]
    return cache_dir / digest[:2] / f"{digest}.npz"


def save_records(path: epath.Path, records: list[Record] | None, skip: dict | None) -> None:
    """Atomic write (tmp + rename) so a kill never leaves a half-written entry behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"n": np.asarray(len(records or []))}
    for i, record in enumerate(records or []):
        for key, value in record.items():
            arrays[f"{i}/{key}"] = np.asarray(value)
    if skip is not None:
        arrays["skip"] = np.asarray(json.dumps(skip))
    tmp = path.with_suffix(".tmp.npz")
    with tmp.open("wb") as f:
        np.savez(f, **arrays)
    tmp.replace(path)


def load_records(path: epath.Path) -> tuple[list[Record], dict | None]:
    with path.open("rb") as f, np.load(f, allow_pickle=False) as data:
        n = int(data["n"])
        records = [{} for _ in range(n)]
        for name in data.files:
            if "/" in name:
                i, key = name.split("/", 1)
                value = data[name]
                records[int(i)][key] = value.item() if value.ndim == 0 else value
        skip = json.loads(str(data["skip"])) if "skip" in data.files else None
    return records, skip


def load_labels(path: epath.Path) -> tuple[list[int], dict | None]:
    """The labels of a cache entry's records (or its skip), reading none of their features (npz members load lazily)."""
    with path.open("rb") as f, np.load(f, allow_pickle=False) as data:
        labels = [int(data[f"{i}/label"]) for i in range(int(data["n"]))]
        return labels, json.loads(str(data["skip"])) if "skip" in data.files else None


def record_key(uid: str, index: int) -> str:
    """The shard key of an utterance's `index`-th record; tfds shuffles by it, so either runner writes one order."""
    return f"{uid}#{index}"


def extract_one(utterance: Utterance, extractor: Extractor, cache_dir: epath.Path) -> tuple[list[Record], dict | None]:
    """One utterance's records and skip: from the cache, else extracted and cached (bad input is cached as a skip)."""
    path = cache_path(cache_dir, utterance.uid)
    if path.exists():
        return load_records(path)
    try:
        records, skip = extractor.records(utterance), None
    except BadInputError as error:
        records, skip = [], {"kind": error.kind, "reason": str(error)}
    save_records(path, records, skip)
    return records, skip
