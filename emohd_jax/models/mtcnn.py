"""The three MTCNN networks (Zhang et al., 2016) as NNX modules, laid out like facenet-pytorch's.

Inputs are NHWC images scaled to [-1, 1) by `normalize`. The weights come from facenet-pytorch's
pnet/rnet/onet.pt, converted once by `emohd_jax.convert.mtcnn` into `assets/mtcnn.safetensors`,
so running the detector needs neither torch nor facenet-pytorch.
"""

from __future__ import annotations

import os
import pathlib

import jax
import jax.numpy as jnp
from flax import nnx
from safetensors.numpy import load_file

from emohd_jax.models.flat_state import with_state_dict

DEFAULT_WEIGHTS = pathlib.Path(__file__).resolve().parents[1] / "assets" / "mtcnn.safetensors"


def normalize(pixels: jax.Array) -> jax.Array:
    """uint8-range pixels → the networks' input range, (x − 127.5) / 128."""
    return (pixels.astype(jnp.float32) - 127.5) * 0.0078125


def _max_pool_ceil(x: jax.Array, window: int, stride: int) -> jax.Array:
    """Max pooling with Caffe's ceil rounding (a last partial window is kept), as the weights expect."""
    padded = []
    for size in x.shape[1:3]:
        n_out = -(-(size - window) // stride) + 1
        padded.append((0, (n_out - 1) * stride + window - size))
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, window, window, 1), (1, stride, stride, 1),
                                 [(0, 0), *padded, (0, 0)])


def _flatten_width_major(x: jax.Array) -> jax.Array:
    """[n, h, w, c] → [n, w·h·c]: the dense layers were trained on width-major flattening."""
    return jnp.transpose(x, (0, 2, 1, 3)).reshape(x.shape[0], -1)


def _prelu(channels: int) -> nnx.PReLU:
    return nnx.PReLU(negative_slope_init=jnp.full((channels,), 0.25, jnp.float32))


def _conv(c_in: int, c_out: int, kernel: int, rngs: nnx.Rngs) -> nnx.Conv:
    return nnx.Conv(c_in, c_out, (kernel, kernel), padding="VALID", rngs=rngs)


class PNet(nnx.Module):
    """Proposal net: fully convolutional, one 12×12 window per output cell (stride 2)."""

    def __init__(self, rngs: nnx.Rngs):
        self.conv1, self.prelu1 = _conv(3, 10, 3, rngs), _prelu(10)
        self.conv2, self.prelu2 = _conv(10, 16, 3, rngs), _prelu(16)
        self.conv3, self.prelu3 = _conv(16, 32, 3, rngs), _prelu(32)
        self.conv4_1 = _conv(32, 2, 1, rngs)
        self.conv4_2 = _conv(32, 4, 1, rngs)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x: [n, h, w, 3] → (box offsets [n, h', w', 4], face probability [n, h', w'])."""
        x = _max_pool_ceil(self.prelu1(self.conv1(x)), 2, 2)
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        face_prob = jax.nn.softmax(self.conv4_1(x), axis=-1)[..., 1]
        return self.conv4_2(x), face_prob


class RNet(nnx.Module):
    """Refinement net on 24×24 crops of the PNet candidates."""

    def __init__(self, rngs: nnx.Rngs):
        self.conv1, self.prelu1 = _conv(3, 28, 3, rngs), _prelu(28)
        self.conv2, self.prelu2 = _conv(28, 48, 3, rngs), _prelu(48)
        self.conv3, self.prelu3 = _conv(48, 64, 2, rngs), _prelu(64)
        self.dense4, self.prelu4 = nnx.Linear(576, 128, rngs=rngs), _prelu(128)
        self.dense5_1 = nnx.Linear(128, 2, rngs=rngs)
        self.dense5_2 = nnx.Linear(128, 4, rngs=rngs)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x: [n, 24, 24, 3] → (box offsets [n, 4], face probability [n])."""
        x = _max_pool_ceil(self.prelu1(self.conv1(x)), 3, 2)
        x = _max_pool_ceil(self.prelu2(self.conv2(x)), 3, 2)
        x = self.prelu3(self.conv3(x))
        x = self.prelu4(self.dense4(_flatten_width_major(x)))
        return self.dense5_2(x), jax.nn.softmax(self.dense5_1(x), axis=-1)[:, 1]


class ONet(nnx.Module):
    """Output net on 48×48 crops: final box offsets, probability and five landmarks."""

    def __init__(self, rngs: nnx.Rngs):
        self.conv1, self.prelu1 = _conv(3, 32, 3, rngs), _prelu(32)
        self.conv2, self.prelu2 = _conv(32, 64, 3, rngs), _prelu(64)
        self.conv3, self.prelu3 = _conv(64, 64, 3, rngs), _prelu(64)
        self.conv4, self.prelu4 = _conv(64, 128, 2, rngs), _prelu(128)
        self.dense5, self.prelu5 = nnx.Linear(1152, 256, rngs=rngs), _prelu(256)
        self.dense6_1 = nnx.Linear(256, 2, rngs=rngs)
        self.dense6_2 = nnx.Linear(256, 4, rngs=rngs)
        self.dense6_3 = nnx.Linear(256, 10, rngs=rngs)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """x: [n, 48, 48, 3] → (box offsets [n, 4], landmarks [n, 10] (5 x then 5 y), face probability [n])."""
        x = _max_pool_ceil(self.prelu1(self.conv1(x)), 3, 2)
        x = _max_pool_ceil(self.prelu2(self.conv2(x)), 3, 2)
        x = _max_pool_ceil(self.prelu3(self.conv3(x)), 2, 2)
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(_flatten_width_major(x)))
        return self.dense6_2(x), self.dense6_3(x), jax.nn.softmax(self.dense6_1(x), axis=-1)[:, 1]


class MTCNNNets(nnx.Module):
    """The cascade's three networks together, so one safetensors file and one `load` hold them."""

    def __init__(self, rngs: nnx.Rngs):
        self.pnet, self.rnet, self.onet = PNet(rngs), RNet(rngs), ONet(rngs)


def load(path: str | os.PathLike = DEFAULT_WEIGHTS) -> MTCNNNets:
    """The networks filled from a safetensors file written by `convert_facenet_mtcnn`.

    Built abstractly (`nnx.eval_shape`): a random init would compile dozens of tiny programs first.
    """
    return with_state_dict(nnx.eval_shape(lambda: MTCNNNets(nnx.Rngs(0))), load_file(str(path)), source=path)
