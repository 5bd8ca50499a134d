"""What `emohd predict` accepts and how it says what it did (issue 18): numeric flags with checked ranges, folders
without media, photos as inputs, broken links, truncated videos, damaged bundles, `emohd eval` without its
checkpoint, and the table, timeline and CSV a person reads.

Real CREMA-D clips (examples/cremad) and Labeled-Faces-in-the-Wild photos, face only where a model runs: the
bundle loads once for the module. Checks that stop before any model loads run with loading refused.
"""

import csv
import json
import math
import pathlib
import re
import shutil

import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text as FigureText
from rich.console import Console

import emohd_jax
from emohd_jax import cli
from emohd_jax.bundle import DEFAULT_BUNDLE, MANIFEST, load_bundle
from emohd_jax.classes import EMOTIONS
from emohd_jax.errors import EXIT_NONE, EXIT_PARTIAL, EXIT_USAGE, CorruptBundleError, UsageError
from emohd_jax.serve import predictor as predictor_module
from emohd_jax.serve.batch import IMAGE_SUFFIXES, PredictRun, predict
from emohd_jax.serve.options import CLI_OPTIONS, NUMERIC_OPTIONS, predictor_options
from emohd_jax.serve.outputs import CSV_COLUMNS, summary_table, write_result

from tests.data_paths import DATA, REPO

EXAMPLES = REPO / "examples" / "cremad"
CLIP = EXAMPLES / "1001_DFA_ANG_XX.flv"      # 2.27 s of audio, the container declares 2.235 s
AUDIO = EXAMPLES / "1002_DFA_SAD_XX.mp3"
FACES = DATA / "faces_wild" / "test" / "happy"
FACE_ONLY = {"modalities": "face", "progress": False}


@pytest.fixture(scope="module")
def bundle():
    return load_bundle()


@pytest.fixture(autouse=True)
def _own_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # whatever predict caches stays in the test


@pytest.fixture
def no_loading(monkeypatch):
    """Fails whatever loads a bundle: the check under test must come first."""
    def refuse(*args, **kwargs):
        raise AssertionError("the bundle was loaded")

    monkeypatch.setattr(predictor_module, "load_bundle", refuse)


def _emohd(argv: list[str], capsys) -> tuple[int, str, str]:
    """`emohd ARGV` in this process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exited:
        cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return exited.value.code, captured.out, captured.err


# ---- 3: numeric options ---------------------------------------------------------------------------------


@pytest.mark.parametrize("flag,value,expected", [
    ("--block-s", "0", "must be between 10 and 3600 s, got 0.0"),
    ("--block-s", "-5", "must be between 10 and 3600 s"),
    ("--block-s", "nan", "must be between 10 and 3600 s, got nan"),
    ("--window-s", "0", "must be between 1 and 600 s, got 0.0"),
    ("--max-utterance-s", "-1", "must be at least 1 s, got -1.0"),
    ("--frame-chunk", "0", "must be between 1 and 1024, got 0"),
    ("--frame-chunk", "2.5", "not a whole number: '2.5'"),
])
def test_a_numeric_flag_out_of_range_is_a_usage_error_naming_it(flag, value, expected, no_loading, tmp_path, capsys):
    code, out, err = _emohd(["predict", CLIP, "--out", tmp_path / "out", flag, value], capsys)
    assert code == EXIT_USAGE and err.count("\n") == 1
    assert f"argument {flag}: {expected}" in err
    assert not (tmp_path / "out").exists()


def test_help_shows_each_numeric_default_and_range(capsys):
    with pytest.raises(SystemExit):
        cli.main(["predict", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for name in CLI_OPTIONS:
        option = NUMERIC_OPTIONS[name]
        assert option.flag in help_text and f"(default: {option.default}; {option.range_text()})" in help_text


def test_the_resume_keys_options_are_the_predictors_keywords_with_their_defaults():
    """`predictor_options` (known before the predictor and JAX are imported) is the Predictor's signature."""
    import inspect

    parameters = dict(inspect.signature(predictor_module.Predictor.__init__).parameters)
    del parameters["self"], parameters["bundle"]
    assert predictor_options() == {name: p.default for name, p in parameters.items()}


@pytest.mark.parametrize("options,flag", [
    ({"window_s": 0}, "--window-s / window_s"), ({"block_s": -1.0}, "--block-s / block_s"),
    ({"max_utterance_s": float("nan")}, "--max-utterance-s"), ({"frame_chunk": 0}, "--frame-chunk"),
    ({"frame_chunk": 16.0}, "--frame-chunk"), ({"carry_s": -1}, "--carry-s / carry_s"),
])
def test_the_api_checks_the_same_ranges_before_loading_a_bundle(options, flag, no_loading):
    with pytest.raises(UsageError, match=re.escape(flag)):
        predict([CLIP], **options)
    with pytest.raises(UsageError, match=re.escape(flag)):
        predictor_module.Predictor(None, **options)


# ---- 7 and 12: folders, photos, broken links -------------------------------------------------------------


def test_a_folder_without_media_exits_4_saying_what_was_looked_for(no_loading, tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no media here\n")
    code, out, _ = _emohd(["predict", tmp_path / "notes", "--out", tmp_path / "out"], capsys)
    assert code == EXIT_NONE
    text = " ".join(out.split())
    assert "no media found (looked for video: mp4 flv" in text and "images: jpg jpeg png webp bmp tif tiff" in text


def test_photos_in_a_folder_and_a_glob_are_predicted_as_a_single_photo_given_by_name(bundle, tmp_path):
    if not FACES.is_dir():
        pytest.skip(f"real data not found at {FACES}")
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    names = sorted(p.name for p in FACES.glob("*.jpg"))[:2]
    for name in names:
        shutil.copy(FACES / name, photos / name)
    Image.open(FACES / names[0]).save(photos / "again.webp", lossless=True)
    assert {".jpg", ".webp", ".png", ".bmp", ".tiff"} <= set(IMAGE_SUFFIXES)

    folder = predict([photos], bundle, **FACE_ONLY)
    assert folder.exit_code == 0 and not folder.failures
    assert sorted(pathlib.Path(r["input"]).name for r in folder.results) == sorted([*names, "again.webp"])
    for result in folder.results:
        (utterance,) = result["utterances"]
        assert utterance["modalities"]["visual"]["present"] and utterance["modalities"]["visual"]["frames"] == 1
        assert len(result["per_second"]) == 1 and utterance["fused"]["modalities_used"] == ["visual"]
    by_name = predict([photos / names[0]], bundle, **FACE_ONLY).results[0]
    from_folder = next(r for r in folder.results if r["input"].endswith(names[0]))
    assert from_folder["utterances"] == by_name["utterances"]  # the same path as one photo given by name
    lossless = next(r for r in folder.results if r["input"].endswith(".webp"))
    # The same pixels as webp (PIL's and FFmpeg's JPEG decoders differ by a grey level here and there).
    assert lossless["per_second"][0]["probs"] == pytest.approx(by_name["per_second"][0]["probs"], abs=5e-3)
    globbed = predict([str(photos / "*.webp")], bundle, **FACE_ONLY)
    assert [pathlib.Path(r["input"]).name for r in globbed.results] == ["again.webp"]


def test_a_giant_photo_is_refused_from_its_header_and_the_other_photo_predicted(bundle, tmp_path):
    if not FACES.is_dir():
        pytest.skip(f"real data not found at {FACES}")
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "panorama.png").write_bytes(  # a 10000×9000 header over a few bytes: never decoded
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 10_000, 9_000, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + chunk(b"IEND", b""))
    face = sorted(FACES.glob("*.jpg"))[0]
    shutil.copy(face, photos / face.name)
    run = predict([photos], bundle, **FACE_ONLY)
    assert run.exit_code == EXIT_PARTIAL and [pathlib.Path(r["input"]).name for r in run.results] == [face.name]
    ((path, reason),) = run.failures
    assert path.endswith("panorama.png")
    assert "10000×9000 (90 megapixels) is over the 40-megapixel limit" in reason


def test_a_broken_link_is_a_failure_and_the_good_clip_of_the_folder_is_predicted(bundle, tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    shutil.copy(CLIP, folder / CLIP.name)
    (folder / "moved.mp4").symlink_to(tmp_path / "elsewhere" / "moved.mp4")
    (folder / "notes.txt").symlink_to(tmp_path / "nothing.txt")  # not media: not an input at all
    run = predict([folder, folder / "moved.mp4"], bundle, **FACE_ONLY)
    assert run.exit_code == EXIT_PARTIAL
    assert [pathlib.Path(r["input"]).name for r in run.results] == [CLIP.name]
    reason = f"broken link (to {tmp_path / 'elsewhere' / 'moved.mp4'}, which does not exist)"
    assert run.failures == [(str(folder / "moved.mp4"), reason)] * 2


# ---- 6: truncated video ---------------------------------------------------------------------------------


def test_a_truncated_video_is_predicted_with_a_warning_in_the_json_and_on_the_terminal(bundle, tmp_path):
    cut = tmp_path / "cut.flv"
    data = CLIP.read_bytes()
    cut.write_bytes(data[:int(0.3 * len(data))])  # the first 30 %: the header still declares 2.235 s
    run = predict([cut, CLIP], bundle, out_dir=tmp_path / "out", **FACE_ONLY)
    assert run.exit_code == 0 and not run.failures
    truncated, whole = run.results
    (warning,) = truncated["warnings"]
    assert re.fullmatch(r"truncated: decoded (0\.9\d|1\.0\d) s of 2\.2\d s", warning), warning
    assert truncated["duration_s"] < 1.1 and whole["warnings"] == [] and whole["duration_s"] >= 2.0
    assert json.loads((tmp_path / "out" / "cut.json").read_text())["warnings"] == [warning]
    console = Console(record=True, width=100)
    console.print(summary_table(run.results, run.failures))
    assert f"warning cut.flv: {warning}" in console.export_text()


# ---- 9: damaged bundle ----------------------------------------------------------------------------------


def _damaged_bundle(tmp_path: pathlib.Path, name: str, damage) -> pathlib.Path:
    copy = tmp_path / "bundle"
    shutil.copytree(DEFAULT_BUNDLE, copy)
    path = copy / name
    path.write_bytes(damage(path.read_bytes()))
    return copy


@pytest.mark.parametrize("name,damage,expected", [
    (MANIFEST, lambda b: b[:len(b) // 2], "not valid JSON .*: truncated or edited"),
    ("visual.safetensors", lambda b: b[:100_000], "100,000 bytes, the manifest records 4,252,404: truncated"),
    ("audio.safetensors", lambda b: b[:-1] + bytes([b[-1] ^ 1]), "sha256 differs from the manifest's"),
    ("audio_normalization.npz", lambda b: b[:-1] + bytes([b[-1] ^ 1]), "sha256 differs from the manifest's"),
])
def test_a_damaged_bundle_file_is_a_usage_error_naming_it(name, damage, expected, tmp_path, capsys):
    copy = _damaged_bundle(tmp_path, name, damage)
    with pytest.raises(CorruptBundleError, match=expected):
        load_bundle(copy)
    code, _, err = _emohd(["predict", CLIP, "--bundle", copy, "--out", tmp_path / "out"], capsys)
    assert code == EXIT_USAGE and err.count("\n") == 1
    assert err.startswith(f"emohd: error: {copy / name}: ")  # the file and what is wrong with it


# ---- 14: emohd eval without its checkpoint --------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--config.checkpoint", "--config.workdir"])
def test_eval_without_its_checkpoint_fails_before_preparing_shards(flag, tmp_path, capsys):
    code, _, err = _emohd(["eval", "--config", "meld_text:sample", f"{flag}={tmp_path / 'no_run'}",
                           f"--config.data.root={DATA}", f"--config.data.shards={tmp_path / 'shards'}",
                           f"--config.report_dir={tmp_path / 'report'}"], capsys)
    assert code == EXIT_USAGE
    assert f"emohd: error: {flag}: {tmp_path / 'no_run'}: no checkpoint found" in err
    assert not any(tmp_path.glob("shards*")) and not (tmp_path / "report").exists()


# ---- 15: what a person reads ----------------------------------------------------------------------------


def _probs(label: str, p: float) -> list[float]:
    probs = [round((1 - p) / 6, 4)] * 7
    probs[EMOTIONS.index(label)] = p
    return probs


def _result(name: str, duration: float, utterances: list[dict], per_second=(), per_patch=()) -> dict:
    return {"schema": "emohd.predict/1", "input": name, "duration_s": duration, "classes": list(EMOTIONS),
            "fusion": {"rule": "stack", "calibrated": True, "modalities": ["visual", "audio", "text"]},
            "requested": ["visual", "audio", "text"], "warnings": [], "utterances": utterances,
            "per_second": list(per_second), "per_patch": list(per_patch)}


def _utterance(i, start, end, transcript, visual, audio, text, fused):
    present = {m: e for m, e in (("visual", visual), ("audio", audio), ("text", text))}
    entries = {m: {"present": True, "probs": _probs(e, 0.7), "label": e} if e in EMOTIONS
               else {"present": False, "reason": e} for m, e in present.items()}
    used = [m for m, e in entries.items() if e["present"]]
    return {"index": i, "start_s": start, "end_s": end, "source": "asr", "transcript": transcript,
            "modalities": entries, "fused": {"label": fused, "scores": _probs(fused, 0.62) if fused else None,
                                             "modalities_used": used, **({} if fused else {"reason": "no evidence"})}}


@pytest.fixture(scope="module")
def audio_only() -> dict:
    """An audio file: 3 s, words then a pause without speech."""
    no_video = "no video stream (an audio-only file, or a container left empty)"
    return _result("1002_DFA_SAD_XX.mp3", 3.0, [
        _utterance(0, 0.0, 2.0, "Don't forget a jacket.", no_video, "sadness", "happiness", "sadness"),
        _utterance(1, 2.0, 3.0, None, no_video, "no speech", "no speech recognised", None)],
        per_patch=[{"start_s": 0.0, "end_s": 0.96, "probs": _probs("sadness", 0.7), "label": "sadness"}])


@pytest.fixture(scope="module")
def video() -> dict:
    return _result("1001_DFA_HAP_XX.flv", 2.0, [
        _utterance(0, 0.0, 2.0, "It's eleven o'clock.", "happiness", "surprise", "neutral", "happiness")],
        per_second=[{"t": 0.5, "probs": _probs("happiness", 0.7), "label": "happiness"}])


@pytest.mark.parametrize("width,whole_names", [(80, False), (100, True), (200, True)])
def test_the_table_fits_the_terminal_without_breaking_a_word_and_shows_the_fused_score(width, whole_names, audio_only,
                                                                                       video):
    console = Console(record=True, width=width)
    console.print(summary_table([video, audio_only], [("/data/gone.mp4", "broken link (to /x.mp4)")]))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= width
    words = set(re.findall(r"[\w'.]+", " ".join([
        "emohd predict input time (s) transcript V face A voice T words fused warning failed gone.mp4 broken link "
        "to /x.mp4 no video stream an audio-only file or a container left empty no speech recognised evidence",
        video["input"], audio_only["input"], "It's eleven o'clock. Don't forget a jacket.",
        *EMOTIONS, *(e[:3] for e in EMOTIONS), "= 0.70 0.62 0.0–2.0 2.0–3.0"])))
    for token in re.findall(r"[\w'.]+…?", text):
        assert token in words or token.endswith("…"), f"{token!r} is a broken word in\n{text}"
    # The fused decision with its fused score; whole class names where they fit, else three letters and a legend.
    assert ("happiness 0.62" if whole_names else "hap 0.62") in text
    assert ("sadness 0.62" if whole_names else "sad 0.62") in text
    assert ("hap = happiness" in text) != whole_names
    assert "video" in text and "stream" not in text  # an audio file's face: "no video", not the full reason


def _figure_texts(result: dict, tmp_path: pathlib.Path, monkeypatch) -> list[str]:
    """Every text drawn on `result`'s timeline PNG."""
    drawn = []
    save = Figure.savefig

    def record(self, *args, **kwargs):
        drawn.extend(t.get_text() for t in self.findobj(FigureText))
        return save(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", record)
    write_result(result, tmp_path, stem="timeline")
    return drawn


def test_the_timeline_says_no_video_for_an_audio_file_and_has_a_words_row(audio_only, video, tmp_path, monkeypatch):
    drawn = _figure_texts(audio_only, tmp_path / "audio", monkeypatch)
    assert "no video" in drawn and "no face found" not in drawn
    assert {"face", "voice", "words", "fused"} <= set(drawn) and "Don't forget a jacket." in drawn
    drawn = _figure_texts(video, tmp_path / "video", monkeypatch)
    assert "no video" not in drawn and "neutral" in drawn  # the words tower's decision in its row


def test_the_csv_has_words_columns_and_a_reason_for_every_empty_cell(audio_only, tmp_path):
    with open(write_result(audio_only, tmp_path, stem="audio")["csv"], newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(CSV_COLUMNS) and len(rows) == math.ceil(audio_only["duration_s"])
    assert [r["words_label"] for r in rows] == ["happiness", "happiness", ""]
    assert float(rows[0]["words_happiness"]) == 0.7 and rows[2]["words_reason"] == "no speech recognised"
    assert all(r["face_label"] == "" and r["face_reason"].startswith("no video stream") for r in rows)
    assert [r["audio_reason"] for r in rows] == ["", "no voice patch at this second", "no speech"]
    assert [r["fused_label"] for r in rows] == ["sadness", "sadness", ""] and rows[2]["fused_reason"] == "no evidence"
    for row in rows:  # every empty label has its reason, every label none
        for prefix in ("face", "audio", "words", "fused"):
            assert bool(row[f"{prefix}_label"]) != bool(row[f"{prefix}_reason"]), (prefix, row)


def test_the_package_docstring_describes_what_predict_returns():
    described = set(re.findall(r"\brun\.(\w+)", emohd_jax.__doc__))
    assert described >= {"results", "failures", "exit_code"}
    assert all(hasattr(PredictRun([], []), name) for name in described)
