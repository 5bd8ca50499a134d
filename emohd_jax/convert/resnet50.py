"""PyTorch ResNet50 weights → Flax `ResNet50`: torchvision state dicts (.pth) and the VGGFace2
release (cydonia999/VGGFace2-pytorch: a Python-2 pickle of {torchvision-style name: ndarray}).

The VGGFace2 pickle is read by `SafeArrayUnpickler`, which only admits NumPy arrays and plain
containers: a pickle that names any other callable is refused before anything runs.
"""

from __future__ import annotations

import os
import pickle
import re
from typing import Mapping

import numpy as np
from flax import nnx

from emohd_jax.models.flat_state import with_state_dict
from emohd_jax.models.resnet50 import ResNet50, ResNetConfig


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle references something other than NumPy arrays and plain containers."""


class SafeArrayUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals NumPy array pickles need (and OrderedDict)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
    }

    def __init__(self, file, *, source: str = "<bytes>"):
        super().__init__(file, encoding="latin1")  # the release was pickled by Python 2
        self.source = source

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise UnsafePickleError(f"{self.source}: refusing to load {module}.{name}: only NumPy arrays "
                                    "and plain containers are allowed in a weights pickle")
        if module.startswith("numpy.core."):  # Python-2/NumPy-1 name of the same function
            module = "numpy._core." + module.removeprefix("numpy.core.")
        return super().find_class(module, name)


def read_vggface2_pickle(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """{name: ndarray} from the VGGFace2 PyTorch release's .pkl, through the restricted unpickler."""
    with open(path, "rb") as f:
        weights = SafeArrayUnpickler(f, source=str(path)).load()
    if not isinstance(weights, Mapping):
        raise UnsafePickleError(f"{path}: expected a dict of arrays, got {type(weights).__name__}")
    bad = [name for name, value in weights.items()
           if not isinstance(value, np.ndarray) or value.dtype.kind not in "fiu"]
    if bad:
        raise UnsafePickleError(f"{path}: entries {bad[:5]} are not numeric NumPy arrays")
    return dict(weights)


def read_torchvision_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """{name: ndarray} from a torchvision .pth (tensors only: `torch.load(weights_only=True)`)."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    if "state_dict" in state:  # training checkpoints wrap the weights
        state = state["state_dict"]
    return {name.removeprefix("module."): value.numpy() for name, value in state.items()}


_BN_NAMES = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}


def _flax_name(torch_name: str) -> str | None:
    """torchvision name → `ResNet50` state path; None for entries with no Flax counterpart."""
    if torch_name.endswith("num_batches_tracked"):
        return None
    name = re.sub(r"^layer(\d)\.", lambda m: f"stages.{int(m.group(1)) - 1}.", torch_name)
    name = name.replace("downsample.0.", "downsample_conv.").replace("downsample.1.", "downsample_bn.")
    module, _, leaf = name.rpartition(".")
    if module.split(".")[-1].startswith(("bn", "downsample_bn")):
        return f"{module}.{_BN_NAMES[leaf]}"
    return f"{module}.{'bias' if leaf == 'bias' else 'kernel'}"


def torch_to_flat_state(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rename and transpose PyTorch ResNet weights (OIHW convs, [out, in] linear) into Flax layout."""
    out = {}
    for torch_name, value in tensors.items():
        name = _flax_name(torch_name)
        if name is None:
            continue
        value = np.asarray(value, np.float32)
        if value.ndim == 4:
            value = value.transpose(2, 3, 1, 0)  # [out, in, kh, kw] → [kh, kw, in, out]
        elif value.ndim == 2:
            value = value.T
        out[name] = np.ascontiguousarray(value)
    return out


def resnet50_from_torch(tensors: Mapping[str, np.ndarray], variant: str) -> ResNet50:
    """A ResNet50 of `variant` filled from a torchvision-named dict; the head size comes from fc.weight."""
    config = ResNetConfig(variant=variant, num_classes=int(np.shape(tensors["fc.weight"])[0]))
    abstract = nnx.eval_shape(lambda: ResNet50(config, rngs=nnx.Rngs(0)))
    return with_state_dict(abstract, torch_to_flat_state(tensors))


def load_vggface2(path: str | os.PathLike) -> ResNet50:
    """The VGGFace2 release (resnet50_ft_weight.pkl / resnet50_scratch_weight.pkl) as a Flax model."""
    return resnet50_from_torch(read_vggface2_pickle(path), "vggface2")


def load_torchvision(path: str | os.PathLike) -> ResNet50:
    """A torchvision resnet50 .pth as a Flax model (torchvision layout)."""
    return resnet50_from_torch(read_torchvision_state_dict(path), "torchvision")
