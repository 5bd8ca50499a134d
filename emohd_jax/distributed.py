"""Multi-process start-up: one call before any JAX computation, a no-op for a single process.

On TPU pods and SLURM/GPU clusters `jax.distributed.initialize()` finds its peers by itself
(`EMOHD_DISTRIBUTED=auto`); elsewhere (and on CPU, for tests) the coordinator is given by
`JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID`.
"""

from __future__ import annotations

import os
from typing import Mapping

import jax


def slurm_local_device_ids(env: Mapping[str, str]) -> list[int] | None:
    """Every GPU of the node when SLURM runs one task per node, else None (JAX's own choice).

    JAX's SLURM detection assumes one process per GPU and restricts each process to GPU
    `SLURM_LOCALID`; with one process per host (tpu/slurm_train.sbatch) that would leave all GPUs
    but one idle. SLURM sets CUDA_VISIBLE_DEVICES per task, and CUDA renumbers those GPUs 0..n-1.
    """
    if "SLURM_JOB_ID" not in env or "SLURM_NTASKS" not in env:
        return None
    nodes = env.get("SLURM_STEP_NUM_NODES") or env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES")
    if nodes is None or int(env["SLURM_NTASKS"]) != int(nodes):
        return None
    if env.get("SLURM_GPUS_ON_NODE"):
        n_gpus = int(env["SLURM_GPUS_ON_NODE"])
    else:
        n_gpus = len([d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()])
    return list(range(n_gpus)) or None


def initialize_from_env() -> None:
    if os.environ.get("EMOHD_DISTRIBUTED") == "auto":
        jax.distributed.initialize(local_device_ids=slurm_local_device_ids(os.environ))
        return
    address = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if not address:
        return
    # CPU devices of different processes talk over gloo; GPU/TPU collectives are unaffected.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=address, num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
                               process_id=int(os.environ["JAX_PROCESS_ID"]))
