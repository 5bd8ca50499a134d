"""Shared fixtures: the real data under ../shared/data, and the repository root."""

import os
import pathlib

import pytest

from tests.data_paths import DATA, REPO

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def repo_root() -> pathlib.Path:
    return REPO


@pytest.fixture(scope="session")
def data_root() -> pathlib.Path:
    if not DATA.is_dir():
        pytest.skip(f"real data not found at {DATA} (see ../shared/data/README.md)")
    return DATA


# The test files that take longest on 2 cores (pytest --durations), run first: `make test` runs `-n 2 --dist
# loadfile`, each file on one worker, so a long file collected last would run alone at the end of the suite.
LONGEST_FIRST = ("test_cli.py", "test_sweep.py", "test_train.py", "test_predict.py", "test_sharding.py",
                 "test_bench_fused.py", "test_visual_tower.py")


def pytest_collection_modifyitems(items: list) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the others keep their order
