"""The voice tower's trainable part on frozen Whisper features: layer mix → attentive pooling → MLP → 7 classes.

Emotion sits in different encoder layers than words (prosody early, phonetics late), so the head learns one
softmax weight per layer (SUPERB's weighted sum) instead of taking the last one. Attentive statistics pooling
(Okabe et al., 2018) lets it weigh the frames that carry emotion; padded frames get exactly zero weight, so a
clip scores the same whatever it was batched with. Features are standardised first with the mean and std the
caller gives (the training corpora's, or one recording's / folder's own: emohd_jax.audio.whisper_features).

A clip scored with the training corpora's statistics (one clip at predict time) arrives shifted and scaled by
its corpus's and speaker's distance from them, which the head never saw in training. Two training-only
augmentations simulate that; neither changes inference:
- `swap_statistics`: a clip standardised with another training speaker's statistics (a wrong mean and std of
  the size speakers and corpora really differ by; group statistics carry little of the clip's emotion).
- `mixstyle` (Zhou et al., ICLR 2021): each clip's per-channel frame mean/std mixed with another clip's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

_EPS = 1e-5


def swap_statistics(key: jax.Array, mean: jax.Array, std: jax.Array, table_mean: jax.Array, table_std: jax.Array,
                    prob: float) -> tuple[jax.Array, jax.Array]:
    """mean, std: [batch, layers, width]; table_*: [groups, layers, width] → (mean, std), each row replaced with
    probability `prob` by a random group's (the clip then looks as if it came from an unseen corpus)."""
    pick, row = jax.random.split(key)
    rows = jax.random.randint(row, mean.shape[:1], 0, table_mean.shape[0])
    swap = jax.random.bernoulli(pick, prob, mean.shape[:1])[:, None, None]
    return jnp.where(swap, table_mean[rows], mean), jnp.where(swap, table_std[rows], std)


def mixstyle(key: jax.Array, x: jax.Array, mask: jax.Array, prob: float, alpha: float) -> jax.Array:
    """x: [batch, frames, width] (padding zero), mask: [batch, frames] → x with, for a `prob` share of the clips,
    its per-channel mean/std over the real frames replaced by a Beta(alpha, alpha) mix of its own and a random
    other clip's of the batch. The statistics are constants to the gradient (as in the paper)."""
    apply, order, lam = jax.random.split(key, 3)
    keep = mask[..., None]
    n = jnp.maximum(jnp.sum(keep, axis=1, keepdims=True), 1)  # [batch, 1, 1]
    mu = jax.lax.stop_gradient(jnp.sum(jnp.where(keep, x, 0.0), axis=1, keepdims=True) / n)  # [batch, 1, width]
    var = jnp.sum(jnp.where(keep, jnp.square(x - mu), 0.0), axis=1, keepdims=True) / n
    sigma = jax.lax.stop_gradient(jnp.sqrt(var + _EPS))
    other = jax.random.permutation(order, x.shape[0])
    lam = jax.random.beta(lam, alpha, alpha, (x.shape[0], 1, 1))
    mixed = (x - mu) / sigma * (lam * sigma + (1 - lam) * sigma[other]) + lam * mu + (1 - lam) * mu[other]
    chosen = jax.random.bernoulli(apply, prob, (x.shape[0], 1, 1))
    return jnp.where(chosen & keep, mixed, x)


class VoiceHead(nnx.Module):
    """hidden [batch, frames, layers, width] + frame mask → logits [batch, classes].

    `pool_std`: the attentive pooling returns the weighted std beside the mean (Okabe et al.); a clip's spread
    over time is what differs most between corpora in its statistics, so without it the head may transfer better.
    `swap_stats` / `mixstyle`: training-time probabilities of the two augmentations above (0 = off)."""

    def __init__(self, layers: int, width: int, num_classes: int, *, hidden: int = 256, attention_hidden: int = 128,
                 dropout: float = 0.3, input_dropout: float = 0.1, pool_std: bool = True, swap_stats: float = 0.0,
                 mixstyle: float = 0.0, mixstyle_alpha: float = 0.1, rngs: nnx.Rngs):
        self.layer_logits = nnx.Param(jnp.zeros((layers,), jnp.float32))  # softmax → one weight per layer
        self.project = nnx.Linear(width, hidden, rngs=rngs)
        self.score_in = nnx.Linear(hidden, attention_hidden, rngs=rngs)
        self.score_out = nnx.Linear(attention_hidden, 1, rngs=rngs)
        self.pool_std = pool_std
        pooled = 2 * hidden if pool_std else hidden
        self.pooled_norm = nnx.LayerNorm(pooled, rngs=rngs)  # pooled statistics are far smaller than frames
        self.mlp_in = nnx.Linear(pooled, hidden, rngs=rngs)
        self.classifier = nnx.Linear(hidden, num_classes, rngs=rngs)
        self.input_dropout = nnx.Dropout(input_dropout, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.swap_stats, self.mixstyle, self.mixstyle_alpha = swap_stats, mixstyle, mixstyle_alpha
        self.augment_rngs = rngs["dropout"].fork()  # the trainer reseeds 'dropout' streams per step

    def layer_weights(self) -> jax.Array:
        """[layers], summing to 1."""
        return jax.nn.softmax(self.layer_logits[...])

    def __call__(self, hidden: jax.Array, mask: jax.Array, mean: jax.Array, std: jax.Array, *,
                 deterministic: bool = True, swap_table: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
        """hidden: [batch, frames, layers, width] (any float dtype), mask: [batch, frames] bool (True = real frame,
        at least one per row), mean / std: [batch, layers, width] or [layers, width] → logits [batch, classes].
        swap_table: (means, stds) [groups, layers, width] that `swap_stats` draws from in training."""
        mean = jnp.broadcast_to(mean, (hidden.shape[0], *hidden.shape[2:]))
        std = jnp.broadcast_to(std, (hidden.shape[0], *hidden.shape[2:]))
        train = not deterministic
        if train and self.swap_stats > 0 and swap_table is not None:
            mean, std = swap_statistics(jax.random.fold_in(self.augment_rngs(), 0), mean, std, *swap_table,
                                        self.swap_stats)
        keep = mask[:, :, None]
        x = jnp.where(keep[..., None], (hidden.astype(jnp.float32) - mean[:, None]) / std[:, None], 0.0)
        x = jnp.einsum("btlw,l->btw", x, self.layer_weights())  # [batch, frames, width]
        if train and self.mixstyle > 0:
            x = mixstyle(jax.random.fold_in(self.augment_rngs(), 1), x, mask, self.mixstyle, self.mixstyle_alpha)
        h = jax.nn.gelu(self.project(self.input_dropout(x, deterministic=deterministic)))  # [batch, frames, hidden]
        scores = self.score_out(jnp.tanh(self.score_in(h)))[..., 0]  # [batch, frames]
        weights = jax.nn.softmax(jnp.where(mask, scores, -jnp.inf), axis=1)[..., None]
        h = jnp.where(keep, h, 0.0)
        pooled = jnp.sum(weights * h, axis=1)  # [batch, hidden]
        if self.pool_std:
            pooled_std = jnp.sqrt(jnp.sum(weights * jnp.square(h - pooled[:, None]), axis=1) + _EPS)
            pooled = jnp.concatenate([pooled, pooled_std], axis=-1)
        z = self.pooled_norm(pooled)
        z = jax.nn.gelu(self.mlp_in(self.dropout(z, deterministic=deterministic)))
        return self.classifier(self.dropout(z, deterministic=deterministic))


def frame_mask(hidden: jax.Array) -> jax.Array:
    """[batch, frames, layers, width] → [batch, frames] bool: padding rows are exactly zero (the collate pads with
    0), a real frame never is (every encoder output is a LayerNorm'd or position-carrying vector)."""
    return jnp.any(hidden != 0, axis=(2, 3))
