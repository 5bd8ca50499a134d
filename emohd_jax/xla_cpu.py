"""The XLA:CPU compiler options of the forward-only tower functions (`inference_jit`).

jaxlib 0.10's XLA:CPU gives whole subgraphs (convolutions, matmuls, elementwise work) to YNNPACK by default.
For VGGish on 2–8 patches that one graph runs 10× slower than the same layers compiled apart (0.47 s against
0.05 s for 4 patches on 2 cores). Letting YNNPACK take matmuls only, one at a time, and XLA's own emitters the
rest removes it and keeps every tower's inference as fast or faster (`emohd bench fused`). Training keeps the
default: its backward convolutions run 2.5× slower under this routing (`emohd bench train`, mini-Xception
162 → 59 img/s), so the option is given per jitted function, never through XLA_FLAGS.
"""

from __future__ import annotations

from typing import Any, Callable

import jax

# XLA DebugOptions field → value (a LibraryFusionType name); only read by the CPU compiler.
CPU_INFERENCE_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


def inference_jit(fn: Callable, **jit_kwargs: Any) -> Callable:
    """`jax.jit(fn, **jit_kwargs)` with `CPU_INFERENCE_OPTIONS` when the default backend is a CPU."""
    options = CPU_INFERENCE_OPTIONS if jax.default_backend() == "cpu" else None
    return jax.jit(fn, compiler_options=options, **jit_kwargs)
