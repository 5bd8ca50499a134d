"""Multi-process start-up: one call before any JAX computation, a no-op for a single process.

On TPU pods and SLURM/GPU clusters `jax.distributed.initialize()` finds its peers by itself
(`EMOHD_DISTRIBUTED=auto`); elsewhere (and on CPU, for tests) the coordinator is given by
`JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID`.
"""

from __future__ import annotations

import os

import jax


def initialize_from_env() -> None:
    if os.environ.get("EMOHD_DISTRIBUTED") == "auto":
        jax.distributed.initialize()
        return
    address = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if not address:
        return
    # CPU devices of different processes talk over gloo; GPU/TPU collectives are unaffected.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=address, num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
                               process_id=int(os.environ["JAX_PROCESS_ID"]))
