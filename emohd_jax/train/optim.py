"""The optimiser: AdamW with warm-up + cosine decay, global-norm clipping, and frozen parameters.

Which parameters train is a list of regexes over parameter paths (`config.optim.trainable`),
so "VGGish convs frozen", "ResNet50 top 10 layers" and "head only" are config, not code.
"""

from __future__ import annotations

import re
from typing import Sequence

import jax
import optax
from flax import nnx


def path_str(path: tuple) -> str:
    return "/".join(str(getattr(p, "key", p)) for p in path)


def trainable_labels(params: nnx.State, patterns: Sequence[str]) -> nnx.State:
    """'train' for parameters whose path matches any pattern (all when `patterns` is empty), else 'freeze'."""
    compiled = [re.compile(p) for p in patterns]
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "train" if not compiled or any(c.search(path_str(path)) for c in compiled) else "freeze",
        params)


def _decay_mask(params: nnx.State) -> nnx.State:
    """No weight decay on biases, norms and embeddings' scale-like 1-D parameters."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def learning_rate_schedule(lr: float, total_steps: int, warmup_steps: int) -> optax.Schedule:
    warmup_steps = max(1, min(warmup_steps, total_steps - 1))
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup_steps, max(total_steps, warmup_steps + 1), lr * 0.01)


def make_optimizer(optim, params: nnx.State, total_steps: int) -> optax.GradientTransformation:
    """`optim`: ConfigDict with lr, warmup_steps, weight_decay, clip_norm, trainable (regex list)."""
    schedule = learning_rate_schedule(optim.lr, total_steps, optim.warmup_steps)
    train = optax.chain(
        optax.clip_by_global_norm(optim.clip_norm),
        optax.adamw(schedule, b1=0.9, b2=0.999, weight_decay=optim.weight_decay, mask=_decay_mask),
    )
    labels = trainable_labels(params, list(optim.trainable))
    return optax.multi_transform({"train": train, "freeze": optax.set_to_zero()}, labels)
