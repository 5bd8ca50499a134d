"""A model's variables as one flat {dotted.path: array} dict, and the one checked way to load such a dict.

The exchange format between converters, safetensors assets and NNX modules: converters only have to
produce the right names and shapes, and `fill` checks both, so a mapping that gets one name wrong fails
naming it instead of leaving a randomly initialised layer behind.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, TypeVar

import jax.numpy as jnp
import numpy as np
from flax import nnx, traverse_util

from emohd_jax.errors import CheckpointLayoutError

M = TypeVar("M", bound=nnx.Module)


def state_dict(model: nnx.Module) -> dict[str, np.ndarray]:
    """{"blocks.0.sep1.depthwise.kernel": array, ...} for every variable of `model`."""
    flat = traverse_util.flatten_dict(nnx.to_pure_dict(nnx.state(model)))
    return {".".join(map(str, key)): np.asarray(value) for key, value in flat.items()}


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
    flat.update({tuple(_path_part(p) for p in key.split(sep)): jnp.asarray(value) for key, value in tensors.items()})
    nnx.replace_by_pure_dict(state, traverse_util.unflatten_dict(flat))


def with_state_dict(model: M, tensors: Mapping[str, Any], *, source: str | os.PathLike = "<tensors>") -> M:
    """`model`'s structure filled with `tensors` (see `fill`).

    `model` may be abstract (`nnx.eval_shape(lambda: Model(...))`), which skips the random
    initialisation that a converted model would throw away anyway (45 s for ResNet50 on 2 cores).
    """
    graphdef, state = nnx.split(model)
    fill(state, tensors, source=source)
    return nnx.merge(graphdef, state)


def _path_part(part: str) -> str | int:
    return int(part) if part.isdigit() else part
