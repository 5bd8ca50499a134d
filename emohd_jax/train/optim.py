"""The optimiser: AdamW with warm-up + cosine decay, global-norm clipping, and frozen parameters.

The learning rate and weight decay are optimiser state, not constants of the compiled step (a sweep
trains many trials, each with its own values, under one compilation).

Which parameters train is a list of regexes over parameter paths (`config.optim.trainable`),
so "VGGish convs frozen", "ResNet50 top 10 layers" and "head only" are config, not code.

Divisions by a scalar (`divide_by_scalar`) and the gradient norm (`global_norm`) are written so that one run and
each trial of a vmapped batch (`study.batch`) compute the same numbers, bit for bit, on XLA:CPU.
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


def divide_by_scalar(x: jax.Array, s: jax.Array | float) -> jax.Array:
    """x / s for a scalar s, as an IEEE division in every program.

    XLA:CPU's algebraic simplifier rewrites `x / broadcast(s)` into `x * broadcast(1 / s)` (one rounding more)
    only when s has one use. Under `jax.vmap` a per-trial s [trials] is reshaped once per use, so a trial batch
    gets the multiply where one run, whose s is shared by every parameter, keeps the division: the two drift
    apart by an ulp a step, amplified over a run. The barrier hands the division a full-shape divisor instead.
    """
    return x / jax.lax.optimization_barrier(jnp.broadcast_to(jnp.asarray(s, x.dtype), x.shape))


def global_norm(tree) -> jax.Array:
    """√Σx² over every leaf, the same number in one run and in each trial of a vmapped batch.

    XLA:CPU picks a reduction's kernel (its own loop or YNNPACK's, tree-split or not, fused with what) by the
    shape and the ops around it, so `optax.tree.norm` of a [trials, ...] tree, or of one run's gradients in a
    step built otherwise, adds in another order. Here each leaf's Σx² is `pairwise_sum`: elementwise adds in an
    order the program fixes; the squares go through a barrier so no add is contracted with them into an FMA.
    """
    return jnp.sqrt(sum(pairwise_sum(jax.lax.optimization_barrier(jnp.square(x))) for x in jax.tree.leaves(tree)))


def pairwise_sum(x: jax.Array) -> jax.Array:
    """Σx (all elements) by halving: zero-padded to a power of two, then the first half plus the second, repeatedly."""
    x = x.ravel()
    size = 1 << (x.size - 1).bit_length()
    x = jnp.pad(x, (0, size - x.size))
    while size > 1:
        size //= 2
        x = x[:size] + x[size:]
    return x[0]


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
    """`optax.clip_by_global_norm` with `global_norm`'s fixed-order sums and `divide_by_scalar`'s division."""

    def update(updates, state, params=None):
        del params
        g_norm = global_norm(updates)
        within = g_norm < max_norm
        return jax.tree.map(lambda g: jax.lax.select(within, g, divide_by_scalar(g, g_norm) * max_norm), updates), state

    return optax.GradientTransformation(optax.init_empty_state, update)


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
            clip_by_global_norm(optim.clip_norm),
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
