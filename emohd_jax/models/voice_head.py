"""The voice tower's trainable part on frozen Whisper features: layer mix → attentive pooling → MLP → 7 classes.

Emotion sits in different encoder layers than words (prosody early, phonetics late), so the head learns one
softmax weight per layer (SUPERB's weighted sum) instead of taking the last one. Attentive statistics pooling
(Okabe et al., 2018) lets it weigh the frames that carry emotion; padded frames get exactly zero weight, so a
clip scores the same whatever it was batched with. Features are standardised first with the mean and std the
caller gives (the training corpora's, or one recording's / folder's own: emohd_jax.audio.whisper_features).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

_EPS = 1e-5


class VoiceHead(nnx.Module):
    """hidden [batch, frames, layers, width] + frame mask → logits [batch, classes]."""

    def __init__(self, layers: int, width: int, num_classes: int, *, hidden: int = 256, attention_hidden: int = 128,
                 dropout: float = 0.3, input_dropout: float = 0.1, rngs: nnx.Rngs):
        self.layer_logits = nnx.Param(jnp.zeros((layers,), jnp.float32))  # softmax → one weight per layer
        self.project = nnx.Linear(width, hidden, rngs=rngs)
        self.score_in = nnx.Linear(hidden, attention_hidden, rngs=rngs)
        self.score_out = nnx.Linear(attention_hidden, 1, rngs=rngs)
        self.pooled_norm = nnx.LayerNorm(2 * hidden, rngs=rngs)  # pooled statistics are far smaller than frames
        self.mlp_in = nnx.Linear(2 * hidden, hidden, rngs=rngs)
        self.classifier = nnx.Linear(hidden, num_classes, rngs=rngs)
        self.input_dropout = nnx.Dropout(input_dropout, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def layer_weights(self) -> jax.Array:
        """[layers], summing to 1."""
        return jax.nn.softmax(self.layer_logits[...])

    def __call__(self, hidden: jax.Array, mask: jax.Array, mean: jax.Array, std: jax.Array, *,
                 deterministic: bool = True) -> jax.Array:
        """hidden: [batch, frames, layers, width] (any float dtype), mask: [batch, frames] bool (True = real frame,
        at least one per row), mean / std: [batch, layers, width] or [layers, width] → logits [batch, classes]."""
        mean = jnp.broadcast_to(mean, (hidden.shape[0], *hidden.shape[2:]))[:, None]
        std = jnp.broadcast_to(std, (hidden.shape[0], *hidden.shape[2:]))[:, None]
        keep = mask[:, :, None]
        x = jnp.where(keep[..., None], (hidden.astype(jnp.float32) - mean) / std, 0.0)
        x = jnp.einsum("btlw,l->btw", x, self.layer_weights())  # [batch, frames, width]
        h = jax.nn.gelu(self.project(self.input_dropout(x, deterministic=deterministic)))  # [batch, frames, hidden]
        scores = self.score_out(jnp.tanh(self.score_in(h)))[..., 0]  # [batch, frames]
        weights = jax.nn.softmax(jnp.where(mask, scores, -jnp.inf), axis=1)[..., None]
        h = jnp.where(keep, h, 0.0)
        pooled_mean = jnp.sum(weights * h, axis=1)  # [batch, hidden]
        pooled_std = jnp.sqrt(jnp.sum(weights * jnp.square(h - pooled_mean[:, None]), axis=1) + _EPS)
        z = self.pooled_norm(jnp.concatenate([pooled_mean, pooled_std], axis=-1))
        z = jax.nn.gelu(self.mlp_in(self.dropout(z, deterministic=deterministic)))
        return self.classifier(self.dropout(z, deterministic=deterministic))


def frame_mask(hidden: jax.Array) -> jax.Array:
    """[batch, frames, layers, width] → [batch, frames] bool: padding rows are exactly zero (the collate pads with
    0), a real frame never is (every encoder output is a LayerNorm'd or position-carrying vector)."""
    return jnp.any(hidden != 0, axis=(2, 3))
