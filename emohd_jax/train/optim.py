"""The optimiser: AdamW with warm-up + cosine decay, global-norm clipping, and frozen parameters.

The learning rate and weight decay are optimiser state, not constants of the compiled step (a sweep
trains many trials, each with its own values, under one compilation).

Which parameters train is a list of regexes over parameter paths (`config.optim.trainable`),
so "VGGish convs frozen", "ResNet50 top 10 layers" and "head only" are config, not code.
"""

from __future__ import annotations

import re
from typing import Sequence

import jax
import jax.numpy as jnp
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


def learning_rate_schedule(lr: jax.Array | float, total_steps: int, warmup_steps: int) -> optax.Schedule:
    """Warm-up from 0 to `lr`, cosine decay to `lr`/100. `lr` may be a traced array (a sweep trial's own value):
    only the schedule's shape is fixed at trace time, so one compiled step serves every learning rate."""
    warmup_steps = max(1, min(warmup_steps, total_steps - 1))
    shape = optax.warmup_cosine_decay_schedule(0.0, 1.0, warmup_steps, max(total_steps, warmup_steps + 1), 0.01)
    return lambda count: lr * shape(count)


def make_optimizer(optim, params: nnx.State, total_steps: int) -> optax.GradientTransformation:
    """`optim`: ConfigDict with lr, warmup_steps, weight_decay, clip_norm, trainable (regex list).

    lr and weight decay live in the optimiser state (`optax.inject_hyperparams`), not in the compiled
    program: `set_hyperparams` gives each trial of a sweep its own values under one compilation.
    """
    def adamw(learning_rate: jax.Array, weight_decay: jax.Array) -> optax.GradientTransformation:
        return optax.chain(
            optax.clip_by_global_norm(optim.clip_norm),
            optax.adamw(learning_rate_schedule(learning_rate, total_steps, optim.warmup_steps), b1=0.9, b2=0.999,
                        weight_decay=weight_decay, mask=_decay_mask),
        )

    train = optax.inject_hyperparams(adamw)(learning_rate=optim.lr, weight_decay=optim.weight_decay)
    labels = trainable_labels(params, list(optim.trainable))
    return optax.multi_transform({"train": train, "freeze": optax.set_to_zero()}, labels)


def set_hyperparams(opt_state: optax.OptState, **values: jax.Array | float) -> optax.OptState:
    """`opt_state` with its injected hyper-parameters (`learning_rate`, `weight_decay`) replaced; traceable."""
    injected = (optax.InjectHyperparamsState, optax.InjectStatefulHyperparamsState)
    found = []

    def replace(node):
        if not isinstance(node, injected):
            return node
        found.append(node)
        hyperparams = dict(node.hyperparams)
        for name, value in values.items():
            hyperparams[name] = jnp.asarray(value, hyperparams[name].dtype)
        return node._replace(hyperparams=hyperparams)

    out = jax.tree.map(replace, opt_state, is_leaf=lambda node: isinstance(node, injected))
    if not found:  # silently keeping the built-in values would make every trial of a sweep the same
        raise ValueError("the optimiser state has no injected hyper-parameters (make_optimizer builds them)")
    return out
