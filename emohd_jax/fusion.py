"""Detection-ratio weighted late fusion (Tsanousa et al., as EmoHD uses it; SPEC §5), in one jitted kernel.

For modality m and class c, from a held-out (dev) confusion matrix of m:
    DR_m[c] = TP / (TP + TN + FP + FN)   (one-vs-rest counts, so the denominator is the number of samples)
    W_m[c]  = 1 − DR_m[c]
    S_m     = W_m ⊙ P_m
Rules: `paper` lets the modality with the largest Σ_c S_m[c] decide (Eq. 4); `max` takes the
argmax over every modality×class score; `sum` the argmax over classes of Σ_m S_m[c]. A missing
modality is masked out (−inf / 0 where it could otherwise win), never scored as zeros.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp

RULES = ("paper", "max", "sum")
MODALITIES = ("visual", "audio", "text")


def confusion_counts(labels: jax.Array, preds: jax.Array, valid: jax.Array, num_classes: int) -> jax.Array:
    """counts [true, predicted] from label vectors [n]; rows where `valid` is False are left out."""
    onehot_true = jax.nn.one_hot(labels, num_classes) * valid[:, None]
    return onehot_true.T @ jax.nn.one_hot(preds, num_classes)


def detection_ratio_weights(confusions: jax.Array) -> jax.Array:
    """W [modality, class] = 1 − TP_c / N from confusion counts [modality, true, predicted]."""
    true_positives = jnp.diagonal(confusions, axis1=1, axis2=2)           # [modality, class]
    samples = confusions.sum(axis=(1, 2))[:, None]                        # [modality, 1]
    return 1.0 - true_positives / jnp.maximum(samples, 1.0)


@functools.partial(jax.jit, static_argnames="rule")
def fuse(probs: jax.Array, present: jax.Array, weights: jax.Array, rule: str = "paper") -> tuple[jax.Array, jax.Array]:
    """probs [batch, modality, class], present [batch, modality] bool, weights [modality, class]
    → (decision [batch] (−1 when no modality is present), fused class scores [batch, class])."""
    if rule not in RULES:
        raise ValueError(f"fusion rule must be one of {RULES}, not {rule!r}")
    scores = weights[None] * probs                                          # S: [batch, modality, class]
    masked = jnp.where(present[..., None], scores, -jnp.inf)
    if rule == "paper":
        chosen = jnp.argmax(jnp.where(present, scores.sum(-1), -jnp.inf), axis=1)   # [batch]
        fused = jnp.take_along_axis(scores, chosen[:, None, None], axis=1)[:, 0]
    elif rule == "max":
        fused = masked.max(axis=1)
    else:
        fused = jnp.where(present[..., None], scores, 0.0).sum(axis=1)
    decision = jnp.where(present.any(axis=1), jnp.argmax(fused, axis=-1), -1)
    return decision, fused


@functools.partial(jax.jit, static_argnames=("rule", "num_classes"))
def fit_and_fuse(dev_probs: jax.Array, dev_present: jax.Array, dev_labels: jax.Array, probs: jax.Array,
                 present: jax.Array, rule: str = "paper", num_classes: int = 7) -> tuple[jax.Array, jax.Array]:
    """Weights from the dev split's per-modality confusion counts, then `fuse` — one compiled kernel."""
    dev_preds = jnp.argmax(dev_probs, axis=-1)                              # [n, modality]
    confusions = jax.vmap(lambda p, v: confusion_counts(dev_labels, p, v, num_classes),
                          in_axes=(1, 1))(dev_preds, dev_present)            # [modality, class, class]
    return fuse(probs, present, detection_ratio_weights(confusions), rule)


def modality_subsets(names: tuple[str, ...] = MODALITIES) -> dict[str, tuple[int, ...]]:
    """The paper's table columns: each modality alone, then every combination (V, A, T, V+A, …, V+A+T)."""
    short = {"visual": "V", "audio": "A", "text": "T"}
    out = {}
    for k in range(1, len(names) + 1):
        for combo in itertools.combinations(range(len(names)), k):
            out["+".join(short.get(names[i], names[i]) for i in combo)] = combo
    return out
