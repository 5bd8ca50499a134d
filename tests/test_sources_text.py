"""MELD and IEMOCAP adapters: real MELD labels, mojibake repair, bad rows reported, IEMOCAP tree layout."""

import collections
import csv

import pytest

from data_pipeline.sources.iemocap import read_iemocap
from data_pipeline.sources.meld import clip_path, read_meld
from emohd_jax.classes import CLASS_INDEX, EMOTIONS
from emohd_jax.errors import MalformedTableError, UsageError

HEADER = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID"]


def _write_meld(root, split, rows, header=HEADER, encoding="utf-8"):
    (root / "meld").mkdir(parents=True, exist_ok=True)
    with open(root / "meld" / f"{split}_sent_emo.csv", "w", newline="", encoding=encoding) as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def test_meld_dev_counts_match_the_release(data_root):
    utterances, skips = read_meld(data_root, "dev")
    assert len(skips) == 0 and len(utterances) == 1109
    counts = collections.Counter(EMOTIONS[u.label] for u in utterances)
    # README: neutral 470, joy 163, anger 153, surprise 150, sadness 111, fear 40, disgust 22.
    assert counts == {"neutral": 470, "happiness": 163, "anger": 153, "surprise": 150, "sadness": 111,
                      "fear": 40, "disgust": 22}
    first = utterances[0]
    assert first.uid == "meld/dev/dia0_utt0" and first.dialogue == "dev/0" and first.turn == 0
    assert first.video == str(clip_path(data_root, "dev", 0, 0))
    assert first.video.endswith("MELD.Raw/dev_splits_complete/dia0_utt0.mp4")


def test_meld_typographic_punctuation_is_normalised(data_root):
    utterances, _ = read_meld(data_root, "train")
    assert not any("’" in u.text or "…" in u.text for u in utterances)
    assert any("'" in u.text for u in utterances)


def test_meld_mojibake_is_repaired(tmp_path):
    clean = "You’re kidding… right?"
    mojibake = clean.encode("utf-8").decode("cp1252")  # how other MELD copies carry it
    assert mojibake != clean and "â€" in mojibake
    _write_meld(tmp_path, "train", [["1", mojibake, "Ross", "joy", "positive", "3", "1"]])
    (utterance,), skips = read_meld(tmp_path, "train")
    assert utterance.text == "You're kidding... right?" and utterance.label == CLASS_INDEX["happiness"]
    assert len(skips) == 0


def test_meld_bad_rows_are_reported_and_the_rest_kept(tmp_path):
    _write_meld(tmp_path, "train", [
        ["1", "Fine.", "Monica", "neutral", "neutral", "0", "0"],
        ["2", "What?", "Joey", "confused", "neutral", "0", "1"],        # unknown label
        ["3", "   ", "Joey", "anger", "negative", "0", "2"],             # empty utterance
        ["4", "Oh no.", "Rachel", "sadness", "negative", "0", "3"],
    ])
    path = tmp_path / "meld" / "train_sent_emo.csv"
    path.write_bytes(path.read_bytes() + b'5,"Bad \xff\xfe bytes",Ross,fear,negative,0,4\r\n')
    utterances, skips = read_meld(tmp_path, "train")
    assert [u.text for u in utterances] == ["Fine.", "Oh no."]
    by_kind = {s.kind: s for s in skips.skips}
    assert set(by_kind) == {"unknown_label", "empty_transcript", "malformed_table"}
    assert f"{path} row 3" in by_kind["unknown_label"].reason and "'confused'" in by_kind["unknown_label"].reason
    assert f"{path} row 4" in by_kind["empty_transcript"].reason
    assert f"{path} row 6" in by_kind["malformed_table"].reason and "undecodable" in by_kind["malformed_table"].reason


def test_meld_missing_column_names_the_file(tmp_path):
    _write_meld(tmp_path, "dev", [["1", "Hi", "Ross", "0", "0"]],
                header=["Sr No.", "Utterance", "Speaker", "Dialogue_ID", "Utterance_ID"])
    with pytest.raises(MalformedTableError, match=r"dev_sent_emo\.csv: missing column\(s\) Emotion"):
        read_meld(tmp_path, "dev")


def _write_iemocap_session(root, session: int):
    dialog = root / "iemocap" / f"Session{session}" / "dialog"
    (dialog / "EmoEvaluation").mkdir(parents=True)
    (dialog / "transcriptions").mkdir(parents=True)
    name = f"Ses0{session}F_impro01"
    labels = [("F000", "neu"), ("M001", "fru"), ("F002", "exc"), ("M003", "xxx"), ("F004", "hap")]
    lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
    texts = []
    for i, (turn, label) in enumerate(labels):
        uid = f"{name}_{turn}"
        lines += [f"[{i * 3 + 0.5:.4f} - {i * 3 + 2.25:.4f}]\t{uid}\t{label}\t[2.5000, 2.5000, 2.5000]",
                  f"C-E1:\t{label};\t()", ""]
        texts.append(f"{uid} [{i * 3 + 0.5:08.4f}-{i * 3 + 2.25:08.4f}]: Utterance number {i}.")
    (dialog / "EmoEvaluation" / f"{name}.txt").write_text("\n".join(lines))
    (dialog / "transcriptions" / f"{name}.txt").write_text("\n".join(texts))


def test_iemocap_release_layout_and_label_merges(tmp_path):
    for session in (1, 5):
        _write_iemocap_session(tmp_path, session)
    train, skips = read_iemocap(tmp_path, "train", sessions={"train": (1,), "test": (5,)})
    assert len(skips) == 0
    # neu, fru→anger, exc→happiness, xxx dropped, hap
    assert [EMOTIONS[u.label] for u in train] == ["neutral", "anger", "happiness", "happiness"]
    assert train[1].text == "Utterance number 1." and train[1].start_s == 3.5 and train[1].end_s == 5.25
    assert train[0].audio.endswith("Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav")
    test, _ = read_iemocap(tmp_path, "test", sessions={"train": (1,), "test": (5,)}, excitement="drop")
    assert [EMOTIONS[u.label] for u in test] == ["neutral", "anger", "happiness"]
    assert all(u.uid.startswith("iemocap/Ses05") for u in test)


def test_meld_csv_with_a_byte_order_mark_is_read(tmp_path):
    from data_pipeline.sources.meld import read_meld

    (tmp_path / "meld").mkdir()
    rows = ["Utterance,Speaker,Emotion,Dialogue_ID,Utterance_ID", "Oh my God!,Rachel,surprise,0,0"]
    (tmp_path / "meld" / "dev_sent_emo.csv").write_bytes("\n".join(rows).encode("utf-8-sig"))
    (utterance,), skips = read_meld(tmp_path, "dev")
    assert len(skips) == 0 and utterance.text == "Oh my God!" and utterance.uid == "meld/dev/dia0_utt0"


def test_a_missing_split_or_folder_is_a_usage_error(tmp_path):
    """Config mistakes (a split the data lacks, a wrong root, a bad choice) name what to set, never bad input."""
    _write_meld(tmp_path, "dev", [["1", "Hi", "Ross", "joy", "positive", "0", "0"]])
    with pytest.raises(UsageError, match=r"test_sent_emo\.csv: no MELD label file for split 'test' \(expected"):
        read_meld(tmp_path, "test")
    _write_iemocap_session(tmp_path, 1)
    with pytest.raises(UsageError, match=r"^config.data.split: IEMOCAP split 'dev' has no sessions \(one of: train"):
        read_iemocap(tmp_path, "dev", sessions={"train": (1,), "test": (5,)})
    with pytest.raises(UsageError, match=r"Session5/dialog/EmoEvaluation: no such IEMOCAP folder \(session 5\)"):
        read_iemocap(tmp_path, "test", sessions={"train": (1,), "test": (5,)})
    with pytest.raises(UsageError, match="^config.data.excitement: 'keep' is not a choice"):
        read_iemocap(tmp_path, "train", sessions={"train": (1,)}, excitement="keep")
