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
