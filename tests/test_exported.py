"""Traced programs kept between runs (`emohd_jax.exported`): saved once, loaded without tracing, same numbers."""

import numpy as np
import pytest

from data_pipeline.sources.meld import read_meld
from emohd_jax import exported
from emohd_jax.bundle import load_bundle
from emohd_jax.input_pipeline import Collate
from tests.data_paths import DATA


@pytest.fixture
def program_folder(tmp_path):
    exported.enable(tmp_path)
    yield tmp_path
    exported.enable(None)


def _words_batch(bundle, n: int) -> dict[str, np.ndarray]:
    """The model fields of the text tower for the first `n` MELD dev utterances, padded as predict pads them."""
    utterances, _ = read_meld(DATA, "dev")
    extractor = bundle.towers["text"].task.extractor()
    records = [extractor.encode(u.text) for u in utterances[:n]]
    batch = Collate(bundle.towers["text"].task.padded)(records)
    return {k: batch[k] for k in bundle.towers["text"].task.model_fields}


def test_a_tower_program_is_saved_then_loaded_without_tracing(program_folder, monkeypatch):
    bundle = load_bundle()
    batch = _words_batch(bundle, 8)
    first = np.asarray(bundle.towers["text"].probs(batch))
    saved = sorted(program_folder.glob("tower-text-*.exported"))
    assert len(saved) == 1

    # A later run: new programs over the same files. Tracing would call the task's predict_probs.
    again = load_bundle()

    def traced(*_):
        raise AssertionError("the saved program was traced again instead of loaded")

    monkeypatch.setattr(type(again.towers["text"].task), "predict_probs", traced)
    np.testing.assert_array_equal(np.asarray(again.towers["text"].probs(batch)), first)
    assert sorted(program_folder.glob("tower-text-*.exported")) == saved

    exported.enable(None)  # the plain jitted tower computes the same probabilities
    monkeypatch.undo()
    plain = load_bundle()
    np.testing.assert_allclose(np.asarray(plain.towers["text"].probs(batch)), first, atol=1e-6)
    assert np.argmax(first, -1).tolist() == np.argmax(np.asarray(plain.towers["text"].probs(batch)), -1).tolist()


def test_other_shapes_and_other_sources_get_their_own_programs(program_folder, monkeypatch):
    bundle = load_bundle()
    bundle.towers["text"].probs(_words_batch(bundle, 8))
    bundle.towers["text"].probs(_words_batch(bundle, 16))  # another batch bucket: another program
    assert len(list(program_folder.glob("tower-text-*.exported"))) == 2

    monkeypatch.setattr(exported, "code_digest", lambda: "edited sources")  # what any edit to the package does
    load_bundle().towers["text"].probs(_words_batch(bundle, 8))
    assert len(list(program_folder.glob("tower-text-*.exported"))) == 3


def test_a_damaged_program_file_is_exported_again(program_folder):
    bundle = load_bundle()
    batch = _words_batch(bundle, 8)
    first = np.asarray(bundle.towers["text"].probs(batch))
    (saved,) = program_folder.glob("tower-text-*.exported")
    saved.write_bytes(saved.read_bytes()[:100])  # a run killed while another wrote it, a full disk
    np.testing.assert_array_equal(np.asarray(load_bundle().towers["text"].probs(batch)), first)
    assert saved.stat().st_size > 100
