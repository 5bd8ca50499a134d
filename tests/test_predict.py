"""The whole system on real media: the shipped bundle, `emohd predict`, bad inputs, long recordings, system eval."""

import csv
import json
import math
import pathlib
import shutil

import av
import numpy as np
import pytest

from emohd_jax.bundle import load_bundle
from emohd_jax.classes import EMOTIONS
from emohd_jax.errors import EXIT_NONE, EXIT_PARTIAL
from emohd_jax.serve.batch import predict
from emohd_jax.serve.predictor import Predictor

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cremad(data_root) -> pathlib.Path:
    return data_root / "cremad"


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor(load_bundle())


def _write_video(path: pathlib.Path, seconds: float, *, frame=None, audio: np.ndarray | None = None) -> None:
    """An mp4 of a still `frame` (default: a grey wall), with `audio` (16 kHz mono) or with no audio track."""
    frame = np.full((120, 160, 3), 128, np.uint8) if frame is None else frame
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=10)
        video.width, video.height, video.pix_fmt = frame.shape[1], frame.shape[0], "yuv420p"
        sound = container.add_stream("aac", rate=16000) if audio is not None else None
        for _ in range(int(seconds * 10)):
            container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(video.encode())
        if sound is not None:
            samples = (np.clip(audio, -1, 1) * 32767).astype(np.int16)[None]
            chunk = 1024
            for start in range(0, samples.shape[1], chunk):
                piece = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, start:start + chunk]),
                                                   format="s16", layout="mono")
                piece.sample_rate = 16000
                container.mux(sound.encode(piece))
            container.mux(sound.encode())


def test_shipped_bundle_builds_the_three_towers():
    bundle = load_bundle()
    assert set(bundle.towers) == {"visual", "audio", "text"}
    assert bundle.manifest["classes"] == list(EMOTIONS)
    total = sum(t["bytes"] for t in bundle.manifest["towers"].values())
    assert total < 20e6 and bundle.manifest["towers"]["text"]["bytes"] <= 3e6  # LoRA adapter + head, not MiniLM
    for modality, tower in bundle.manifest["towers"].items():
        assert np.asarray(tower["dev"]["confusion"]).sum() == tower["dev"]["n"], modality


def test_video_clip_gives_three_modalities_and_an_audio_file_two(predictor, cremad, tmp_path):
    run = predict([cremad / "1001_DFA_ANG_XX.flv", cremad / "1002_DFA_SAD_XX.mp3"], predictor.bundle,
                  out_dir=tmp_path, progress=False)
    assert run.exit_code == 0 and not run.failures
    video, audio = run.results
    (utt,) = video["utterances"]
    assert utt["source"] == "clip" and "jacket" in utt["transcript"]  # "Don't forget a jacket"
    assert all(utt["modalities"][m]["present"] for m in ("visual", "audio", "text"))
    assert utt["modalities"]["visual"]["frames"] == len(video["per_second"]) >= 2
    assert utt["fused"]["label"] in EMOTIONS and len(utt["fused"]["modalities_used"]) == 3
    (utt,) = audio["utterances"]
    assert not utt["modalities"]["visual"]["present"] and "video" in utt["modalities"]["visual"]["reason"]
    assert utt["fused"]["modalities_used"] == ["audio", "text"]
    for stem in ("1001_DFA_ANG_XX", "1002_DFA_SAD_XX"):
        assert json.loads((tmp_path / f"{stem}.json").read_text())["schema"] == "emohd.predict/1"
        assert (tmp_path / f"{stem}.png").stat().st_size > 10_000
        with open(tmp_path / f"{stem}.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        duration = json.loads((tmp_path / f"{stem}.json").read_text())["duration_s"]
        assert len(rows) == math.ceil(duration)


def test_bad_inputs_are_listed_and_the_good_ones_predicted(predictor, cremad, data_root, tmp_path):
    folder = tmp_path / "mixed inputs ünïcødé"
    folder.mkdir()
    shutil.copy(cremad / "1001_DFA_HAP_XX.flv", folder / "good clip é.flv")
    shutil.copy(cremad / "1002_DFA_FEA_XX.mp3", folder / "audio only.mp3")
    (folder / "corrupt.mp4").write_bytes((cremad / "1001_DFA_NEU_XX.flv").read_bytes()[:3000])
    from PIL import Image

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(folder / "picture.png")
    (folder / "picture.png").rename(folder / "picture.mp4")
    (folder / "notes.mp4").write_text("not a video at all\n")
    (folder / "empty.mp4").write_bytes(b"")
    _write_video(folder / "silent wall.mp4", 3.0, audio=np.zeros(3 * 16000, np.float32))
    from emohd_jax.audio.io import load_audio

    speech = load_audio(next((data_root / "ravdess" / "Actor_17").glob("03-01-05-*.flac")))
    _write_video(folder / "speaking wall.mp4", speech.size / 16000, audio=speech)

    run = predict([folder], predictor.bundle, out_dir=tmp_path / "out", progress=False)
    predicted = {pathlib.Path(r["input"]).name for r in run.results}
    failed = {pathlib.Path(path).name: reason for path, reason in run.failures}
    assert predicted == {"good clip é.flv", "audio only.mp3", "speaking wall.mp4"}
    assert set(failed) == {"corrupt.mp4", "picture.mp4", "notes.mp4", "empty.mp4", "silent wall.mp4"}
    assert "silence" in failed["silent wall.mp4"] and "face" in failed["silent wall.mp4"]
    assert run.exit_code == EXIT_PARTIAL
    wall = next(r for r in run.results if r["input"].endswith("speaking wall.mp4"))
    assert "face" in wall["utterances"][0]["modalities"]["visual"]["reason"]
    assert (tmp_path / "out" / "good clip é.json").is_file()
    none = predict([folder / "empty.mp4", folder / "missing.mp4"], predictor.bundle, progress=False)
    assert none.exit_code == EXIT_NONE and len(none.failures) == 2


def test_long_recording_is_split_into_utterances_covering_it(predictor, data_root, tmp_path):
    from emohd_jax.audio.io import load_audio

    clips = sorted((data_root / "ravdess" / "Actor_18").glob("*.flac"))[:24]
    parts = []
    for i, clip in enumerate(clips):
        parts.append(load_audio(clip))
        parts.append(np.zeros(int((1.0 + 4.0 * (i % 3 == 0)) * 16000), np.float32))  # pauses of 1 or 5 s
    parts.insert(12, np.zeros(20 * 16000, np.float32))  # a 20 s stretch with nobody speaking
    import soundfile

    recording = tmp_path / "consultation.wav"
    soundfile.write(recording, np.concatenate(parts), 16000)
    # Blocks of 45 s: the recording is planned as a stream of three blocks and a rest.
    run = predict([recording], predictor.bundle, out_dir=tmp_path, progress=False, block_s=45.0)
    (result,) = run.results
    utterances = result["utterances"]
    assert result["duration_s"] >= 120
    assert utterances[0]["start_s"] == 0 and utterances[-1]["end_s"] == pytest.approx(result["duration_s"], abs=1e-3)
    assert all(a["end_s"] == pytest.approx(b["start_s"]) for a, b in zip(utterances, utterances[1:]))
    assert all(u["end_s"] - u["start_s"] <= 8.0 + 1e-6 for u in utterances)
    spoken = [u for u in utterances if u["source"] == "asr"]
    assert len(spoken) >= 8 and all(u["modalities"]["text"]["present"] for u in spoken)
    assert any(u["source"] == "window" and u["start_s"] >= 40 for u in utterances)  # the silent stretch
    with open(tmp_path / "consultation.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == math.ceil(result["duration_s"])


def test_system_eval_runs_on_a_meld_raw_shaped_tree(cremad, tmp_path):
    from emohd_jax.system_eval import evaluate_system
    from ml_collections import ConfigDict

    clips = tmp_path / "meld" / "MELD.Raw" / "dev_splits_complete"
    clips.mkdir(parents=True)
    rows = [("Don't forget a jacket.", "anger", "ANG"), ("Don't forget a jacket.", "joy", "HAP"),
            ("Don't forget a jacket!", "neutral", "NEU")]
    lines = ["Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime"]
    for turn, (text, emotion, code) in enumerate(rows):
        shutil.copy(cremad / f"1001_DFA_{code}_XX.flv", clips / f"dia0_utt{turn}.mp4")
        lines.append(f'{turn + 1},"{text}",Ann,{emotion},neutral,0,{turn},1,1,00:00:00,00:00:03')
    (tmp_path / "meld" / "dev_sent_emo.csv").write_text("\n".join(lines) + "\n")
    config = ConfigDict({"bundle": "", "calibration": "calibrated", "transcripts": ("asr", "subtitles"),
                         "report_dir": str(tmp_path / "report"),
                         "meld_sub": {"min_prob": 0.95, "max_faces": 1, "min_fraction": 0.5},
                         "data": {"dataset": "meld", "root": str(tmp_path), "split": "dev"}})
    summary = evaluate_system(config)
    for source in ("asr", "subtitles", "asr_meld_sub"):  # one actor alone on screen: MELD-sub keeps all three
        table = summary[source]["calibrated"]["max"]
        assert list(table) == ["V", "A", "T", "V+A", "V+T", "A+T", "V+A+T"]
        assert table["V+A+T"]["coverage"] == table["V+A+T"]["of"] == 3
    assert (tmp_path / "report" / "confusion_asr_V+A+T.png").is_file()


def test_meld_text_column_equals_the_text_towers_own_dev_eval(data_root, tmp_path):
    from emohd_jax.system_eval import evaluate_system
    from ml_collections import ConfigDict

    config = ConfigDict({"bundle": "", "calibration": "calibrated", "transcripts": ("subtitles",),
                         "report_dir": str(tmp_path),
                         "data": {"dataset": "meld", "root": str(data_root), "split": "dev"}})
    summary = evaluate_system(config)
    text_dev = load_bundle().manifest["towers"]["text"]["dev"]
    column = summary["subtitles"]["raw"]["paper"]["T"]
    assert column["coverage"] == text_dev["n"] == 1109
    assert column["weighted_f1"] == pytest.approx(text_dev["weighted_f1"], abs=1e-6)


def test_meld_sub_keeps_clips_with_one_confident_face_in_most_frames():
    from emohd_jax.system_eval import meld_sub_mask
    from ml_collections import ConfigDict

    def result(*frames):  # one utterance's sampled frames: each the detector's probability of every face
        return [np.asarray(f, np.float32) for f in frames]

    options = ConfigDict({"min_prob": 0.95, "max_faces": 1, "min_fraction": 0.5})
    results = [result([0.99], [0.99], [0.99, 0.98]),          # one person, a second face in one frame
               result([0.99, 0.97], [0.99, 0.98], [0.99]),    # two people on screen most of the time
               result([0.99, 0.40], [0.99, 0.30])]            # a second, unsure face does not count
    assert meld_sub_mask(results, options).tolist() == [True, False, True]


def test_a_killed_run_resumes_where_it_stopped(cremad, tmp_path):
    """SIGKILL halfway through a folder: the rerun keeps what was finished and predicts only the rest."""
    import os
    import signal
    import subprocess
    import time

    from tests.train_harness import emohd

    folder = tmp_path / "clips"
    folder.mkdir()
    clips = sorted(cremad.glob("*.flv")) + sorted(cremad.glob("*.mp3"))[:3]
    for clip in clips:
        shutil.copy(clip, folder / clip.name)
    out = tmp_path / "out"
    first = emohd(["predict", str(folder), "--out", str(out), "--quiet"], stdout=subprocess.DEVNULL,
                  stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not len(list(out.glob("*.json"))) >= 2 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")}
    assert 2 <= len(finished) < len(clips)  # killed halfway
    for name in finished:  # a result on disk is whole
        assert json.loads((out / name).read_text())["schema"] == "emohd.predict/1"

    second = emohd(["predict", str(folder), "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                   text=True)
    stdout, stderr = second.communicate(timeout=600)
    assert second.returncode == 0, stderr[-2000:]
    assert f"{len(clips)} predicted ({len(finished)} done by an earlier run" in stdout
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.json") if p.name in finished} == finished
    for clip in clips:
        assert all((out / f"{clip.stem}{suffix}").is_file() for suffix in (".json", ".csv", ".png"))


def test_overwrite_and_same_names_from_two_folders(predictor, cremad, tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        shutil.copy(cremad / "1002_DFA_SAD_XX.mp3", tmp_path / sub / "clip.mp3")
    run = predict([tmp_path / "a", tmp_path / "b"], predictor.bundle, out_dir=tmp_path / "out", progress=False)
    assert not run.resumed and sorted(p.name for p in (tmp_path / "out").glob("clip*.json")) == ["clip-2.json", "clip.json"]
    again = predict([tmp_path / "a", tmp_path / "b"], predictor.bundle, out_dir=tmp_path / "out", progress=False)
    assert len(again.resumed) == 2 and again.results == run.results
    redo = predict([tmp_path / "a"], predictor.bundle, out_dir=tmp_path / "out", progress=False, overwrite=True)
    assert not redo.resumed and len(redo.results) == 1


class _NoRecogniser:
    """A transcriber that fails the test if speech recognition is asked for."""

    def transcribe(self, waves):
        raise AssertionError("ASR ran although the words were not requested")

    segments = transcribe


def test_a_modality_not_requested_costs_nothing_and_is_missing_with_its_reason(cremad):
    predictor = Predictor(load_bundle(), modalities="voice", transcriber=_NoRecogniser())
    prediction = predictor.predict_file(cremad / "1001_DFA_ANG_XX.flv")
    assert predictor.modalities == ("visual", "audio", "text") and prediction.requested == ("audio",)
    assert prediction.present.tolist() == [[False, True, False]]
    assert prediction.reasons == (("not requested", None, "not requested"),)
    assert prediction.transcripts == (None,) and prediction.counts[0, 1] == len(prediction.patch_probs) >= 1
    # No frame decoded, no face detected: the face track never ran.
    assert len(prediction.frame_times) == 0 and predictor.clock.seconds["decode_video"] == 0
    assert predictor.clock.seconds["faces"] == predictor.clock.seconds["visual_tower"] == 0
    assert prediction.fused[0] >= 0  # fused from the voice alone


def test_without_words_a_long_recording_is_cut_by_the_voice_activity_detector(data_root, tmp_path):
    from emohd_jax.audio.io import load_audio

    parts = []
    for clip in sorted((data_root / "ravdess" / "Actor_18").glob("*.flac"))[:8]:
        parts += [load_audio(clip), np.zeros(3 * 16000, np.float32)]
    parts.insert(4, np.zeros(12 * 16000, np.float32))  # a 12 s stretch with nobody speaking
    import soundfile

    soundfile.write(tmp_path / "talk.wav", np.concatenate(parts), 16000)
    predictor = Predictor(load_bundle(), modalities=["face", "voice"], transcriber=_NoRecogniser())
    prediction = predictor.predict_file(tmp_path / "talk.wav")
    assert prediction.duration_s > 40 and predictor.clock.seconds["vad"] > 0
    assert prediction.spans[0, 0] == 0 and prediction.spans[-1, 1] == pytest.approx(prediction.duration_s)
    assert np.allclose(prediction.spans[1:, 0], prediction.spans[:-1, 1])
    sources = list(prediction.sources)
    assert sources.count("vad") >= 8 and "asr" not in sources and "window" in sources  # the silent stretch
    assert all(r[2] == "not requested" for r in prediction.reasons)
    assert all(prediction.present[i, 1] for i, s in enumerate(sources) if s == "vad")  # speech has a voice


def test_predict_imports_no_dataset_library_and_a_rerun_with_nothing_to_do_no_jax(cremad, tmp_path):
    """The serving path (all three modalities on a real clip) never loads TensorFlow or tfds: they are prepare's.
    Run again with its result in --out, it reads the manifest and the result back and imports no JAX at all."""
    import os
    import subprocess
    import sys

    code = ("import sys; from emohd_jax import cli; code = cli.dispatch(sys.argv[1:]); "
            "print('loaded:', sorted({m.split('.')[0] for m in sys.modules} & "
            "{'tensorflow', 'tensorflow_datasets', 'data_pipeline', 'jax', 'flax'})); sys.exit(code)")

    def run() -> str:
        done = subprocess.run([sys.executable, "-c", code, "predict", str(cremad / "1001_DFA_ANG_XX.flv"),
                               "--out", str(tmp_path), "--quiet"], capture_output=True, text=True, timeout=600,
                              env={**os.environ, "JAX_PLATFORMS": "cpu", "HF_HUB_OFFLINE": "1"})
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    assert "loaded: ['flax', 'jax']" in run()
    assert "loaded: []" in run()
    assert json.loads((tmp_path / "run.json").read_text())["skipped_as_finished"]
    (utterance,) = json.loads((tmp_path / "1001_DFA_ANG_XX.json").read_text())["utterances"]
    assert all(utterance["modalities"][m]["present"] for m in ("visual", "audio", "text"))
