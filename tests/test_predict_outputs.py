"""predict_outputs on hand-built results: JSON round trip, per-second CSV, timeline PNG, atomic writes, table."""

from __future__ import annotations

import csv
import json
import math
import struct

import matplotlib.image
import pytest
from matplotlib.figure import Figure
from rich.console import Console

from emohd_jax.classes import CLASS_INDEX, EMOTIONS
from emohd_jax.serve.outputs import CSV_COLUMNS, DPI, MAX_WIDTH_IN, SCHEMA, summary_table, write_result


def _probs(label: str, p: float = 0.8) -> list[float]:
    """Seven probabilities, `p` on `label`, the rest shared out."""
    probs = [round((1 - p) / 6, 4)] * 7
    probs[CLASS_INDEX[label]] = p
    return probs


def _present(label: str, p: float = 0.8, **counts) -> dict:
    return {"present": True, "probs": _probs(label, p), "label": label, **counts}


def _result(name: str, duration: float, utterances: list[dict], per_second: list[dict], per_patch: list[dict]):
    return {"schema": SCHEMA, "input": f"/data/{name}", "duration_s": duration, "classes": list(EMOTIONS),
            "fusion": {"rule": "sum", "calibrated": True, "modalities": ["visual", "audio", "text"]},
            "utterances": utterances, "per_second": per_second, "per_patch": per_patch}


def _utterance(i: int, start: float, end: float, source: str, transcript: str | None, modalities: dict,
               fused: str | None) -> dict:
    used = [m for m, e in modalities.items() if e["present"]]
    return {"index": i, "start_s": start, "end_s": end, "source": source, "transcript": transcript,
            "modalities": modalities,
            "fused": {"label": fused, "scores": _probs(fused) if fused else None, "modalities_used": used}}


# Faces at 1 fps (t = k + 0.5) except seconds 4 and 5; the recording ends at 9.4 s, so second 9 has no frame.
INTERVIEW_FACES = {0: "anger", 1: "anger", 2: "neutral", 3: "anger", 6: "happiness", 7: "happiness", 8: "surprise"}
# (start, label) of 0.96 s voice patches, per utterance from its start: [0, 3.2) has 3, [3.2, 6) 2, [6, 9.4) 3.
INTERVIEW_PATCHES = [(0.0, "anger"), (0.96, "anger"), (1.92, "fear"), (3.2, "neutral"), (4.16, "sadness"),
                     (6.0, "happiness"), (6.96, "happiness"), (7.92, "surprise")]


@pytest.fixture(scope="module")
def interview() -> dict:
    """9.4 s, three utterances, the middle one without words."""
    text_missing = {"present": False, "reason": "no speech recognised"}
    utterances = [
        _utterance(0, 0.0, 3.2, "asr", 'don\'t forget a jacket, "please".',
                   {"visual": _present("anger", 0.7, frames=3), "audio": _present("anger", 0.6, patches=3),
                    "text": _present("neutral", 0.55)}, "anger"),
        _utterance(1, 3.2, 6.0, "window", None,
                   {"visual": _present("anger", 0.9, frames=1), "audio": _present("sadness", 0.5, patches=2),
                    "text": text_missing}, "neutral"),
        _utterance(2, 6.0, 9.4, "asr", "[laughs] I think so.",
                   {"visual": _present("happiness", 0.85, frames=3), "audio": _present("happiness", 0.7, patches=3),
                    "text": _present("happiness", 0.9)}, "happiness"),
    ]
    per_second = [{"t": k + 0.5, "probs": _probs(label), "label": label} for k, label in INTERVIEW_FACES.items()]
    per_patch = [{"start_s": s, "end_s": round(s + 0.96, 3), "probs": _probs(label, 0.6), "label": label}
                 for s, label in INTERVIEW_PATCHES]
    return _result("interview.mp4", 9.4, utterances, per_second, per_patch)


@pytest.fixture(scope="module")
def voice_only() -> dict:
    """5 s of audio: no face anywhere."""
    utterance = _utterance(0, 0.0, 5.0, "clip", "I said no.",
                           {"visual": {"present": False, "reason": "no video stream"},
                            "audio": _present("anger", 0.75, patches=5), "text": _present("anger", 0.6)}, "anger")
    per_patch = [{"start_s": round(0.96 * k, 3), "end_s": round(0.96 * (k + 1), 3), "probs": _probs("anger"),
                  "label": "anger"} for k in range(5)]
    return _result("no_face.wav", 5.0, [utterance], [], per_patch)


def _long_label(i: int) -> str:
    return EMOTIONS[i % len(EMOTIONS)]


@pytest.fixture(scope="module")
def meeting() -> dict:
    """Two hours in 900 utterances of 8 s, every other one spoken; no face in [3600, 3660)."""
    utterances, per_patch = [], []
    for i in range(900):
        start = 8.0 * i
        spoken = i % 2 == 0
        utterances.append(_utterance(
            i, start, start + 8.0, "asr" if spoken else "window",
            f"utterance {i}: " + "we should talk about the schedule for next week " * 3 if spoken else None,
            {"visual": _present(_long_label(i), frames=8), "audio": _present(_long_label(i + 1), patches=8),
             "text": _present(_long_label(i + 2)) if spoken else {"present": False, "reason": "no speech recognised"}},
            _long_label(i)))
        per_patch += [{"start_s": round(start + 0.96 * k, 3), "end_s": round(start + 0.96 * (k + 1), 3),
                       "probs": _probs(_long_label(i + k)), "label": _long_label(i + k)} for k in range(8)]
    per_second = [{"t": k + 0.5, "probs": _probs(_long_label(k), 0.5), "label": _long_label(k)}
                  for k in range(7200) if not 3600 <= k < 3660]
    return _result("meeting.mp4", 7200.0, utterances, per_second, per_patch)


def _read_csv(path) -> list[dict[str, str]]:
    """Rows as strings, through pandas when it is installed (what users open it with), else the csv module."""
    try:
        import pandas
    except ImportError:
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    return pandas.read_csv(path, dtype=str, keep_default_na=False).to_dict("records")


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    matplotlib.image.imread(path)  # decodes every chunk: the file is whole
    return struct.unpack(">II", data[16:24])


def test_json_round_trips_and_only_the_three_outputs_are_left(interview, tmp_path):
    paths = write_result(interview, tmp_path / "out", stem="interview")
    assert paths == {k: tmp_path / "out" / f"interview.{k}" for k in ("json", "csv", "png")}
    assert json.loads(paths["json"].read_text(encoding="utf-8")) == interview
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["interview.csv", "interview.json", "interview.png"]


def test_csv_has_one_row_per_second_with_the_face_voice_and_utterance_of_that_second(interview, tmp_path):
    rows = _read_csv(write_result(interview, tmp_path, stem="interview")["csv"])
    assert list(rows[0]) == list(CSV_COLUMNS) and len(rows) == math.ceil(9.4) == 10
    assert [r["second"] for r in rows] == [str(k) for k in range(10)]
    assert [r["face_label"] for r in rows] == [INTERVIEW_FACES.get(k, "") for k in range(10)]
    # Middles 0.5 … 8.5 and 9.2 (of [9, 9.4)): the patch over 5.5 ([5.12, 6) has none) and 9.2 are missing.
    assert [r["audio_label"] for r in rows] == ["anger", "anger", "fear", "neutral", "sadness", "",
                                                "happiness", "happiness", "surprise", ""]
    assert [r["utterance"] for r in rows] == ["0"] * 3 + ["1"] * 3 + ["2"] * 4
    assert [r["fused_label"] for r in rows] == ["anger"] * 3 + ["neutral"] * 3 + ["happiness"] * 4
    assert rows[1]["transcript"] == 'don\'t forget a jacket, "please".' and rows[4]["transcript"] == ""
    assert float(rows[0]["face_anger"]) == 0.8 and float(rows[6]["audio_happiness"]) == 0.6
    assert rows[4]["face_anger"] == "" and rows[9]["audio_surprise"] == ""


def test_an_input_without_faces_has_empty_face_columns(voice_only, tmp_path):
    paths = write_result(voice_only, tmp_path, stem="no_face")
    rows = _read_csv(paths["csv"])
    assert len(rows) == 5 and all(r["face_label"] == "" and r["face_neutral"] == "" for r in rows)
    assert [r["audio_label"] for r in rows] == ["anger"] * 5 and rows[4]["fused_label"] == "anger"
    _png_size(paths["png"])


def test_two_hours_stay_one_readable_timeline_within_the_width_cap(interview, meeting, tmp_path):
    short_width, _ = _png_size(write_result(interview, tmp_path, stem="interview")["png"])
    paths = write_result(meeting, tmp_path, stem="meeting")
    long_width, long_height = _png_size(paths["png"])
    assert short_width < long_width <= MAX_WIDTH_IN * DPI and long_height < 1000
    rows = _read_csv(paths["csv"])
    assert len(rows) == 7200
    for k in (0, 7, 15, 3599, 4001, 7199):  # utterance k // 8; the patch over k + 0.5 is patch (k % 8) of it
        assert rows[k]["face_label"] == _long_label(k)
        assert rows[k]["audio_label"] == _long_label(k // 8 + k % 8)
        assert rows[k]["utterance"] == str(k // 8) and rows[k]["fused_label"] == _long_label(k // 8)
    assert rows[3600]["face_label"] == rows[3659]["face_label"] == "" and rows[3660]["face_label"] == _long_label(3660)


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(interview, tmp_path, monkeypatch):
    paths = write_result(interview, tmp_path, stem="interview")
    before = paths["png"].read_bytes()

    def crash(self, path, **kwargs):
        with open(path, "wb") as f:
            f.write(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", crash)
    with pytest.raises(OSError, match="disk full"):
        write_result(interview, tmp_path, stem="interview")
    assert paths["png"].read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["interview.csv", "interview.json", "interview.png"]


def test_a_result_of_another_schema_is_refused(interview, tmp_path):
    with pytest.raises(ValueError, match="interview.mp4"):
        write_result({**interview, "schema": "emohd.predict/0"}, tmp_path, stem="interview")
    assert not any(tmp_path.iterdir())


def test_summary_table_shows_each_utterance_and_each_failure(interview, voice_only):
    console = Console(record=True, width=200)
    console.print(summary_table([interview, voice_only], [("/data/broken.mp4", "corrupt media: moov atom not found")]))
    text = console.export_text()
    for expected in ("interview.mp4", "no_face.wav", "broken.mp4", "corrupt media: moov atom not found", "failed",
                     "0.0–3.2", "6.0–9.4", "[laughs] I think so.", "anger 0.70", "sadness 0.50", "happiness 0.90",
                     "— no speech recognised", "— no video", "neutral"):
        assert expected in text, expected
    assert text.count("interview.mp4") == 1  # the name heads its first row only
