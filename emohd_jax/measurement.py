"""Where a measured number goes (benchmarks, the ASR check): one JSON per run with the machine and package versions."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import time
from typing import Callable, Mapping

from etils import epath

_PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "torch", "transformers", "ctranslate2", "faster-whisper")


def machine_info() -> dict:
    """CPU/accelerator description and the versions that decide the numbers."""
    import jax

    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    devices = jax.devices()
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "jax_backend": jax.default_backend(),
        "devices": [d.device_kind for d in devices],
        "python": platform.python_version(),
        "versions": versions,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def time_call(fn: Callable[[], object], *, warmup: int = 1, repeats: int = 5) -> dict:
    """Wall time of `fn` (which must block until its result is ready): median and min over repeats."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return {"median_s": times[len(times) // 2], "min_s": times[0], "repeats": repeats}


def save(name: str, results: dict, out_dir: str | os.PathLike = "reports/bench") -> epath.Path:
    """Print and write `out_dir/<name>.json` with the machine description attached."""
    out = epath.Path(out_dir)  # local or gs://
    out.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "machine": machine_info(), **results}
    path = out / f"{name}.json"
    path.write_text(json.dumps(payload, indent=1))
    print(json.dumps(payload, indent=1))
    return path


def speed_ratios(seconds: Mapping[str, float | None]) -> dict[str, float]:
    """JAX / best PyTorch speed (> 1: JAX faster) from seconds per variant (`jax_float32`, `torch_compile_fp32`, …;
    None where not timed): `fp32` puts JAX fp32 against PyTorch fp32, `any_dtype` the fastest of each side."""
    timed = {k: s for k, s in seconds.items() if s}
    scopes = {"fp32": lambda k: k == "jax_float32" or (k.startswith("torch_") and k.endswith("_fp32")),
              "any_dtype": lambda k: True}
    ratios = {}
    for scope, included in scopes.items():
        jax_s = [s for k, s in timed.items() if k.startswith("jax_") and included(k)]
        torch_s = [s for k, s in timed.items() if k.startswith("torch_") and included(k)]
        if jax_s and torch_s:
            ratios[scope] = min(torch_s) / min(jax_s)
    return ratios


def torch_variants(modes: tuple[str, ...], *, cuda: bool) -> list[tuple[str, bool, bool]]:
    """(name, torch.compile?, bf16 autocast?) of the PyTorch references: each mode in fp32, and under bf16
    autocast compiled (eager too on a GPU). On a CPU oneDNN runs bf16 on AMX / AVX-512 BF16 where it has them."""
    return [(f"torch_{mode}_{kind}", mode == "compile", kind == "bf16") for kind in ("fp32", "bf16")
            for mode in modes if kind == "fp32" or mode == "compile" or cuda]
