"""The one place where the mesh and the partition rules live.

Mesh axes: `data` (batch, across all devices and hosts) × `model` (optional tensor split of
wide weights). Batches are split on their leading dim over `data`; a parameter is split on
its last dim over `model` when that dim divides evenly, else replicated. With model=1 (the
default) this is plain data parallelism, and the same code runs on 1 CPU, 8 GPUs or a pod.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA, MODEL = "data", "model"


def make_mesh(model_parallel: int = 1, devices=None) -> Mesh:
    """All devices of all processes (or `devices`), `model_parallel` of them per model shard."""
    devices = jax.devices() if devices is None else list(devices)
    n = len(devices)
    if n % model_parallel:
        raise ValueError(f"{n} devices do not split into model groups of {model_parallel}")
    # Auto axes: shardings of intermediates are left to the compiler (GSPMD), as MaxText does.
    return jax.make_mesh((n // model_parallel, model_parallel), (DATA, MODEL),
                         axis_types=(AxisType.Auto, AxisType.Auto), devices=devices)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA))


def param_spec(shape: tuple[int, ...], mesh: Mesh) -> P:
    model = mesh.shape[MODEL]
    if model > 1 and len(shape) >= 2 and shape[-1] % model == 0:
        return P(*([None] * (len(shape) - 1)), MODEL)
    return P()


def state_shardings(abstract_state, mesh: Mesh):
    """Shardings for a pytree of ShapeDtypeStructs (from jax.eval_shape), by `param_spec`."""
    return jax.tree.map(lambda leaf: NamedSharding(mesh, param_spec(tuple(leaf.shape), mesh)), abstract_state)


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This process's rows → one global array per field, split over `data`."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}
