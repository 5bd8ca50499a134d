"""The two published VGGish checkpoint layouts → the flat state dict of Flax `VGGish` (`conv.0.kernel`, …).

(a) The PyTorch port (torchvggish's `VGG` class, e.g. vggish-10086976.pth): `features.{i}.weight`
    [out, in, 3, 3] for the convs in order, `embeddings.{0,2,4}.weight` [out, in] for fc1, fc2 and
    the embedding. Its FC input is flattened after permuting to NHWC, so fc1 needs no reordering.
(b) The original TensorFlow checkpoint (vggish_model.ckpt): `vggish/conv1/weights` [3, 3, in, out],
    `vggish/conv3/conv3_1/weights`, …, `vggish/fc1/fc1_1/weights` [in, out], `vggish/fc2/weights`,
    each with `…/biases`; read from a .npz (no TensorFlow needed) or with TensorFlow when installed.

Writing a safetensors asset for `emohd_jax.models.vggish.load_vggish_weights`:
    python -m emohd_jax.convert.vggish --torch vggish-10086976.pth --out vggish.safetensors
    python -m emohd_jax.convert.vggish --tf vggish_model.ckpt --out vggish.safetensors
"""

from __future__ import annotations

import os
import pathlib
from typing import Mapping

import numpy as np

from emohd_jax.models.vggish import VGGishConfig
from emohd_jax.errors import CommandLineParser


def from_torch_state_dict(state_dict: Mapping[str, object], *, dtype=np.float32) -> dict[str, np.ndarray]:
    """torchvggish `VGG.state_dict()` (tensors or arrays) → Flax VGGish flat state dict in `dtype`."""
    tensors = {name: _numpy(value, dtype) for name, value in state_dict.items()}
    unknown = sorted(n for n in tensors if not n.startswith(("features.", "embeddings.")))
    if unknown:
        raise KeyError(f"not a torchvggish VGG state dict: unexpected {unknown[:5]}")
    convs = _layer_indices(tensors, "features")
    dense = _layer_indices(tensors, "embeddings")
    if not convs or len(dense) < 2:
        raise KeyError("not a torchvggish VGG state dict: needs features.*.weight and at least two embeddings.*.weight")
    out = {}
    for i, layer in enumerate(convs):
        out[f"conv.{i}.kernel"] = tensors[f"features.{layer}.weight"].transpose(2, 3, 1, 0)  # → [kh, kw, in, out]
        out[f"conv.{i}.bias"] = tensors[f"features.{layer}.bias"]
    for name, layer in zip([f"fc.{i}" for i in range(len(dense) - 1)] + ["embedding"], dense):
        out[f"{name}.kernel"] = tensors[f"embeddings.{layer}.weight"].T  # → [in, out]
        out[f"{name}.bias"] = tensors[f"embeddings.{layer}.bias"]
    return out


def tf_variable_scopes(config: VGGishConfig = VGGishConfig()) -> dict[str, str]:
    """{Flax layer: TF scope}, e.g. "conv.2" → "vggish/conv3/conv3_1", "embedding" → "vggish/fc2"."""
    scopes, conv = {}, 0
    for b, block in enumerate(config.conv_blocks, start=1):
        for j in range(1, len(block) + 1):
            scopes[f"conv.{conv}"] = f"vggish/conv{b}" if len(block) == 1 else f"vggish/conv{b}/conv{b}_{j}"
            conv += 1
    for j in range(1, len(config.fc_widths) + 1):
        scopes[f"fc.{j - 1}"] = f"vggish/fc1/fc1_{j}"
    scopes["embedding"] = "vggish/fc2"
    return scopes


def from_tf_variables(variables: Mapping[str, np.ndarray], config: VGGishConfig = VGGishConfig(), *,
                      dtype=np.float32) -> dict[str, np.ndarray]:
    """{TF variable name: array} → Flax VGGish flat state dict; other variables (optimizer slots, step) are ignored."""
    variables = {name.removesuffix(":0"): value for name, value in variables.items()}
    wanted = {f"{scope}/{suffix}": f"{layer}.{param}"
              for layer, scope in tf_variable_scopes(config).items()
              for suffix, param in (("weights", "kernel"), ("biases", "bias"))}
    missing = sorted(set(wanted) - set(variables))
    if missing:
        raise KeyError(f"not a VGGish TF checkpoint for this config: missing {missing[:5]}")
    # TF already stores conv kernels HWIO and dense kernels [in, out], flattened in NHWC order.
    return {flax_name: np.asarray(variables[tf_name], dtype) for tf_name, flax_name in wanted.items()}


def read_torch_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A .pth state dict, loaded without unpickling arbitrary objects (torch.load(weights_only=True))."""
    try:
        import torch
    except ImportError as err:
        raise ImportError("reading a .pth checkpoint needs PyTorch: pip install torch (CPU build is enough)") from err
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    return {name: _numpy(value, np.float32) for name, value in state_dict.items()}


def read_tf_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """{variable name: array} from a .npz of TF variables, or from a TF checkpoint prefix (needs TensorFlow)."""
    path = pathlib.Path(path)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    try:
        import tensorflow as tf
    except ImportError as err:
        raise ImportError(f"reading the TF checkpoint {path} needs TensorFlow (pip install tensorflow-cpu); "
                          "or export its variables to a .npz elsewhere and pass that") from err
    reader = tf.train.load_checkpoint(str(path))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def _layer_indices(tensors: Mapping[str, np.ndarray], prefix: str) -> list[int]:
    """Sorted i of every `{prefix}.{i}.weight`: the Sequential positions of the layers that hold weights."""
    return sorted(int(name.split(".")[1]) for name in tensors
                  if name.startswith(prefix + ".") and name.endswith(".weight"))


def _numpy(value: object, dtype) -> np.ndarray:
    """NumPy copy of a torch tensor or array in `dtype`."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype)


def main(argv: list[str] | None = None) -> None:
    parser = CommandLineParser(prog="emohd convert vggish", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--torch", help="torchvggish .pth state dict")
    source.add_argument("--tf", help="TF checkpoint prefix (needs TensorFlow) or .npz of its variables")
    parser.add_argument("--out", required=True, help="where to write the safetensors file")
    args = parser.parse_args(argv)
    import safetensors.numpy

    tensors = (from_torch_state_dict(read_torch_checkpoint(args.torch)) if args.torch
               else from_tf_variables(read_tf_checkpoint(args.tf)))
    safetensors.numpy.save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, args.out)
    print(f"wrote {len(tensors)} tensors to {args.out}")


if __name__ == "__main__":
    main()
