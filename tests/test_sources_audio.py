"""RAVDESS and CREMA-D adapters: labels and texts from file names, actor splits, skip reports."""

import collections

import pytest

from data_pipeline.sources.cremad import read_cremad
from data_pipeline.sources.ravdess import read_ravdess
from emohd_jax.classes import CLASS_INDEX, EMOTIONS
from emohd_jax.errors import UsageError



def test_ravdess_dev_actors_drop_calm(data_root):
    utterances, skips = read_ravdess(data_root / "ravdess", actors=range(17, 21), split="dev")
    assert len(skips) == 0
    # 60 files per actor, 8 of them calm: 52 kept per actor
    assert len(utterances) == 4 * 52
    assert {u.speaker for u in utterances} == {"Actor_17", "Actor_18", "Actor_19", "Actor_20"}
    counts = collections.Counter(EMOTIONS[u.label] for u in utterances)
    assert counts == {"neutral": 16, "happiness": 32, "sadness": 32, "anger": 32, "fear": 32, "disgust": 32,
                      "surprise": 32}
    first = next(u for u in utterances if u.uid == "ravdess/03-01-05-02-02-01-17")
    assert (first.label, first.text, first.split) == (CLASS_INDEX["anger"], "Dogs are sitting by the door", "dev")
    assert first.audio.endswith("Actor_17/03-01-05-02-02-01-17.flac") and first.video is None


def test_ravdess_calm_merged_into_neutral(data_root):
    utterances, _ = read_ravdess(data_root / "ravdess", actors=[1], split="train", calm="neutral")
    assert len(utterances) == 60
    assert sum(u.label == CLASS_INDEX["neutral"] for u in utterances) == 12


def test_ravdess_bad_names_are_skipped_and_missing_actor_raises(tmp_path):
    actor = tmp_path / "Actor_21"
    actor.mkdir()
    for name in ("03-01-04-01-01-01-21.wav", "03-01-09-01-01-01-21.wav", "notes.wav", "03-01-04-01-01-01-22.wav",
                 "01-01-03-01-02-01-21.mp4", "03-01-06-01-01-02-٢١.flac"):  # Arabic-Indic digits are not a name
        (actor / name).touch()
    utterances, skips = read_ravdess(tmp_path, actors=[21], split="test")
    assert [(u.uid, EMOTIONS[u.label], u.audio is not None, u.video is not None) for u in utterances] == [
        ("ravdess/01-01-03-01-02-01-21", "happiness", True, True),
        ("ravdess/03-01-04-01-01-01-21", "sadness", True, False)]
    assert skips.counts() == {"unknown_label": 2, "bad_file_name": 2}
    reasons = " ".join(s.reason for s in skips.skips)
    assert "03-01-09-01-01-01-21.wav" in reasons and "notes.wav" in reasons and "does not match folder" in reasons
    assert "٢١.flac: file name does not follow RAVDESS" in reasons
    with pytest.raises(UsageError, match="Actor_22: no such RAVDESS actor folder"):
        read_ravdess(tmp_path, actors=[22], split="test")


def test_cremad_samples(data_root):
    utterances, skips = read_cremad(data_root / "cremad", split="test")
    assert len(skips) == 0 and len(utterances) == 9
    by_uid = {u.uid: u for u in utterances}
    flv = by_uid["cremad/1001_DFA_ANG_XX"]
    assert (EMOTIONS[flv.label], flv.text, flv.speaker) == ("anger", "Don't forget a jacket", "1001")
    assert flv.video.endswith(".flv") and flv.audio == flv.video  # audio from the video's track
    mp3 = by_uid["cremad/1002_DFA_FEA_XX"]
    assert EMOTIONS[mp3.label] == "fear" and mp3.audio.endswith(".mp3") and mp3.video is None
    assert "surprise" not in {EMOTIONS[u.label] for u in utterances}
    only_1002, _ = read_cremad(data_root / "cremad", split="test", actors=[1002])
    assert len(only_1002) == 6


def test_cremad_pairs_audio_and_video_and_reports_bad_names(tmp_path):
    (tmp_path / "AudioWAV").mkdir()
    (tmp_path / "VideoFlash").mkdir()
    for name in ("AudioWAV/1005_TSI_SAD_HI.wav", "VideoFlash/1005_TSI_SAD_HI.flv",
                 "AudioWAV/1005_TSI_SUR_HI.wav", "AudioWAV/1005_XYZ_SAD_HI.wav", "AudioWAV/readme.wav",
                 "AudioWAV/١٠٠٥_TSI_SAD_HI.wav"):
        (tmp_path / name).touch()
    utterances, skips = read_cremad(tmp_path, split="train")
    (utterance,) = utterances
    assert utterance.audio.endswith("1005_TSI_SAD_HI.wav") and utterance.video.endswith("1005_TSI_SAD_HI.flv")
    assert (EMOTIONS[utterance.label], utterance.text) == ("sadness", "The surface is slick")
    assert skips.counts() == {"unknown_label": 2, "bad_file_name": 2}
    assert any("1005_TSI_SUR_HI.wav" in s.reason and "unknown label 'SUR'" in s.reason for s in skips.skips)


@pytest.mark.parametrize("spec,problem", [("abc", "'abc' is not an actor number"), ("3-x", "'3-x' is not"),
                                          ("١-٢", "is not an actor number"), ("1-4,9-5", "'9-5' is not")])
def test_bad_actor_specs_are_usage_errors(spec, problem):
    from data_pipeline.prepare import parse_actors

    assert parse_actors("1-3, 7") == [1, 2, 3, 7]
    with pytest.raises(UsageError, match=problem):
        parse_actors(spec)
    with pytest.raises(UsageError, match=r"\(write e.g. 1-16 or 17,18,21-24 in config.data.actors.heldout\)$"):
        parse_actors(spec, setting="config.data.actors.heldout")


def test_a_split_without_actors_and_an_unknown_dataset_are_usage_errors(tmp_path):
    from ml_collections import ConfigDict

    from data_pipeline.prepare import read_source

    data = ConfigDict({"dataset": "ravdess", "root": str(tmp_path), "actors": {"dev": "17"}, "calm": "drop"})
    with pytest.raises(UsageError, match="no actors for split 'test'"):
        read_source(data, "test")
    data.calm = "merge"
    with pytest.raises(UsageError, match="^config.data.calm: 'merge' is not a choice"):
        read_source(data, "dev")
    data.dataset = "ravdes"
    with pytest.raises(UsageError, match="unknown dataset 'ravdes'"):
        read_source(data, "dev")


def test_cremad_split_the_config_does_not_name_is_a_usage_error(data_root):
    """With actors configured, an unnamed split is a mistake (it used to read every actor, training ones too)."""
    from ml_collections import ConfigDict

    from data_pipeline.prepare import read_source

    data = ConfigDict({"dataset": "cremad", "root": str(data_root), "actors": {"train": "1001", "test": "1002"}})
    assert {u.speaker for u in read_source(data, "test")[0]} == {"1002"}
    with pytest.raises(UsageError, match="^config.data.split: no actors for split 'heldout'"):
        read_source(data, "heldout")
    data.actors = {}
    assert len(read_source(data, "heldout")[0]) == 9  # no actors configured: every sample clip


def test_two_splits_reading_one_folder_list_each_skip_once_with_both_splits(tmp_path, data_root):
    import json
    import shutil

    from ml_collections import ConfigDict

    from emohd_jax.audio.extract import AudioExtractor
    from data_pipeline.prepare import prepare_from_config

    actor = tmp_path / "ravdess" / "Actor_17"
    actor.mkdir(parents=True)
    shutil.copy(data_root / "ravdess/Actor_17/03-01-05-01-01-01-17.flac", actor)
    (actor / "notes.flac").write_bytes(b"")
    config = ConfigDict({"data": {"dataset": "ravdess", "root": str(tmp_path), "calm": "drop",
                                  "actors": {"train": "17", "dev": "17"}, "prepare_splits": ("train", "dev"),
                                  "shards": str(tmp_path / "shards"), "file_format": "array_record"}})
    manifest = prepare_from_config(config, AudioExtractor())
    (skip,) = manifest["skips"]["skipped"]
    assert skip["item"].endswith("notes.flac") and skip["kind"] == "bad_file_name" and skip["split"] == "train,dev"
    assert json.loads((tmp_path / "shards" / "manifest.json").read_text())["skips"]["n_skipped"] == 1
