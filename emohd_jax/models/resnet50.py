"""ResNet50 in two layouts: torchvision's and the VGGFace2 release's (Caffe-style, SPEC §2.3).

`vggface2` (Cao et al. 2018, resnet50_ft / resnet50_scratch as ported by cydonia999/VGGFace2-pytorch):
stride on the first 1×1 conv of each bottleneck, stem max pool without padding and with ceil mode,
8631-way identity head, input 224×224 BGR minus the per-channel mean, no scaling.
`torchvision`: stride on the 3×3 conv, max pool padded by 1, ImageNet RGB mean/std input.
Both use BatchNorm with eps 1e-5 (PyTorch's default). Parameter paths follow torchvision names with
`stages.{s}.{b}` for `layer{s+1}.{b}`, so converters and `top_layer_paths` stay simple.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from emohd_jax.models.flops import conv2d

VARIANTS = ("vggface2", "torchvision")
VGGFACE2_MEAN_BGR = (91.4953, 103.8827, 131.0912)  # from resnet50_ft.prototxt
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
INPUT_SIZE = 224
FEATURE_DIM = 2048

_BN_EPSILON = 1e-5
_BN_MOMENTUM = 0.9  # PyTorch's momentum 0.1 in Flax's convention


@dataclasses.dataclass(frozen=True)
class ResNetConfig:
    variant: str = "vggface2"
    num_classes: int = 8631             # VGGFace2 identities; 1000 for ImageNet, 7 for expressions
    depths: tuple[int, ...] = (3, 4, 6, 3)
    widths: tuple[int, ...] = (64, 128, 256, 512)  # bottleneck widths; block outputs are 4× wider

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown ResNet variant {self.variant!r} (choose from {', '.join(VARIANTS)})")


def _conv(in_features: int, out_features: int, kernel: int, stride: int, layer: dict) -> nnx.Conv:
    # PyTorch's symmetric padding: "SAME" would pad strided convs asymmetrically and shift the grid.
    pad = kernel // 2
    return nnx.Conv(in_features, out_features, (kernel, kernel), strides=stride,
                    padding=((pad, pad), (pad, pad)), use_bias=False, **layer)


def _batch_norm(features: int, layer: dict) -> nnx.BatchNorm:
    # `layer`: dtype, param_dtype and rngs; statistics are computed and kept in fp32 whatever the dtype.
    return nnx.BatchNorm(features, epsilon=_BN_EPSILON, momentum=_BN_MOMENTUM, **layer)


class Bottleneck(nnx.Module):
    """1×1 reduce → 3×3 → 1×1 expand, plus a projected shortcut when shape changes."""

    def __init__(self, in_features: int, width: int, stride: int, *, stride_on_first: bool, layer: dict):
        out_features = 4 * width
        self.conv1 = _conv(in_features, width, 1, stride if stride_on_first else 1, layer)
        self.bn1 = _batch_norm(width, layer)
        self.conv2 = _conv(width, width, 3, 1 if stride_on_first else stride, layer)
        self.bn2 = _batch_norm(width, layer)
        self.conv3 = _conv(width, out_features, 1, 1, layer)
        self.bn3 = _batch_norm(out_features, layer)
        if stride != 1 or in_features != out_features:
            self.downsample_conv = _conv(in_features, out_features, 1, stride, layer)
            self.downsample_bn = _batch_norm(out_features, layer)
        else:
            self.downsample_conv = self.downsample_bn = None

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        eval_bn = not train
        y = nnx.relu(self.bn1(self.conv1(x), use_running_average=eval_bn))
        y = nnx.relu(self.bn2(self.conv2(y), use_running_average=eval_bn))
        y = self.bn3(self.conv3(y), use_running_average=eval_bn)
        if self.downsample_conv is not None:
            x = self.downsample_bn(self.downsample_conv(x), use_running_average=eval_bn)
        return nnx.relu(x + y)


class ResNet50(nnx.Module):
    """images: [batch, h, w, 3] preprocessed (see `preprocess_faces`) → logits [batch, num_classes] fp32.

    `dtype`: the compute dtype of every layer (images are cast by the first conv); `param_dtype`: storage.
    """

    def __init__(self, config: ResNetConfig = ResNetConfig(), *, dtype=jnp.float32, param_dtype=jnp.float32,
                 rngs: nnx.Rngs):
        self.config = config
        self.dtype, self.param_dtype = dtype, param_dtype
        layer = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.conv1 = _conv(3, 64, 7, 2, layer)
        self.bn1 = _batch_norm(64, layer)
        stride_on_first = config.variant == "vggface2"
        stages, in_features = [], 64
        for s, (depth, width) in enumerate(zip(config.depths, config.widths)):
            blocks = []
            for b in range(depth):
                stride = 2 if s > 0 and b == 0 else 1
                blocks.append(Bottleneck(in_features, width, stride, stride_on_first=stride_on_first, layer=layer))
                in_features = 4 * width
            stages.append(nnx.List(blocks))
        self.stages = nnx.List(stages)
        self.fc = nnx.Linear(in_features, config.num_classes, **layer)

    def replace_head(self, num_classes: int, *, rngs: nnx.Rngs) -> None:
        """A fresh classifier for a new task (stage 1: 7 expressions instead of 8631 identities)."""
        self.fc = nnx.Linear(self.fc.in_features, num_classes, dtype=self.dtype, param_dtype=self.param_dtype,
                             rngs=rngs)
        self.config = dataclasses.replace(self.config, num_classes=num_classes)

    def _stem_pool(self, x: jax.Array) -> jax.Array:
        if self.config.variant == "torchvision":
            return nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        # Caffe pools with ceil mode and no padding: pad only the far edge, just enough for the last window.
        pads = [(0, 2 * (math.ceil((n - 3) / 2)) + 3 - n) for n in x.shape[1:3]]
        return nnx.max_pool(x, (3, 3), strides=(2, 2), padding=pads)

    def features(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """Pooled backbone output: [batch, h, w, 3] → [batch, 2048].

        Global average pooling; equals the release's 7×7 AvgPool at 224×224 input.
        """
        eval_bn = not train
        x = nnx.relu(self.bn1(self.conv1(x), use_running_average=eval_bn))
        x = self._stem_pool(x)
        for stage in self.stages:
            for block in stage:
                x = block(x, train=train)
        return x.mean(axis=(1, 2))

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        # fp32 logits, so the loss and the softmax are stable under bf16 compute
        return self.fc(self.features(x, train=train)).astype(jnp.float32)


def resize_faces(images: np.ndarray) -> np.ndarray:
    """uint8 faces [b, h, w] (gray) or [b, h, w, 3] (RGB) → uint8 RGB [b, 224, 224, 3]: what feature shards store."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = np.repeat(images[..., None], 3, axis=-1)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected faces [b, h, w] or [b, h, w, 3], got shape {images.shape}")
    if images.shape[1:3] == (INPUT_SIZE, INPUT_SIZE):
        return images.astype(np.uint8)
    x = jax.image.resize(jnp.asarray(images, jnp.float32), (images.shape[0], INPUT_SIZE, INPUT_SIZE, 3),
                         method="linear", antialias=True)
    return np.asarray(jnp.clip(jnp.round(x), 0, 255)).astype(np.uint8)


def preprocess_faces(images, variant: str = "vggface2") -> jax.Array:
    """uint8 faces of any size (see `resize_faces`) → float32 [b, 224, 224, 3] in the variant's input convention.

    Faces already at 224×224 (what shards store) are only normalised, so this also runs on device inside jit.
    """
    if images.ndim != 4 or images.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3):
        images = resize_faces(images)
    x = jnp.asarray(images, jnp.float32)
    if variant == "vggface2":
        return x[..., ::-1] - jnp.asarray(VGGFACE2_MEAN_BGR, jnp.float32)
    if variant == "torchvision":
        return (x / 255.0 - jnp.asarray(IMAGENET_MEAN_RGB)) / jnp.asarray(IMAGENET_STD_RGB)
    raise ValueError(f"unknown ResNet variant {variant!r} (choose from {', '.join(VARIANTS)})")


def conv_layer_paths(model: ResNet50) -> list[tuple[str, str]]:
    """(conv path, its BN path) for every conv, in Keras' layer order (shortcut after conv3)."""
    layers = [("conv1", "bn1")]
    for s, stage in enumerate(model.stages):
        for b, block in enumerate(stage):
            prefix = f"stages.{s}.{b}"
            layers += [(f"{prefix}.conv{i}", f"{prefix}.bn{i}") for i in (1, 2, 3)]
            if block.downsample_conv is not None:
                layers.append((f"{prefix}.downsample_conv", f"{prefix}.downsample_bn"))
    return layers


def top_layer_paths(model: ResNet50, num_conv: int = 9) -> list[str]:
    """Module paths of the last `num_conv` convs and their BNs (SPEC §2.3: the top 10 layers are the
    last 9 convs + the parameter-free average pool). The head `fc` is not included."""
    if num_conv < 0:
        raise ValueError(f"num_conv must be >= 0, got {num_conv}")
    layers = conv_layer_paths(model)
    return [path for pair in layers[len(layers) - num_conv:] for path in pair] if num_conv else []


def path_filter(prefixes: list[str]) -> Callable[[tuple, Any], bool]:
    """An NNX filter `(path, value) -> bool` selecting variables under any of the dotted `prefixes`,
    e.g. `nnx.All(nnx.Param, path_filter(top_layer_paths(model) + ["fc"]))` for the trainable set."""
    def selects(path: tuple, _value: Any) -> bool:
        dotted = ".".join(map(str, path))
        return any(dotted == p or dotted.startswith(p + ".") for p in prefixes)
    return selects



def flops_per_image(config: ResNetConfig = ResNetConfig(), *, size: int = INPUT_SIZE, head: bool = True) -> int:
    """Forward convolution and dense FLOPs of one `size`² image (`models.flops` convention); BatchNorm, ReLU,
    pooling and the residual adds (< 1 %) are left out. `head=False`: up to the pooled features."""
    side, _, total = conv2d(size, size, 7, 2, 3, 3, 64)
    side = -(-(side - 3) // 2) + 1 if config.variant == "vggface2" else (side + 2 - 3) // 2 + 1  # 3×3/2 max pool
    in_features = 64
    for stage, (depth, width) in enumerate(zip(config.depths, config.widths)):
        for block in range(depth):
            stride = 2 if stage > 0 and block == 0 else 1
            first_stride, middle_stride = (stride, 1) if config.variant == "vggface2" else (1, stride)
            reduced, _, flops_1 = conv2d(side, side, 1, first_stride, 0, in_features, width)
            out_side, _, flops_2 = conv2d(reduced, reduced, 3, middle_stride, 1, width, width)
            total += flops_1 + flops_2 + conv2d(out_side, out_side, 1, 1, 0, width, 4 * width)[2]
            if block == 0:
                total += conv2d(side, side, 1, stride, 0, in_features, 4 * width)[2]  # projected shortcut
            in_features, side = 4 * width, out_side
    return total + (2 * in_features * config.num_classes if head else 0)
