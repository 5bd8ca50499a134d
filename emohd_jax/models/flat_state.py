"""A model's parameters and BN statistics as one flat {dotted.path: array} dict.

The exchange format between converters, safetensors assets and NNX modules: converters only
have to produce the right names and shapes, and `load_state_dict` checks both.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx, traverse_util


def state_dict(model: nnx.Module) -> dict[str, np.ndarray]:
    """{"blocks.0.sep1.depthwise.kernel": array, ...} for every variable of `model`."""
    flat = traverse_util.flatten_dict(nnx.to_pure_dict(nnx.state(model)))
    return {".".join(map(str, key)): np.asarray(value) for key, value in flat.items()}


def load_state_dict(model: nnx.Module, tensors: dict[str, np.ndarray]) -> None:
    """Fill `model` in place; names and shapes must match `state_dict(model)` exactly."""
    expected = state_dict(model)
    missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or extra:
        raise KeyError(f"state dict mismatch: missing {missing[:5]}, unexpected {extra[:5]}")
    for key, value in tensors.items():
        if expected[key].shape != np.shape(value):
            raise ValueError(f"{key}: expected shape {expected[key].shape}, got {np.shape(value)}")
    pure = traverse_util.unflatten_dict({tuple(_path_part(p) for p in key.split(".")): jnp.asarray(value)
                                         for key, value in tensors.items()})
    state = nnx.state(model)
    nnx.replace_by_pure_dict(state, pure)
    nnx.update(model, state)


def _path_part(part: str) -> str | int:
    return int(part) if part.isdigit() else part
