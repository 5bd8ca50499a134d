"""Traced programs kept between runs: a jitted function's lowered program (`jax.export`) saved on disk.

JAX's persistent compilation cache skips XLA's compile on a second run, but every process still traces the
Python function and lowers it to StableHLO first, to compute the cache key. For the towers that is most of
a warm `emohd predict` start: the face tower traces mini-Xception once per test-time view, MTCNN's PNet once
per pyramid scale, and each lowering walks the whole graph again. A `CachedProgram` saves the lowered program
once (`jax.export.Exported.serialize`) and later runs load it and call it: no tracing, no lowering of the
model, and the compile of the call hits the compilation cache.

What a saved program depends on is in its file name's digest: this package's source files, the versions of
jax, jaxlib and flax, the backend, the caller's `key` (what the function closes over that the sources do
not determine: a tower's config, its bundle's digest) and the arguments' tree, shapes and dtypes. Weights
are arguments, never constants, so a saved program serves any weights of the same shapes. `enable(folder)`
turns it on for the process (`emohd predict` does, beside the compilation cache); off, a `CachedProgram`
is the jitted function it wraps.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import pathlib
import tempfile
from typing import Any, Callable

import jax

from emohd_jax.xla_cpu import inference_jit

_PACKAGE = pathlib.Path(__file__).resolve().parent
_folder: pathlib.Path | None = None


def enable(folder: str | os.PathLike | None) -> None:
    """Keep the programs in `folder` (created on first save); None: keep none (every call traces as jit does)."""
    global _folder
    _folder = pathlib.Path(folder) if folder is not None else None


@functools.cache
def code_digest() -> str:
    """sha256 over this package's Python sources and the library versions a lowered program depends on."""
    digest = hashlib.sha256()
    for name in ("jax", "jaxlib", "flax"):
        digest.update(f"{name}={importlib.metadata.version(name)};".encode())
    digest.update(jax.default_backend().encode())
    for path in sorted(_PACKAGE.rglob("*.py")):
        digest.update(str(path.relative_to(_PACKAGE)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


class CachedProgram:
    """`inference_jit(fn)` whose lowered program per argument signature is saved once and loaded afterwards.

    `name` names the files; `key` must change whenever `fn` would compute something else for the same sources
    and argument shapes (what its closure holds). Calls take and return arrays (pytrees of them).
    `cpu_inference`: compiled with `xla_cpu.CPU_INFERENCE_OPTIONS` (else as `jax.jit` compiles).
    """

    def __init__(self, fn: Callable, *, name: str, key: str = "", cpu_inference: bool = True):
        self.fn, self.name, self.key = fn, name, key
        self._jit = inference_jit if cpu_inference else jax.jit
        self._jitted = self._jit(fn)
        self._calls: dict[tuple, Callable] = {}  # argument signature → a jitted call of its exported program

    def __call__(self, *args: Any) -> Any:
        if _folder is None:
            return self._jitted(*args)
        leaves, tree = jax.tree.flatten(args)
        signature = (str(tree), *((tuple(jax.numpy.shape(x)), str(jax.numpy.result_type(x))) for x in leaves))
        call = self._calls.get(signature)
        if call is None:
            call = self._calls[signature] = self._load_or_export(signature, tree, leaves)
        return call(*leaves)

    def _load_or_export(self, signature: tuple, tree, leaves: list) -> Callable:
        digest = hashlib.sha256(repr((code_digest(), self.name, self.key, signature)).encode()).hexdigest()[:32]
        path = _folder / f"{self.name}-{digest}.exported"
        exported = None
        if path.is_file():
            try:
                exported = jax.export.deserialize(bytearray(path.read_bytes()))
            except Exception:  # a truncated or foreign file: exported again below, never a failure
                exported = None
        if exported is None:
            flat = lambda *flat_args: self.fn(*jax.tree.unflatten(tree, flat_args))  # noqa: E731
            exported = jax.export.export(self._jit(flat))(*leaves)
            _write_atomically(path, exported.serialize())
        return self._jit(exported.call)


def _write_atomically(path: pathlib.Path, data: bytes) -> None:
    """Another process may write the same program at the same time: each writes its own file, then renames."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(handle, "wb") as f:
            f.write(data)
        os.replace(temporary, path)
    except OSError:  # a read-only or full cache only costs the next run its tracing
        pass
