"""Best-checkpoint round trip and the model soup: float leaves averaged, counters kept, one run unchanged;
run dirs given as relative paths, etils paths or URIs."""

import pathlib

import jax
import numpy as np
import pytest
from etils import epath

from emohd_jax import checkpointing


def _save_run(workdir, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    weights = {"params": {"kernel": rng.normal(size=(3, 4)).astype(np.float32)},
               "other": {"mean": rng.normal(size=4).astype(np.float32), "count": np.array(seed + 5, np.int32)}}
    checkpointing.save_best(checkpointing.best_manager(workdir), 7, weights, {"accuracy": 50.0 + seed})
    return weights


def test_soup_averages_float_leaves_and_keeps_counters(tmp_path):
    a, b = _save_run(tmp_path / "a", 0), _save_run(tmp_path / "b", 1)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), a)
    alone = checkpointing.restore_soup([tmp_path / "a"], abstract)
    jax.tree.map(np.testing.assert_array_equal, alone, a)
    soup = checkpointing.restore_soup([str(tmp_path / "a"), str(tmp_path / "b")], abstract)
    np.testing.assert_allclose(soup["params"]["kernel"], (a["params"]["kernel"] + b["params"]["kernel"]) / 2, atol=1e-7)
    np.testing.assert_allclose(soup["other"]["mean"], (a["other"]["mean"] + b["other"]["mean"]) / 2, atol=1e-7)
    assert int(soup["other"]["count"]) == 5 and soup["other"]["count"].dtype == np.int32
    assert checkpointing.best_score(checkpointing.best_manager(tmp_path / "b"), "accuracy") == 51.0


def test_missing_checkpoint_names_the_directory(tmp_path):
    abstract = {"params": {"kernel": jax.ShapeDtypeStruct((3, 4), np.float32)}}
    with pytest.raises(FileNotFoundError, match="nowhere: no checkpoint found"):
        checkpointing.restore_soup([tmp_path / "nowhere"], abstract)


def test_run_dirs_made_absolute_without_mangling_uris(tmp_path, monkeypatch):
    # epath's own resolve() turns gs://bucket/run into <cwd>/gs:/bucket/run.
    assert str(checkpointing.absolute("gs://bucket/runs/x")) == "gs://bucket/runs/x"
    monkeypatch.chdir(tmp_path)
    weights = _save_run("relative/run", 2)  # a relative workdir, as configs give it
    run = epath.Path(str(tmp_path / "relative" / "run"))
    assert not isinstance(run, pathlib.Path)  # etils' own path class, the one gs:// paths get
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), weights)
    jax.tree.map(np.testing.assert_array_equal, checkpointing.restore_weights(run, abstract), weights)
