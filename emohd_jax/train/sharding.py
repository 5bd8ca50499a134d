"""The one place where the mesh and the partition rules live.

Mesh axes: `data` (batch, across all devices and hosts) × `model` (optional tensor split of wide
weights). Batches are split on their leading dim over `data`. Where each leaf of the train state
lives is a table of (regex over its path, PartitionSpec), MaxText's logical-axis mapping and
big_vision's `sharding_rules` in one: the first rule whose regex is found in the leaf's path
(`params/encoder/layers/0/attention/query/kernel`, `opt_state/1/0/mu/…/kernel`) and whose spec fits
its rank places it; no rule → replicated. A spec names the leaf's *last* dims, so one rule serves a
dense kernel [in, out] and a conv kernel [h, w, in, out]. A mesh axis that does not divide its dim
is dropped there (that dim is replicated), so a table never fails on an odd width; axes of size 1
are dropped too, so the same table runs on 1 CPU, 8 GPUs or a pod.
"""

from __future__ import annotations

import re
from typing import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA, MODEL = "data", "model"

Rules = tuple[tuple[str, P], ...]

# `config.mesh.rules` names one of these, or is a table of (regex, mesh axis per trailing dim) pairs itself.
PARTITION_RULES: dict[str, Rules] = {
    # Every leaf of rank >= 2 split on its last dim over `model`: plain data parallelism when model = 1.
    "default": ((r".*", P(None, MODEL)),),
    # FSDP (ZeRO-3): weight matrices, and their optimiser moments, also split over `data` on the dim before
    # the last, so each device stores 1/data of the large towers' weights; XLA gathers them per layer.
    "fsdp": ((r"(kernel|embedding)$", P(DATA, MODEL)), (r".*", P(None, MODEL))),
}


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


def partition_rules(rules: str | Sequence[tuple[str, Sequence]] = "default") -> Rules:
    """The table `config.mesh.rules` selects: a name in PARTITION_RULES, or ((regex, axes), …) given in the config."""
    if isinstance(rules, str):
        if rules not in PARTITION_RULES:
            raise ValueError(f"unknown partition rules {rules!r} (known: {', '.join(PARTITION_RULES)})")
        return PARTITION_RULES[rules]
    table = tuple((str(pattern), P(*axes)) for pattern, axes in rules)
    for pattern, _ in table:
        re.compile(pattern)  # a typo in a regex fails here, naming itself, not deep inside jit
    return table


def leaf_path(path: tuple) -> str:
    """'params/head/hidden/kernel': a state leaf's key path as the rules see it (NNX's trailing '/value' dropped)."""
    return jax.tree_util.keystr(path, simple=True, separator="/").removesuffix("/value")


def param_spec(path: str, shape: tuple[int, ...], mesh: Mesh, rules: Rules) -> P:
    """The PartitionSpec of one leaf: the first fitting rule, less the axes that are 1 or do not divide."""
    for pattern, spec in rules:
        if len(spec) > len(shape) or not re.search(pattern, path):
            continue
        axes = [None] * (len(shape) - len(spec))
        for dim, axis in zip(shape[len(shape) - len(spec):], spec):
            names = () if axis is None else (axis,) if isinstance(axis, str) else tuple(axis)
            size = int(np.prod([mesh.shape[name] for name in names]))
            axes.append(axis if size > 1 and dim % size == 0 else None)
        while axes and axes[-1] is None:
            axes.pop()
        return P(*axes)
    return P()


def state_shardings(abstract_state, mesh: Mesh, rules: Rules = PARTITION_RULES["default"]):
    """NamedShardings for a pytree of ShapeDtypeStructs (from jax.eval_shape), one `param_spec` per leaf."""
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: NamedSharding(mesh, param_spec(leaf_path(path), tuple(leaf.shape), mesh, rules)),
        abstract_state)


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This process's rows → one global array per field, split over `data`."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}
