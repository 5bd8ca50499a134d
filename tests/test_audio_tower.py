"""Audio tower: RAVDESS → log-mel patch records, skips through `prepare`, augmentation, a tiny train + held-out eval."""

import json

import numpy as np
import pytest

from emohd_jax.audio.extract import AudioExtractor
from data_pipeline.prepare import parse_actors, prepare
from emohd_jax.extract import Utterance
from data_pipeline.sources.ravdess import read_ravdess
from emohd_jax.audio.log_mel import num_patches
from emohd_jax.classes import CLASS_INDEX
from emohd_jax.audio.log_mel_augment import LogMelAugment
from tests.train_harness import config_flags

RAVDESS_FILES = ("03-01-05-02-02-01-17.flac", "03-01-01-01-01-01-17.flac", "03-01-08-02-01-02-17.flac")


def _video_without_audio(path) -> None:
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 40 * i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def test_parse_actors():
    assert parse_actors("1-3,7") == [1, 2, 3, 7] and parse_actors(21) == [21]


def test_extractor_gives_one_record_per_patch(data_root):
    sf = pytest.importorskip("soundfile")
    utterances, _ = read_ravdess(data_root / "ravdess", actors=[17], split="dev")
    chosen = [u for u in utterances if u.audio.endswith(RAVDESS_FILES)]
    assert len(chosen) == 3
    extractor = AudioExtractor()
    for utterance in chosen:
        samples = sf.info(utterance.audio).frames  # these files are 16 kHz already
        records = extractor.records(utterance)
        assert len(records) == num_patches(samples) >= 3
        assert [r["patch_index"] for r in records] == list(range(len(records)))
        assert {r["uid"] for r in records} == {utterance.uid} and {r["label"] for r in records} == {utterance.label}
        assert all(r["patches"].shape == (96, 64) and r["patches"].dtype == np.float32 for r in records)
        assert records[0]["seconds"] == pytest.approx(samples / 16000)
    assert [u.label for u in chosen] == [CLASS_INDEX[c] for c in ("neutral", "anger", "surprise")]  # sorted by name


def test_speech_window_keeps_whole_patches_around_the_speech():
    rate = 16000
    t = np.arange(int(1.5 * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    wave = np.concatenate([np.full(rate, 1e-5), tone, np.full(int(1.5 * rate), 1e-5)]).astype(np.float32)
    window = wave[AudioExtractor(trim_db=40).speech_window(wave)]
    assert num_patches(window.size) == 2 and num_patches(wave.size) == 4
    assert np.square(window, dtype=np.float64).sum() >= 0.99 * np.square(tone).sum()  # the whole tone is inside


def test_prepare_skips_silence_and_video_without_audio(tmp_path, data_root):
    sf = pytest.importorskip("soundfile")
    silence, film = tmp_path / "silence.wav", tmp_path / "film.mp4"
    sf.write(silence, np.zeros(16000, np.int16), 16000, subtype="PCM_16")
    _video_without_audio(film)
    real = data_root / "ravdess" / "Actor_17" / RAVDESS_FILES[0]
    utterances = [Utterance(uid="real", dataset="t", split="test", label=2, audio=str(real)),
                  Utterance(uid="silent", dataset="t", split="test", label=0, audio=str(silence)),
                  Utterance(uid="film", dataset="t", split="test", label=1, video=str(film))]
    manifest = prepare({"test": utterances}, AudioExtractor(), tmp_path / "shards")
    kinds = {s["item"]: s["kind"] for s in manifest["skips"]["skipped"]}
    assert kinds == {"silent": "silence", "film": "no_audio_track"}
    reasons = " ".join(s["reason"] for s in manifest["skips"]["skipped"])
    assert "silence.wav" in reasons and "film.mp4" in reasons
    counts = manifest["counts"]["test"]
    assert counts["utterances"] == 1 and counts["records"] == num_patches(sf.info(real).frames)


def test_augment_is_seeded_and_gain_is_exact():
    rng = np.random.default_rng(0)
    patch = np.log(rng.uniform(0.0, 5.0, (96, 64)) + 0.01).astype(np.float32)  # [frames, mel] log-mel
    record = {"uid": b"x", "label": 3, "patches": patch}
    augment = LogMelAugment()
    a = augment.random_map(record, np.random.default_rng(7))
    b = augment.random_map(record, np.random.default_rng(7))
    c = augment.random_map(record, np.random.default_rng(8))
    np.testing.assert_array_equal(a["patches"], b["patches"])
    assert a["patches"].shape == (96, 64) and a["patches"].dtype == np.float32
    assert np.abs(a["patches"] - patch).mean() > 0.05 and not np.array_equal(a["patches"], c["patches"])
    assert a["label"] == 3 and record["patches"] is patch  # the stored record is not modified
    gain_only = LogMelAugment(max_shift=0, gain_db=6.0, noise_db=(-400.0, -400.0), time_masks=0, freq_masks=0)
    out = gain_only.random_map(record, np.random.default_rng(1))["patches"]
    ratio = (np.exp(out.astype(np.float64)) - 0.01) / (np.exp(patch.astype(np.float64)) - 0.01)
    assert ratio.std() / ratio.mean() < 1e-3 and 10 ** (-6 / 20) <= ratio.mean() <= 10 ** (6 / 20)


def _tiny_ravdess(root, data_root, files_per_actor: dict[int, int]):
    """ROOT/ravdess/Actor_XX with links to the first non-calm files of each real actor."""
    for actor, n in files_per_actor.items():
        folder = root / "ravdess" / f"Actor_{actor:02d}"
        folder.mkdir(parents=True)
        real = sorted((data_root / "ravdess" / f"Actor_{actor:02d}").glob("03-01-0[1345678]-*.flac"))
        for path in real[::max(1, len(real) // n)][:n]:
            (folder / path.name).symlink_to(path)


@pytest.mark.slow  # ≈ 50 s of CPU (three jit compiles, two prepares); minutes when the cores are shared
def test_two_step_training_and_held_out_eval(tmp_path, data_root):
    from emohd_jax.run_config import load_config
    from emohd_jax.cli import run_eval, run_prepare
    from emohd_jax.train.trainer import train_and_evaluate

    _tiny_ravdess(tmp_path, data_root, {1: 8, 2: 4, 3: 3})
    settings = {"data.root": tmp_path, "data.actors.train": "1", "data.actors.dev": "2",
                "data.shards": tmp_path / "shards", "workdir": tmp_path / "run", "report_dir": tmp_path / "report",
                "model.width": 0.25, "train.batch_size": 8, "train.num_steps": 2, "train.eval_every": 2,
                "train.checkpoint_every": 2, "train.log_every": 1, "eval.batch_size": 8, "optim.warmup_steps": 1}
    config = load_config(config_flags("ravdess_audio.py", settings))
    run_prepare(config)
    result = train_and_evaluate(config)
    assert (tmp_path / "run" / "checkpoints" / "latest" / "2").is_dir()
    assert [h["step"] for h in result["history"]] == [2]  # dev clips evaluated at the end
    # Held-out actors, not in the training shards: prepared into `<shards>-heldout-<key>` on demand and evaluated.
    held_out = load_config(config_flags("ravdess_audio.py", {
        **settings, "data.split": "heldout", "data.actors.heldout": "3", "checkpoint": tmp_path / "run",
        "report_dir": tmp_path / "heldout_report"}))
    run_eval(held_out)
    (heldout_shards,) = tmp_path.glob("shards-heldout-*")
    manifest = json.loads((heldout_shards / "manifest.json").read_text())
    assert manifest["counts"]["heldout"]["utterances"] == 3
    predictions = json.loads((tmp_path / "heldout_report" / "predictions.json").read_text())
    assert len(predictions["uid"]) == 3 and all(u.endswith("-03") for u in predictions["uid"])
    assert json.loads((tmp_path / "heldout_report" / "metrics.json").read_text())["split"] == "heldout"
