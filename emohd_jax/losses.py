"""Losses, pure and shape-documented, shared by the tasks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

IGNORE = -1  # masked-LM target of a position that was not masked (emohd_jax.text.masking)


def cross_entropy(logits: jax.Array, labels: jax.Array, weights: jax.Array, valid: jax.Array,
                  label_smoothing: float = 0.0) -> jax.Array:
    """Class-weighted, label-smoothed cross-entropy averaged over the valid rows of the global batch.

    logits: [batch, classes]; labels, valid: [batch]; weights: [classes].
    """
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
    per_row = optax.softmax_cross_entropy(logits, targets) * weights[labels] * valid
    return per_row.sum() / jnp.maximum((weights[labels] * valid).sum(), 1e-9)


def masked_lm_loss(logits: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(mean loss, accuracy) over masked positions. logits: [batch, time, vocab]; targets: [batch, time], IGNORE = not masked."""
    masked = targets != IGNORE
    per_token = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(targets, 0))
    n = jnp.maximum(masked.sum(), 1)
    accuracy = ((logits.argmax(-1) == targets) & masked).sum() / n
    return (per_token * masked).sum() / n, accuracy
