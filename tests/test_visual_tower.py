"""The visual tower through the generic trainer: FER2013 class folders (stage 1) and CREMA-D video faces (stage 2)."""

import json
import pathlib
import shutil

import av
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from data_pipeline import shards
from emohd_jax.vision.extract import FACE_SHAPES, ImageExtractor, load_image
from emohd_jax.extract import Utterance
from emohd_jax import input_pipeline
from emohd_jax.vision import tta as face_tta
from emohd_jax.cli import run_eval, run_prepare, run_train
from emohd_jax.run_config import load_config
from emohd_jax.models import mini_xception
from emohd_jax import checkpointing
from emohd_jax.train import sharding
from emohd_jax.vision.augment import FaceAugment
from emohd_jax.towers import ImageTask
from emohd_jax.train.trainer import make_task
from emohd_jax.train.trainer import (
    create_train_state,
    predict_step,
    split_model,
    train_step,
)
from emohd_jax.vision.video_io import sample_frames
from tests.train_harness import REPO

FER_CLASSES = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")


def _fer_images(data_root: pathlib.Path, split: str, per_class: int) -> dict[str, list[pathlib.Path]]:
    return {c: sorted((data_root / "fer2013" / split / c).iterdir())[:per_class] for c in FER_CLASSES}


def _fer_args(root: pathlib.Path, **overrides) -> list[str]:
    settings = {"data.root": root, "data.shards": root / "shards", "workdir": root / "run",
                "report_dir": root / "report", "train.batch_size": 8, "train.num_steps": 2,
                "train.checkpoint_every": 1, "train.log_every": 1, "eval.batch_size": 16, "optim.warmup_steps": 1,
                "eval.flip": False, "eval.shift": 0,
                **overrides}
    return [f"--config={REPO / 'configs' / 'fer_visual.py'}", *(f"--config.{k}={v}" for k, v in settings.items())]


@pytest.fixture(scope="module")
def tiny_fer(tmp_path_factory, data_root):
    """ROOT/fer2013/{train,val}/<class>/ with a few real images per class, prepared into shards."""
    root = tmp_path_factory.mktemp("fer")
    for split, n in (("train", 4), ("val", 2)):
        for name, images in _fer_images(data_root, split, n).items():
            (root / "fer2013" / split / name).mkdir(parents=True)
            for image in images:
                shutil.copy(image, root / "fer2013" / split / name)
    run_prepare(load_config(_fer_args(root)))
    return root


def test_image_extractor_stores_what_the_model_reads(data_root):
    image = _fer_images(data_root, "val", 1)["happy"][0]
    utt = Utterance(uid="u", dataset="fer2013", split="val", label=1, image=str(image))
    (record,) = ImageExtractor("mini_xception").records(utt)
    assert record["face"].shape == FACE_SHAPES["mini_xception"] == (64, 64, 1) and record["face"].dtype == np.uint8
    # The shard keeps uint8; normalising it on device equals the fer-compatible preprocessing exactly.
    np.testing.assert_array_equal(mini_xception.normalize(record["face"][None]),
                                  mini_xception.preprocess_faces(load_image(str(image))[None]))
    (rgb,) = ImageExtractor("resnet50").records(utt)
    assert rgb["face"].shape == (224, 224, 3) and rgb["face"].dtype == np.uint8
    np.testing.assert_array_equal(rgb["face"][..., 0], rgb["face"][..., 2])  # gray source → equal channels


def test_augment_is_deterministic_and_keeps_shape():
    face = np.random.default_rng(0).integers(0, 256, (64, 64, 1), dtype=np.uint8)
    augment = FaceAugment()
    a = augment.random_map({"face": face, "label": 3}, np.random.default_rng(7))
    b = augment.random_map({"face": face, "label": 3}, np.random.default_rng(7))
    c = augment.random_map({"face": face, "label": 3}, np.random.default_rng(8))
    np.testing.assert_array_equal(a["face"], b["face"])
    assert not np.array_equal(a["face"], c["face"]) and a["label"] == 3
    assert a["face"].shape == face.shape and a["face"].dtype == np.uint8
    flip_only = FaceAugment(rotate_deg=0, shift=0, zoom=0, brightness=0, contrast=0)
    outs = [flip_only.random_map({"face": face}, np.random.default_rng(s))["face"] for s in range(8)]
    assert all(np.array_equal(o, face) or np.array_equal(o, face[:, ::-1]) for o in outs)
    assert any(np.array_equal(o, face[:, ::-1]) for o in outs) and any(np.array_equal(o, face) for o in outs)


def test_two_step_train_writes_checkpoint_and_heldout_eval_maps_labels(tiny_fer, tmp_path, capsys):
    config = load_config(_fer_args(tiny_fer, **{"train.eval_every": 1}))
    metrics = run_train(config)
    assert (tiny_fer / "run" / "checkpoints" / "latest" / "2").is_dir()
    assert json.loads((tiny_fer / "report" / "metrics.json").read_text())["n"] == 14 == metrics["n"]
    # The best checkpoint is the first evaluation with the highest `train.select_on` (accuracy for FER2013).
    out = capsys.readouterr().out
    history, _ = json.JSONDecoder().raw_decode(out[out.index("[\n"):])
    assert [h["step"] for h in history] == [1, 2]
    best = json.loads((tiny_fer / "run" / "checkpoints" / "best" / "best_metrics.json").read_text())
    assert best["step"] == max(history, key=lambda h: (h["accuracy"], -h["step"]))["step"]
    assert metrics["accuracy"] == pytest.approx(best["accuracy"])
    # A held-out set whose folder names differ, mapped by config, through the documented eval command.
    heldout = tmp_path / "heldout"
    renamed = {"happy": "joy", "sad": "sorrow", "angry": "rage"}
    for fer_name, name in renamed.items():
        shutil.copytree(tiny_fer / "fer2013" / "val" / fer_name, heldout / "fer2013" / "test" / name)
    (heldout / "fer2013" / "test" / "unused").mkdir()
    label_map = "joy=happiness,sorrow=sadness,rage=anger,unused="
    args = _fer_args(heldout, **{"data.split": "test", "data.label_map": label_map, "checkpoint": tiny_fer / "run",
                                 "data.shards": heldout / "shards"})
    result = run_eval(load_config(args))
    assert result["n"] == 6 and set(result["per_class"]) >= {"happiness", "sadness", "anger"}


@pytest.fixture(scope="module")
def fer_state(tiny_fer):
    config = load_config(_fer_args(tiny_fer))
    task = make_task(config)
    mesh = sharding.make_mesh(1)
    model, state, _, tx = create_train_state(task, config, mesh, 10)
    source = shards.open_split(config.data.shards, "train")
    batch = input_pipeline.collate([source[i] for i in range(8)])
    return task, model, state, tx, {"face": batch["face"], "label": batch["label"]}


def test_batchnorm_uses_batch_stats_in_training_and_running_stats_in_eval(fer_state):
    task, model, state, tx, batch = fer_state
    new_state, _ = jax.jit(lambda s, b: train_step(s, b, model, task=task, tx=tx, weights=jnp.ones(7),
                                                   label_smoothing=0.0, seed=0))(state, batch)
    before, after = jax.tree.leaves(state.other), jax.tree.leaves(new_state.other)
    assert any(not np.allclose(a, b) for a, b in zip(before, after))  # running statistics moved
    # Eval: a row's prediction does not depend on the rest of the batch (running statistics, no batch stats).
    whole = predict_step(state.params, state.other, {"face": batch["face"]}, model, task=task)
    alone = predict_step(state.params, state.other, {"face": batch["face"][:1]}, model, task=task)
    np.testing.assert_allclose(whole[:1], alone, atol=1e-5)
    module = nnx.merge(model.graphdef, state.params, model.rng_state, state.other)
    x = task.inputs(jnp.asarray(batch["face"]))
    assert not np.allclose(module(x, train=True)[:1], module(x[:1], train=True), atol=1e-4)


def test_flip_and_shift_averaging_is_the_mean_over_views(fer_state):
    task, model, state, _, batch = fer_state
    module = nnx.merge(model.graphdef, state.params, model.rng_state, state.other)
    faces = jnp.asarray(batch["face"])
    x = task.inputs(faces)
    expected = (jax.nn.softmax(module(x)) + jax.nn.softmax(module(x[:, :, ::-1]))) / 2
    task.flip = True
    try:
        averaged = jax.nn.softmax(task.logits(module, batch, train=False))
        task.shift = 2
        shifted = jax.nn.softmax(task.logits(module, batch, train=False))
    finally:
        task.flip, task.shift = False, 0
    views = face_tta.views(faces, flip=True, shift=2)  # pixel moves are checked in test_face_tta
    np.testing.assert_allclose(shifted, np.mean([jax.nn.softmax(module(task.inputs(v))) for v in views], 0),
                               atol=1e-6)
    assert not np.allclose(shifted, averaged, atol=1e-4)
    np.testing.assert_allclose(averaged, expected, atol=1e-6)
    assert not np.allclose(averaged, jax.nn.softmax(task.logits(module, batch, train=False)), atol=1e-4)


def _write_video(path: pathlib.Path, frames: np.ndarray, fps: int = 10) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def _write_audio_only(path: pathlib.Path, seconds: float = 1.0, rate: int = 16000) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate)
        t = np.arange(int(seconds * rate)) / rate
        wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
        frame = av.AudioFrame.from_ndarray(wave, format="fltp", layout="mono")
        frame.sample_rate = rate
        container.mux(stream.encode(frame))
        container.mux(stream.encode())


@pytest.fixture(scope="module")
def cremad_run(tmp_path_factory, data_root):
    """The 3 real CREMA-D videos plus bad media, prepared with MTCNN, 2 head-only train steps, vote eval."""
    root = tmp_path_factory.mktemp("cremad")
    clips = root / "cremad"
    clips.mkdir()
    videos = sorted((data_root / "cremad").glob("*.flv"))
    for video in videos:
        shutil.copy(video, clips)
    shutil.copy(data_root / "cremad" / "1002_DFA_ANG_XX.mp3", clips)   # audio only: no video for this clip
    (clips / "1001_IEO_ANG_XX.flv").write_bytes(b"FLV\x01 this is not a video" * 40)  # corrupt
    _write_audio_only(clips / "1001_IEO_SAD_XX.mp4")                   # a video container without video
    _write_video(clips / "1001_IEO_HAP_XX.mp4", np.full((30, 120, 160, 3), 128, np.uint8))  # blank wall, 3 s
    settings = {"data.root": root, "data.shards": root / "shards", "workdir": root / "run",
                "report_dir": root / "report", "data.actors.train": "1001-1002", "data.prepare_splits": "('train',)",
                "data.eval_split": "train", "data.split": "train", "train.batch_size": 4, "train.num_steps": 2,
                "train.checkpoint_every": 1, "train.log_every": 1, "eval.batch_size": 8, "optim.warmup_steps": 1}
    config = load_config([f"--config={REPO / 'configs' / 'cremad_faces.py'}",
                           *(f"--config.{k}={v}" for k, v in settings.items())])
    run_prepare(config)
    run_train(config)
    return root, videos


def test_cremad_video_faces_every_frame_and_per_clip_votes(cremad_run):
    root, videos = cremad_run
    manifest = json.loads((root / "shards" / "manifest.json").read_text())
    frames_per_clip = {f"cremad/{v.stem}": len(sample_frames(v)[0]) for v in videos}
    assert manifest["counts"]["train"]["utterances"] == 3
    assert manifest["counts"]["train"]["records"] == sum(frames_per_clip.values())  # a face in every sampled frame
    source = shards.open_split(root / "shards", "train")
    assert source[0]["face"].shape == (64, 64, 1) and source[0]["face"].dtype == np.uint8
    seconds = {}
    for i in range(len(source)):
        seconds.setdefault(source[i]["uid"].decode(), []).append(int(source[i]["timestamp_s"]))
    assert {uid: sorted(s) for uid, s in seconds.items()} == {uid: list(range(n)) for uid, n in frames_per_clip.items()}
    predictions = json.loads((root / "report" / "predictions.json").read_text())
    assert sorted(predictions["uid"]) == sorted(frames_per_clip)
    assert all(0 <= p < 7 for p in predictions["pred"]) and len(predictions["probs"][0]) == 7
    assert (root / "run" / "checkpoints" / "latest" / "2").is_dir()


def test_bad_media_land_in_the_skip_report_and_the_batch_goes_on(cremad_run):
    root, _ = cremad_run
    skips = {s["item"]: s["kind"] for s in json.loads((root / "shards" / "manifest.json").read_text())["skips"]["skipped"]}
    assert skips == {"cremad/1001_IEO_ANG_XX": "corrupt_media", "cremad/1001_IEO_SAD_XX": "no_video_stream",
                     "cremad/1001_IEO_HAP_XX": "no_face", "cremad/1002_DFA_ANG_XX": "no_video_stream"}


def test_frozen_backbone_does_not_move_in_stage_two(cremad_run):
    root, _ = cremad_run
    import orbax.checkpoint as ocp

    manager = ocp.CheckpointManager(root / "run" / "checkpoints" / "latest", item_names=("state", "data"))
    state = manager.restore(2, args=ocp.args.Composite(state=ocp.args.StandardRestore())).state
    loaded = mini_xception.load()
    kernel = state["params"]["backbone"]["conv1"]["kernel"]
    kernel = np.asarray(kernel["value"] if isinstance(kernel, dict) else kernel)  # orbax keeps the Variable's fields
    np.testing.assert_array_equal(kernel, np.asarray(loaded.conv1.kernel[...]))


def test_stage_two_on_fer_reads_the_stage_one_run_and_its_unpooled_map(tiny_fer, tmp_path):
    """`configs/fer_visual.py:mlp`: the stage-1 run frozen, its 4×4×128 map flattened → BatchNorm → MLP."""
    if not (tiny_fer / "run" / "checkpoints" / "best").is_dir():
        run_train(load_config(_fer_args(tiny_fer)))
    args = _fer_args(tiny_fer, **{"workdir": tmp_path / "mlp", "report_dir": tmp_path / "report",
                                  "model.init": tiny_fer / "run", "train.eval_every": 0})
    config = load_config([args[0].replace("fer_visual.py", "fer_visual.py:mlp"), *args[1:]])
    assert config.task == "feature_mlp" and config.model.features == "map"
    task = make_task(config)
    module = nnx.eval_shape(lambda: task.build_model(nnx.Rngs(0)))
    assert module.head.hidden.kernel.shape == (2048, 512)
    run_train(config)
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["n"] == 14
    # The backbone in the stage-2 checkpoint is the stage-1 run's best, unchanged.
    def best_weights(module, workdir):
        _, params, _, other = split_model(module)
        return checkpointing.restore_weights(workdir, {"params": params, "other": other})

    stage2 = best_weights(module, tmp_path / "mlp")
    stage1 = best_weights(nnx.eval_shape(lambda: ImageTask(config).build_model(nnx.Rngs(0))), tiny_fer / "run")
    jax.tree.map(np.testing.assert_array_equal, stage2["params"]["backbone"], stage1["params"])
    jax.tree.map(np.testing.assert_array_equal, stage2["other"]["backbone"], stage1["other"])


def test_unpooled_map_is_only_offered_where_it_is_small():
    config = load_config([f"--config={REPO / 'configs' / 'fer_visual.py'}:mlp", "--config.model.backbone=resnet50"])
    with pytest.raises(ValueError, match="model.features='map' is not available for resnet50"):
        make_task(config)
