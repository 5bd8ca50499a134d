"""Which kernel library XLA:CPU hands the towers' convolutions and matmuls to (XLA_FLAGS, set before the backend starts).

jaxlib 0.10's XLA:CPU gives whole subgraphs to YNNPACK by default. For VGGish on 2–8 patches that one graph runs
10× slower than the same layers compiled apart (0.47 s against 0.05 s for 4 patches on 2 cores), and ResNet50's
convolutions run 10–25 % slower than XNNPACK's. Routing each convolution to XNNPACK and each matmul to YNNPACK,
one operation at a time, is as fast or faster for every tower (`emohd bench fused`, README "Throughput").

`route_kernels` runs when `emohd_jax` is imported, so the CLI, the library and the tests compile the same way. It
changes nothing when the user already set either flag, when EMOHD_XLA_CPU_ROUTING=0, or when the process is
meant for an accelerator (JAX_PLATFORMS without cpu first, or a CUDA/ROCm/TPU plugin installed): the flags only
concern XLA:CPU, and a jaxlib that did not know them would refuse to start.
"""

from __future__ import annotations

import importlib.util
import os
from typing import MutableMapping

# flag → value; the values are XLA's LibraryFusionType names without their prefix.
KERNEL_ROUTING = {
    "xla_cpu_experimental_xnn_fusion_type": "individual_convolution",
    "xla_cpu_experimental_ynn_fusion_type": "individual_dot",
}
OPT_OUT = "EMOHD_XLA_CPU_ROUTING"
_ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin", "jax_rocm7_plugin", "libtpu")


def route_kernels(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Add `KERNEL_ROUTING` to XLA_FLAGS in `environ` for a CPU process; returns whether it did."""
    if environ.get(OPT_OUT, "1") == "0":
        return False
    platforms = environ.get("JAX_PLATFORMS", "")
    if platforms and platforms.split(",")[0].strip() != "cpu":
        return False
    if not platforms and any(importlib.util.find_spec(name) is not None for name in _ACCELERATOR_PLUGINS):
        return False
    flags = environ.get("XLA_FLAGS", "")
    if any(f"--{name}" in flags for name in KERNEL_ROUTING):
        return False
    environ["XLA_FLAGS"] = " ".join([flags, *(f"--{name}={value}" for name, value in KERNEL_ROUTING.items())]).strip()
    return True
