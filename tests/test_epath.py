"""Remote paths: reports, a run's saved evaluation and prepare's cache written to `gs://…` through etils.epath.

GCS itself is out of reach here, so `gs://` is served by fsspec's in-memory file system, plugged in where epath
picks the backend of a `gs://` path: code that wrote through pathlib or `open()` would create a local `gs:/…`
folder instead (checked: the working folder stays empty).
"""

import dataclasses
import json
from unittest import mock

import ml_collections
import numpy as np
import pytest
from etils import epath
from etils.epath import backend, gpath
from fsspec.implementations.memory import MemoryFileSystem

from data_pipeline.record_cache import cache_path, extract_one, load_labels
from data_pipeline.sources.ravdess import read_ravdess
from emohd_jax import bundle, measurement, metrics
from emohd_jax.audio.extract import AudioExtractor
from emohd_jax.classes import EMOTIONS
from emohd_jax.errors import CorruptMediaError
from emohd_jax.reports import write_report, write_run_eval


class _InMemoryGCS(backend._FileSystemSpecBackend):
    """epath's fsspec backend over one in-memory file system, standing in for gcsfs."""

    def fs(self, path):
        return MemoryFileSystem()

    def glob(self, path):
        return list(self.fs(path).glob(path))  # memory paths keep their gs:// prefix


@pytest.fixture
def gcs(tmp_path, monkeypatch):
    """`gs://` in memory; the test runs in an empty folder, which it must leave empty."""
    MemoryFileSystem.store.clear()
    monkeypatch.chdir(tmp_path)
    with mock.patch.dict(gpath._PREFIX_TO_BACKEND, {"gs": _InMemoryGCS()}), \
            mock.patch.object(gpath, "_is_tf_installed", lambda: False):
        yield MemoryFileSystem.store
    assert list(tmp_path.iterdir()) == []
    MemoryFileSystem.store.clear()


def test_report_and_run_eval_written_to_gs_and_read_back_by_export(gcs):
    labels = np.array([0, 1, 2, 3, 4, 5, 6, 3, 3, 1])
    predicted = np.array([0, 1, 2, 3, 4, 5, 0, 3, 1, 1])
    result = metrics.classification_metrics(labels, predicted)
    path = write_report("gs://bucket/reports/toy", result, dataset="toy", split="dev", extra={"task": "audio"})
    assert str(path) == "gs://bucket/reports/toy/metrics.json"
    assert set(gcs) == {f"gs://bucket/reports/toy/{n}" for n in ("metrics.json", "metrics.md", "confusion.png")}
    assert json.loads(path.read_text())["accuracy"] == pytest.approx(80.0)
    assert epath.Path("gs://bucket/reports/toy/confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| anger |" in epath.Path("gs://bucket/reports/toy/metrics.md").read_text()

    predictions = {"uids": ["a", "b"], "probs": [[1.0] + [0.0] * (len(EMOTIONS) - 1)] * 2}
    written = write_run_eval("gs://bucket/runs/toy", result, predictions, dataset="toy", split="dev")
    assert str(written) == "gs://bucket/runs/toy/eval_dev.json"
    # What `emohd export` reads back from the run to fit the fusion.
    config = ml_collections.ConfigDict({"workdir": "gs://bucket/runs/toy", "report_dir": "gs://bucket/reports/toy",
                                        "data": {"eval_split": "dev"}})
    saved = bundle._run_eval(config)
    assert saved["predictions"] == predictions and saved["metrics"]["confusion"] == result["confusion"]


def test_prepare_cache_on_gs_round_trips_records_and_skips(gcs, data_root):
    utterances, _ = read_ravdess(data_root / "ravdess", actors=[1], split="train")
    utterance, extractor = utterances[0], AudioExtractor(trim_db=40.0)
    cache = epath.Path("gs://bucket/shards/cache/train")
    records, skip = extract_one(utterance, extractor, cache)
    assert skip is None and len(records) >= 2
    assert list(gcs) == [str(cache_path(cache, utterance.uid))]  # the atomic write's temporary file is gone

    class Unused:
        def records(self, utterance):
            raise AssertionError("extracted again instead of read from the cache")

    cached, _ = extract_one(utterance, Unused(), cache)
    for got, expected in zip(cached, records, strict=True):
        np.testing.assert_array_equal(got["patches"], expected["patches"])
        assert got["uid"] == utterance.uid and got["label"] == utterance.label
    assert load_labels(cache_path(cache, utterance.uid)) == ([utterance.label] * len(records), None)

    missing = dataclasses.replace(utterance, uid="missing", audio=str(data_root / "ravdess" / "no_such.flac"))
    assert extract_one(missing, extractor, cache)[0] == []
    labels, skip = load_labels(cache_path(cache, "missing"))
    assert labels == [] and skip["kind"] == CorruptMediaError.kind and "no_such.flac" in skip["reason"]


def test_benchmark_report_written_to_gs(gcs):
    path = measurement.save("toy", {"seconds": 1.5}, "gs://bucket/reports/bench")
    assert list(gcs) == ["gs://bucket/reports/bench/toy.json"]
    saved = json.loads(path.read_text())
    assert saved["seconds"] == 1.5 and saved["benchmark"] == "toy" and "jax" in saved["machine"]["versions"]
