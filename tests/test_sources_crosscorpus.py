"""TESS and URDU adapters on the real folders, bad manifest rows, and several corpora in one set of shards."""

import collections

import ml_collections
import pytest

from data_pipeline.prepare import read_source
from data_pipeline.sources.tess import read_tess
from data_pipeline.sources.urdu import URDU_CLASSES, read_urdu
from emohd_jax.classes import EMOTIONS
from emohd_jax.errors import MalformedTableError, UsageError


def test_tess_counts_labels_speakers_and_sentences(data_root):
    utterances, skips = read_tess(data_root / "tess", split="tess")
    assert len(skips) == 0 and len(utterances) == 1398
    assert collections.Counter(u.speaker for u in utterances) == {"OAF": 699, "YAF": 699}
    counts = collections.Counter(EMOTIONS[u.label] for u in utterances)
    assert counts == {"neutral": 200, "happiness": 200, "anger": 199, "sadness": 199, "fear": 200, "disgust": 200,
                      "surprise": 200}
    by_uid = {u.uid: u for u in utterances}
    base = by_uid["tess/TESS_Toronto_emotional_speech_set_data/OAF_angry/OAF_base_angry"]
    assert (EMOTIONS[base.label], base.speaker, base.text, base.split) == ("anger", "OAF", "Say the word base", "tess")
    assert base.audio.endswith("OAF_angry/OAF_base_angry.flac") and base.video is None
    ps = by_uid["tess/TESS_Toronto_emotional_speech_set_data/OAF_pleasant_surprise/OAF_bath_ps"]
    assert EMOTIONS[ps.label] == "surprise"


def test_urdu_counts_labels_speakers(data_root):
    utterances, skips = read_urdu(data_root / "urdu", split="urdu")
    assert len(skips) == 0 and len(utterances) == 400
    assert {EMOTIONS[u.label] for u in utterances} == set(URDU_CLASSES)
    assert collections.Counter(EMOTIONS[u.label] for u in utterances) == {c: 100 for c in URDU_CLASSES}
    assert len({u.speaker for u in utterances}) == 29
    clip = next(u for u in utterances if u.uid == "urdu/Happy/SF1_F10_H010")
    assert (EMOTIONS[clip.label], clip.speaker, clip.text) == ("happiness", "SF1", None)


def test_bad_rows_are_skipped_and_bad_tables_raise(tmp_path):
    folder = tmp_path / "urdu"
    (folder / "Sad").mkdir(parents=True)
    (folder / "Sad" / "SM2_F1_S01.flac").write_bytes(b"")
    (folder / "manifest.csv").write_text("path,label,speaker,gender\nSad/SM2_F1_S01.flac,sad,SM2,male\n"
                                         "Sad/missing.flac,sad,SM2,male\nSad/SM2_F1_S01.flac,bored,SM2,male\n")
    utterances, skips = read_urdu(folder, split="urdu")
    assert [(u.uid, EMOTIONS[u.label]) for u in utterances] == [("urdu/Sad/SM2_F1_S01", "sadness")]
    assert skips.counts() == {"corrupt_media": 1, "unknown_label": 1}
    reasons = " ".join(s.reason for s in skips.skips)
    assert "manifest.csv row 3 but missing" in reasons and "row 4: unknown label 'bored'" in reasons
    (folder / "manifest.csv").write_text("file,label\nSad/SM2_F1_S01.flac,sad\n")
    with pytest.raises(MalformedTableError, match="missing column.s. path, speaker"):
        read_urdu(folder, split="urdu")
    with pytest.raises(UsageError, match="no tess manifest"):
        read_tess(tmp_path / "tess", split="tess")


def test_one_config_reads_a_corpus_per_split(data_root):
    data = ml_collections.ConfigDict({"dataset": "speech", "root": str(data_root),
                                      "split_sources": {"ravdess_dev": "ravdess", "tess": "tess", "urdu": "urdu"},
                                      "actors": {"ravdess_dev": "17-20"}})
    sizes = {split: len(read_source(data, split)[0]) for split in ("ravdess_dev", "tess", "urdu")}
    assert sizes == {"ravdess_dev": 208, "tess": 1398, "urdu": 400}
    assert {u.dataset for u in read_source(data, "urdu")[0]} == {"urdu"}
    with pytest.raises(UsageError, match="unknown dataset 'speech'"):
        read_source(data, "train")
