"""The Whisper voice tower: head masking and layer weights, features of real clips, prepare → train on real clips."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from emohd_jax.classes import NUM_CLASSES
from emohd_jax.models.voice_head import VoiceHead, frame_mask


def _head(seed: int = 0) -> VoiceHead:
    return VoiceHead(7, 32, NUM_CLASSES, hidden=16, attention_hidden=8, rngs=nnx.Rngs(seed))


def test_masked_frames_do_not_change_the_logits_and_layer_weights_sum_to_one():
    head = _head()
    head.layer_logits[...] = jnp.asarray([0.5, -1.0, 2.0, 0.0, 0.3, -0.2, 1.1])
    rng = np.random.default_rng(0)
    hidden = rng.standard_normal((2, 12, 7, 32)).astype(np.float32)
    mask = np.arange(12)[None, :] < np.asarray([[7], [12]])
    mean, std = rng.standard_normal((7, 32)).astype(np.float32), rng.uniform(0.5, 2, (7, 32)).astype(np.float32)
    garbage = hidden.copy()
    garbage[0, 7:] = 1e30 * rng.standard_normal((5, 7, 32))  # huge values where the mask says padding
    garbage[0, 9] = np.nan
    clean = head(hidden, mask, mean, std)
    assert np.array_equal(np.asarray(clean), np.asarray(head(garbage, mask, mean, std)))  # exact
    alone = head(hidden[:1, :7], mask[:1, :7], mean, std)  # the same clip without padding at all
    np.testing.assert_allclose(np.asarray(alone[0]), np.asarray(clean[0]), atol=1e-5)
    weights = np.asarray(head.layer_weights())
    assert weights.shape == (7,) and abs(weights.sum() - 1.0) < 1e-6 and weights.argmax() == 2


def test_frame_mask_finds_the_zero_padding():
    hidden = np.ones((2, 5, 7, 4), np.float16)
    hidden[1, 3:] = 0
    assert frame_mask(jnp.asarray(hidden)).tolist() == [[True] * 5, [True, True, True, False, False]]


@pytest.mark.slow
def test_features_of_a_real_clip_batched_equal_alone(data_root):
    from data_pipeline.sources.ravdess import read_ravdess
    from emohd_jax.audio.whisper_features import WhisperFeatureExtractor

    utterances, _ = read_ravdess(data_root / "ravdess", actors=[17], split="ravdess_dev")
    extractor = WhisperFeatureExtractor()
    waves = [extractor.load(u) for u in utterances[:2]]
    together = extractor.features(waves)
    for wave, batched in zip(waves, together):
        (alone,) = extractor.features([wave])
        assert batched.shape == alone.shape == (-(-(wave.size // 160) // 4), 7, 512)  # 25 Hz after pooling
        np.testing.assert_allclose(batched.astype(np.float32), alone.astype(np.float32), atol=2e-2)
    records = extractor.records(dataclasses.replace(utterances[0], split="ravdess_dev_aug"))
    assert [int(r["view"]) for r in records] == [1, 2] and records[0]["hidden"].dtype == np.float16
    assert not np.array_equal(records[0]["hidden"][:10], records[1]["hidden"][:10])  # two different views


@pytest.mark.slow
def test_prepare_then_train_on_real_clips(data_root, tmp_path):
    """Eight RAVDESS and TESS clips through prepare (clean + augmented splits) and a few training steps."""
    from configs.voice_whisper import get_config
    from data_pipeline.prepare import prepare
    from data_pipeline.sources.ravdess import read_ravdess
    from data_pipeline.sources.tess import read_tess
    from emohd_jax.train.trainer import evaluate_shards, make_task, train_and_evaluate

    config = get_config("ravdess,global")
    config.data.shards, config.workdir = str(tmp_path / "shards"), str(tmp_path / "run")
    config.data.train_split, config.data.eval_split = "ravdess_train+ravdess_train_aug", "tess"
    config.train.num_steps, config.train.batch_size, config.train.checkpoint_every = 4, 4, 4
    config.eval.batch_size = 4
    ravdess, _ = read_ravdess(data_root / "ravdess", actors=[1], split="ravdess_train")
    tess, _ = read_tess(data_root / "tess", split="tess")
    splits = {"ravdess_train": ravdess[::15], "tess": tess[::350]}
    splits["ravdess_train_aug"] = [dataclasses.replace(u, split="ravdess_train_aug") for u in ravdess[::15]]
    task = make_task(config)
    manifest = prepare(splits, task.extractor(), config.data.shards)
    assert manifest["counts"]["ravdess_train_aug"]["records"] == config.features.views * 4 == 4
    result = train_and_evaluate(config)
    assert result["steps"] == 4 and len(result["history"]) == 2  # 8 records / batch 4: an epoch is 2 steps
    metrics, predictions = evaluate_shards(config, config.data.shards, "tess")
    assert len(predictions["uid"]) == 4 and np.allclose(np.sum(predictions["probs"], axis=1), 1, atol=1e-3)
    saved = np.load(tmp_path / "run" / "voice_normalization.npz")
    mean, std = task.global_normalization()  # RAVDESS actor 1's clean frames only
    np.testing.assert_allclose(saved["mean"], mean)
    assert saved["mean"].shape == (7, 512) and (saved["std"] > 0).all()
    assert abs(saved["layer_weights"].sum() - 1) < 1e-5 and 0 <= metrics["accuracy"] <= 100
