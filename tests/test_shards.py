"""Feature shards: prepare → ArrayRecord → grain, resumable extraction, deterministic checkpointable loading."""

import json
import pathlib

import numpy as np
import pytest
from etils import epath

from data_pipeline import prepare as prepare_lib
from data_pipeline import shards
from data_pipeline.sources.meld import read_meld
from emohd_jax import input_pipeline
from emohd_jax.convert.hf_text import minilm_dir
from emohd_jax.errors import EmptyTranscriptError
from emohd_jax.text.extract import TextExtractor


@pytest.fixture(scope="module")
def sample(repo_root):
    train, _ = read_meld(repo_root / "examples", "train")
    dev, _ = read_meld(repo_root / "examples", "dev")
    return {"train": train[:48], "dev": dev[:20]}


@pytest.fixture(scope="module")
def extractor():
    return TextExtractor(minilm_dir(), max_length=64, context_turns=2)


@pytest.fixture(scope="module")
def prepared(sample, extractor, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    manifest = prepare_lib.prepare(sample, extractor, out)
    return out, manifest


def _read_all(out, split):
    source = shards.open_split(out, split)
    return {source[i]["uid"].decode(): source[i] for i in range(len(source))}


def test_records_round_trip_through_array_record(prepared, sample, extractor):
    out, manifest = prepared
    assert (shards.shard_dir(out) / "features.json").is_file()
    records = _read_all(out, "train")
    assert sorted(records) == sorted(u.uid for u in sample["train"])
    extractor.set_dialogues(sample["train"])
    for utterance in sample["train"][:10]:
        expected = extractor.records(utterance)[0]
        got = records[utterance.uid]
        np.testing.assert_array_equal(got["input_ids"], expected["input_ids"])
        np.testing.assert_array_equal(got["token_type_ids"], expected["token_type_ids"])
        assert got["label"] == utterance.label and got["text"].decode() == utterance.text
    assert manifest["counts"]["train"]["records"] == 48 and manifest["counts"]["dev"]["utterances"] == 20


def test_shards_read_through_etils_paths(prepared):
    out, _ = prepared
    etils_path = epath.Path(str(out))
    assert not isinstance(etils_path, pathlib.Path)  # etils' own path class, the one gs:// paths get
    read, expected = _read_all(etils_path, "dev"), _read_all(str(out), "dev")
    assert sorted(read) == sorted(expected) and all(read[u]["label"] == expected[u]["label"] for u in expected)
    # pathlib would fold gs://bucket into gs:/bucket
    assert str(shards.shard_dir("gs://bucket/shards")) == "gs://bucket/shards/feature_shards/1.0.0"


def test_dialogue_context_is_segment_b(sample, extractor):
    extractor.set_dialogues(sample["train"])
    later = next(u for u in sample["train"] if u.turn == 2)
    ids = extractor.records(later)[0]["input_ids"]
    text = extractor.tokenizer.decode(ids.tolist(), skip_special_tokens=False)
    previous = [u for u in sample["train"] if u.dialogue == later.dialogue and u.turn in (0, 1)]
    assert text.index(later.text.lower()[:10]) < text.index(previous[0].text.lower()[:10])
    assert text.startswith(f"[CLS] {later.speaker.lower()} :")


def test_interrupted_prepare_resumes_without_duplicates(sample, extractor, prepared, tmp_path):
    out = tmp_path / "resumed"
    # A run killed half-way: half the cache written, plus a temporary file a kill can leave behind.
    cache = out / "cache" / "train"
    extractor.set_dialogues(sample["train"])
    prepare_lib.extract_split(sample["train"][:20], extractor, cache)
    (cache / "ab").mkdir(parents=True, exist_ok=True)
    (cache / "ab" / "0123456789abcdef.tmp.npz").write_bytes(b"half a file")
    manifest = prepare_lib.prepare(sample, extractor, out)
    assert manifest["counts"] == prepared[1]["counts"]
    resumed, uninterrupted = _read_all(out, "train"), _read_all(prepared[0], "train")
    assert sorted(resumed) == sorted(uninterrupted)
    for uid in resumed:
        np.testing.assert_array_equal(resumed[uid]["input_ids"], uninterrupted[uid]["input_ids"])


def test_bad_utterance_lands_in_the_skip_report(sample, extractor, tmp_path):
    import dataclasses

    broken = dataclasses.replace(sample["dev"][0], text="  ")
    manifest = prepare_lib.prepare({"dev": [broken, *sample["dev"][1:5]]}, extractor, tmp_path)
    assert manifest["counts"]["dev"]["utterances"] == 4
    (skip,) = manifest["skips"]["skipped"]
    assert skip["item"] == broken.uid and skip["kind"] == EmptyTranscriptError.kind
    assert json.loads((tmp_path / "manifest.json").read_text())["skips"]["n_skipped"] == 1


def test_other_options_refuse_the_same_directory(sample, prepared):
    with pytest.raises(ValueError, match="other options"):
        prepare_lib.prepare(sample, TextExtractor(minilm_dir(), max_length=32), prepared[0])


def test_grain_loader_is_deterministic_and_checkpointable(prepared):
    source = shards.open_split(prepared[0], "train")
    collate = input_pipeline.Collate({"input_ids": 0, "token_type_ids": 0})

    def batches(iterator, n):
        return [next(iterator)["input_ids"] for _ in range(n)]

    first = batches(iter(input_pipeline.train_loader(source, global_batch_size=8, seed=3, collate_fn=collate)), 8)
    again = iter(input_pipeline.train_loader(source, global_batch_size=8, seed=3, collate_fn=collate))
    head = batches(again, 3)
    state = again.get_state()
    tail = batches(again, 5)
    for a, b in zip(first, head + tail):
        np.testing.assert_array_equal(a, b)
    restored = iter(input_pipeline.train_loader(source, global_batch_size=8, seed=3, collate_fn=collate))
    restored.set_state(state)
    for a, b in zip(tail, batches(restored, 5)):
        np.testing.assert_array_equal(a, b)
    assert all(b.shape[1] in input_pipeline.BUCKETS for b in first)
    other_seed = batches(iter(input_pipeline.train_loader(source, global_batch_size=8, seed=4, collate_fn=collate)), 1)
    assert not np.array_equal(other_seed[0], first[0])


def test_eval_batches_cover_every_record_once(prepared):
    source = shards.open_split(prepared[0], "dev")
    collate = input_pipeline.Collate({"input_ids": 0, "token_type_ids": 0})
    indices = np.concatenate([b["index"] for b in input_pipeline.eval_batches(source, global_batch_size=8,
                                                                                collate_fn=collate)])
    assert len(indices) == 24 and sorted(indices[indices >= 0]) == list(range(20))
    assert (indices[20:] == -1).all()


def test_tfrecord_container(sample, extractor, tmp_path):
    pytest.importorskip("tensorflow", reason="TFRecord shards need the [tfrecord] extra (TensorFlow)")
    import tensorflow_datasets as tfds

    prepare_lib.prepare({"dev": sample["dev"]}, extractor, tmp_path, file_format="tfrecord")
    builder = tfds.builder_from_directory(str(shards.shard_dir(tmp_path)))
    uids = {ex["uid"].decode() for ex in tfds.as_numpy(builder.as_dataset(split="dev"))}
    assert uids == {u.uid for u in sample["dev"]}


def test_writing_shards_says_nothing_about_downloading(tmp_path, capfd):
    import numpy as np

    from emohd_jax.extract import Field

    fields = {"uid": Field((), "text"), "x": Field((2,), "float32")}
    shards.write_shards(tmp_path, fields, {"train": lambda: iter([("a", {"uid": "a", "x": np.ones(2, np.float32)})])})
    printed = capfd.readouterr()
    assert "Downloading" not in printed.out + printed.err and "download" not in printed.out.lower()
    assert len(shards.open_split(tmp_path, "train")) == 1
