"""The voice head's training-only augmentations for unseen corpora: statistics swap and MixStyle."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from emohd_jax.classes import NUM_CLASSES
from emohd_jax.models.voice_head import VoiceHead, mixstyle, swap_statistics


def test_swap_statistics_takes_whole_rows_of_the_table_or_keeps_the_clips_own():
    mean, std = jnp.zeros((64, 3, 4)), jnp.ones((64, 3, 4))
    table_mean = jnp.arange(5, dtype=jnp.float32)[:, None, None] + 1 + jnp.zeros((5, 3, 4))
    table_std = 10 * table_mean
    new_mean, new_std = swap_statistics(jax.random.key(0), mean, std, table_mean, table_std, 0.5)
    rows = np.asarray(new_mean[:, 0, 0]).astype(int)  # 0 = kept, g + 1 = the table's row g
    assert np.array_equal(np.asarray(new_mean), np.broadcast_to(rows[:, None, None], (64, 3, 4)))
    np.testing.assert_array_equal(np.asarray(new_std[:, 0, 0]), np.where(rows > 0, 10.0 * rows, 1.0))
    assert 16 < (rows > 0).sum() < 48 and len(set(rows[rows > 0])) == 5  # about half swapped, every row drawn
    kept, _ = swap_statistics(jax.random.key(0), mean, std, table_mean, table_std, 0.0)
    assert np.array_equal(np.asarray(kept), np.asarray(mean))


def test_mixstyle_moves_the_real_frames_statistics_between_clips_and_leaves_padding_zero():
    rng = np.random.default_rng(0)
    x = np.stack([rng.normal(-3, 0.5, (10, 6)), rng.normal(4, 2.0, (10, 6))]).astype(np.float32)  # [2, 10, 6]
    mask = np.arange(10)[None] < np.asarray([[10], [7]])
    x[1, 7:] = 0
    key = jax.random.key(3)
    mixed = np.asarray(mixstyle(key, jnp.asarray(x), jnp.asarray(mask), 1.0, 0.1))
    lam = np.asarray(jax.random.beta(jax.random.split(key, 3)[2], 0.1, 0.1, (2, 1, 1)))[:, 0, 0]
    other = np.asarray(jax.random.permutation(jax.random.split(key, 3)[1], 2))
    mu = np.stack([x[0].mean(0), x[1, :7].mean(0)])
    sd = np.stack([x[0].std(0), x[1, :7].std(0)])
    for i, n in ((0, 10), (1, 7)):
        np.testing.assert_allclose(mixed[i, :n].mean(0), lam[i] * mu[i] + (1 - lam[i]) * mu[other[i]], atol=1e-4)
        np.testing.assert_allclose(mixed[i, :n].std(0), lam[i] * sd[i] + (1 - lam[i]) * sd[other[i]], rtol=1e-3)
    assert np.all(mixed[1, 7:] == 0)
    np.testing.assert_array_equal(np.asarray(mixstyle(key, jnp.asarray(x), jnp.asarray(mask), 0.0, 0.1)), x)


def test_the_augmentations_change_training_logits_only():
    rng = np.random.default_rng(1)
    hidden = rng.standard_normal((4, 9, 7, 32)).astype(np.float32)
    mask = np.ones((4, 9), bool)
    mean, std = np.zeros((7, 32), np.float32), np.ones((7, 32), np.float32)
    table = (jnp.full((3, 7, 32), 5.0), jnp.full((3, 7, 32), 0.2))
    plain = VoiceHead(7, 32, NUM_CLASSES, hidden=16, attention_hidden=8, dropout=0.0, input_dropout=0.0,
                      rngs=nnx.Rngs(0))
    augmented = VoiceHead(7, 32, NUM_CLASSES, hidden=16, attention_hidden=8, dropout=0.0, input_dropout=0.0,
                          swap_stats=1.0, mixstyle=1.0, rngs=nnx.Rngs(0))
    same = plain(hidden, mask, mean, std, swap_table=table)
    np.testing.assert_array_equal(np.asarray(augmented(hidden, mask, mean, std, swap_table=table)), np.asarray(same))
    trained = augmented(hidden, mask, mean, std, deterministic=False, swap_table=table)
    assert np.abs(np.asarray(trained) - np.asarray(same)).max() > 1e-2
    np.testing.assert_array_equal(np.asarray(plain(hidden, mask, mean, std, deterministic=False, swap_table=table)),
                                  np.asarray(same))  # no augmentation asked, no dropout: training = inference


@pytest.mark.slow
def test_swap_table_holds_the_training_speakers_only_and_training_runs_with_every_option(data_root, tmp_path):
    """Real RAVDESS (2 actors) and TESS clips: the statistics swap draws from the training split's speakers, never
    the held-out corpus's; a run with the swap, MixStyle and mean-only pooling trains and scores."""
    from configs.voice_whisper import get_config
    from data_pipeline.prepare import prepare
    from data_pipeline.sources.ravdess import read_ravdess
    from data_pipeline.sources.tess import read_tess
    from emohd_jax.audio.whisper_features import group_id, speaker_key
    from emohd_jax.train.trainer import evaluate_shards, make_task, train_and_evaluate

    config = get_config("ravdess,global,clean,swap_stats=0.5,mixstyle=0.5,pool_std=false")
    assert config.workdir.endswith("ravdess_global_clean_swap_stats0.5_mixstyle0.5_pool_stdfalse")
    assert (config.model.swap_stats, config.model.mixstyle, config.model.pool_std) == (0.5, 0.5, False)
    config.data.shards, config.workdir = str(tmp_path / "shards"), str(tmp_path / "run")
    config.data.eval_split = "tess"
    config.train.num_steps, config.train.batch_size, config.train.checkpoint_every = 2, 4, 2
    config.eval.batch_size = 4
    ravdess, _ = read_ravdess(data_root / "ravdess", actors=[1, 2], split="ravdess_train")
    tess, _ = read_tess(data_root / "tess", split="tess")
    splits = {"ravdess_train": ravdess[::30], "tess": tess[::700]}
    task = make_task(config)
    prepare(splits, task.extractor(), config.data.shards)
    means, stds = task.swap_table()
    actors = sorted({group_id(speaker_key(u)) for u in splits["ravdess_train"]})
    ids, all_means, _ = task.statistics("speaker_id").table()  # RAVDESS actors 1, 2 and TESS's speakers
    assert len(actors) == 2 and len(ids) > 2 and means.shape == stds.shape == (2, 7, 512)
    np.testing.assert_array_equal(means, all_means[np.searchsorted(ids, actors)])
    result = train_and_evaluate(config)
    assert result["steps"] == 2
    _, predictions = evaluate_shards(config, config.data.shards, "tess")
    assert len(predictions["uid"]) == 2 and np.allclose(np.sum(predictions["probs"], axis=1), 1, atol=1e-3)
