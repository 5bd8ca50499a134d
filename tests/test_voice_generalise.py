"""The voice head's training-only augmentations for unseen corpora: statistics swap and MixStyle."""

import jax
import jax.numpy as jnp
import numpy as np
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
