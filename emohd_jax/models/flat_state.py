"""A model's variables as one flat {dotted.path: array} dict, and the one checked way to load such a dict.

The exchange format between converters, safetensors assets and NNX modules: converters only have to
produce the right names and shapes, and `fill` checks both, so a mapping that gets one name wrong fails
naming it instead of leaving a randomly initialised layer behind.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping, TypeVar

import jax
import numpy as np
from flax import nnx, traverse_util

from emohd_jax.errors import CheckpointLayoutError

M = TypeVar("M", bound=nnx.Module)


def flat_leaves(state: nnx.State, sep: str = "/") -> dict[str, Any]:
    """{path joined by sep: leaf} of `state`; a leaf may be an array, a tracer or, not yet filled, a
    ShapeDtypeStruct (an abstract module's)."""
    return {sep.join(map(str, key)): value for key, value in traverse_util.flatten_dict(nnx.to_pure_dict(state)).items()}


def state_dict(model: nnx.Module) -> dict[str, np.ndarray]:
    """{"blocks.0.sep1.depthwise.kernel": array, ...} for every variable of `model`."""
    return {key: np.asarray(value) for key, value in flat_leaves(nnx.state(model), ".").items()}


def fill(state: nnx.State, tensors: Mapping[str, Any], *, source: str | os.PathLike = "<tensors>",
         sep: str = ".", partial: bool = False) -> None:
    """Replace every leaf of `state` in place with `tensors[path joined by sep]`.

    Names and shapes must match exactly, else `CheckpointLayoutError` naming `source` and the keys;
    `partial` lets leaves that `tensors` lacks keep their values (an adapter over a base model).
    """
    pure = nnx.to_pure_dict(state)
    flat = traverse_util.flatten_dict(pure)
    expected = {sep.join(map(str, key)): value for key, value in flat.items()}
    missing, unknown = sorted(expected.keys() - tensors.keys()), sorted(tensors.keys() - expected.keys())
    if partial:
        missing = []
    if missing or unknown:
        raise CheckpointLayoutError(source, f"tensors missing {missing[:10]}, unknown {unknown[:10]}")
    for key, value in tensors.items():
        if tuple(expected[key].shape) != tuple(np.shape(value)):
            raise CheckpointLayoutError(
                source, f"{key}: shape {tuple(np.shape(value))}, model expects {tuple(expected[key].shape)}")
    # device_put, not jnp.asarray: in jax 0.10 the latter compiles one identity program per distinct shape (about
    # 80 per bundle, 1.5 s of a warm start), too quick to compile for the persistent cache to keep.
    flat.update({tuple(_path_part(p) for p in key.split(sep)): jax.device_put(value) for key, value in tensors.items()})
    nnx.replace_by_pure_dict(state, traverse_util.unflatten_dict(flat))


def with_state_dict(model: M, tensors: Mapping[str, Any], *, source: str | os.PathLike = "<tensors>") -> M:
    """`model`'s structure filled with `tensors` (see `fill`).

    `model` may be abstract (`nnx.eval_shape(lambda: Model(...))`), which skips the random
    initialisation that a converted model would throw away anyway (45 s for ResNet50 on 2 cores).
    """
    graphdef, state = nnx.split(model)
    fill(state, tensors, source=source)
    return nnx.merge(graphdef, state)


def abstract_module(build: Callable[[], M], seed: int = 0) -> M:
    """`build()` traced, not run (`nnx.eval_shape`): every variable a shape to fill from weights, except the RNG
    streams, made concrete (keys from `seed`, counts 0) so that the filled module can be called as it is.

    A loader that throws the random initialisation away anyway should not pay for it: on a warm `emohd predict`
    start the initialisers of the text encoder alone compiled and ran about twenty small programs."""
    graphdef, rngs, rest = nnx.split(nnx.eval_shape(build), nnx.RngState, ...)
    return nnx.merge(graphdef, jax.tree.map(lambda leaf: concrete_rng(leaf, seed), rngs), rest)


def concrete_rng(leaf: jax.ShapeDtypeStruct | jax.Array, seed: int) -> jax.Array:
    """A value for an abstract RNG-state leaf: a key (split to its shape) or a zero count."""
    if not isinstance(leaf, jax.ShapeDtypeStruct):
        return leaf
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        key = jax.random.key(seed)
        return jax.random.split(key, leaf.shape) if leaf.shape else key
    return jax.device_put(np.zeros(leaf.shape, leaf.dtype))


def _path_part(part: str) -> str | int:
    return int(part) if part.isdigit() else part
