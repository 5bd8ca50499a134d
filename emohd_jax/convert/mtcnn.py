"""facenet-pytorch's MTCNN weights → `emohd_jax/assets/mtcnn.safetensors` (run once, result committed).

    python -m emohd_jax.convert.mtcnn [--src DIR_WITH_PNET_RNET_ONET_PT] [--out PATH]

Also imports facenet-pytorch's own MTCNN code as the reference for tests and benchmarks, which
needs a stand-in for the two torchvision symbols it imports when torchvision is absent.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import pathlib
import sys
import types

import numpy as np

from emohd_jax.models import mtcnn
from emohd_jax.errors import CommandLineParser

_NETS = ("pnet", "rnet", "onet")


def facenet_weights_dir() -> pathlib.Path:
    """facenet-pytorch's data/ folder, found without importing the package (which needs torchvision)."""
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("facenet-pytorch is not installed (pip install --no-deps facenet-pytorch)")
    return pathlib.Path(spec.origin).parent / "data"


def _to_nnx_layout(net: str, torch_state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One net's torch state dict → flat NNX names: OIHW conv → HWIO, [out, in] dense → [in, out]."""
    out = {}
    for name, value in torch_state.items():
        layer, kind = name.rsplit(".", 1)
        if layer.startswith("prelu"):
            out[f"{net}.{layer}.negative_slope"] = value
        elif kind == "bias":
            out[f"{net}.{layer}.bias"] = value
        elif value.ndim == 4:
            out[f"{net}.{layer}.kernel"] = np.transpose(value, (2, 3, 1, 0))
        else:
            out[f"{net}.{layer}.kernel"] = value.T
    return out


def convert_facenet_mtcnn(src_dir: str | os.PathLike, out_path: str | os.PathLike) -> pathlib.Path:
    """Read pnet/rnet/onet.pt (plain state dicts) and write one safetensors file + provenance JSON."""
    import torch
    from safetensors.numpy import save_file

    src, out = pathlib.Path(src_dir), pathlib.Path(out_path)
    tensors, sources = {}, {}
    for net in _NETS:
        path = src / f"{net}.pt"
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise TypeError(f"{path}: expected a plain state dict of tensors")
        tensors.update(_to_nnx_layout(net, {k: v.numpy() for k, v in state.items()}))
        sources[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out))
    out.chmod(0o644)
    mtcnn.load(out)  # names and shapes must fit the modules
    provenance = {
        "made_by": f"python -m emohd_jax.convert.mtcnn --src {_shown(src)} --out {_shown(out)}",
        "function": "emohd_jax.convert.mtcnn.convert_facenet_mtcnn",
        "source": "facenet-pytorch " + _version("facenet-pytorch") + " data/{pnet,rnet,onet}.pt",
        "source_sha256": sources,
        "origin": "MTCNN (Zhang et al., 2016) Caffe weights, via davidsandberg/facenet and timesler/facenet-pytorch (MIT)",
        "layout": "NHWC; conv kernels HWIO, dense kernels [in, out] (dense inputs flattened width-major)",
        "torch": _version("torch"),
        "date": datetime.date.today().isoformat(),
    }
    out.with_suffix(".json").write_text(json.dumps(provenance, indent=1) + "\n")
    return out


def _shown(path: pathlib.Path) -> str:
    """A path as it reads on any machine: relative to site-packages or to the working directory."""
    path = path.resolve()
    for base, label in ((facenet_weights_dir().parents[1], "<site-packages>/"), (pathlib.Path.cwd(), "")):
        if path.is_relative_to(base):
            return label + str(path.relative_to(base))
    return str(path)


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _batched_nms_standin(boxes, scores, idxs, iou_threshold: float):
    """torchvision.ops.batched_nms semantics in plain torch: greedy by score, per index, IoU without +1."""
    import torch

    order = torch.argsort(scores, descending=True, stable=True)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    suppressed = torch.zeros(len(boxes), dtype=torch.bool)
    keep = []
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        lt = torch.maximum(boxes[i, :2], boxes[:, :2])
        rb = torch.minimum(boxes[i, 2:], boxes[:, 2:])
        inter = (rb - lt).clamp(min=0).prod(dim=1)
        iou = inter / (area[i] + area - inter)
        suppressed |= (iou > iou_threshold) & (idxs == idxs[i])
    return torch.tensor(keep, dtype=torch.long)


@contextlib.contextmanager
def _torchvision_standin():
    """Put a minimal `torchvision` in sys.modules for the duration of an import, then take it out."""
    names = ("torchvision", "torchvision.ops", "torchvision.ops.boxes",
             "torchvision.transforms", "torchvision.transforms.functional")
    modules = {name: types.ModuleType(name) for name in names}
    modules["torchvision.ops.boxes"].batched_nms = _batched_nms_standin
    modules["torchvision"].ops, modules["torchvision"].transforms = modules["torchvision.ops"], modules["torchvision.transforms"]
    modules["torchvision.ops"].boxes = modules["torchvision.ops.boxes"]
    modules["torchvision.transforms"].functional = modules["torchvision.transforms.functional"]
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name in names:
            sys.modules.pop(name, None)


def import_facenet_reference() -> tuple[types.ModuleType, types.ModuleType, str]:
    """facenet-pytorch's (models.mtcnn, models.utils.detect_face) modules and which NMS they use.

    With torchvision importable the real package is used; otherwise `batched_nms` is the plain-torch
    stand-in above (the nets themselves never touch torchvision).
    """
    try:
        import torchvision  # noqa: F401

        nms = "torchvision.ops.batched_nms"
        standin = contextlib.nullcontext()
    except Exception as err:  # ImportError, or the operator-registration error of a mismatched build
        nms = f"plain-torch stand-in for torchvision.ops.batched_nms (torchvision not importable: {type(err).__name__}: {err})"
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            sys.modules.pop(name)
        standin = _torchvision_standin()
    with standin:
        from facenet_pytorch.models import mtcnn as facenet_mtcnn
        from facenet_pytorch.models.utils import detect_face as facenet_detect_face
    return facenet_mtcnn, facenet_detect_face, nms


def main(argv: list[str] | None = None) -> None:
    parser = CommandLineParser(prog="emohd convert mtcnn", description=__doc__.splitlines()[0])
    parser.add_argument("--src", default=None, help="folder with pnet.pt, rnet.pt, onet.pt (default: facenet-pytorch's data/)")
    parser.add_argument("--out", default=str(mtcnn.DEFAULT_WEIGHTS))
    args = parser.parse_args(argv)
    print(convert_facenet_mtcnn(args.src or facenet_weights_dir(), args.out))


if __name__ == "__main__":
    main()
