"""Whisper's audio encoder in Flax NNX, returning every layer, with padded frames masked instead of a 30 s window.

Whisper (Radford et al., 2022): log-mel [frames, 80] → conv k3 + GELU → conv k3 stride 2 + GELU → + sinusoidal
positions → pre-LN transformer blocks → final LayerNorm. The original always encodes 30 s (3000 frames); here
a clip is encoded at its own length, and a batch of clips padded to a common length carries `frame_mask`, which
zeroes padded frames before each convolution (as a clip encoded alone would see its zero padding) and hides
padded positions from attention, so a clip's output does not depend on what it was batched with.
`emohd_jax.convert.whisper_ct2.load_whisper_encoder("base" | "tiny.en" | folder)` fills it from CTranslate2 weights.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


_LAYER_NORM_EPS = 1e-5


@dataclasses.dataclass(frozen=True)
class WhisperEncoderConfig:
    """Shape of the encoder; `max_positions` (1500 = 30 s after the stride-2 conv) bounds the input length."""

    n_mels: int = 80
    width: int = 512
    layers: int = 6
    heads: int = 8
    max_positions: int = 1500

    def __post_init__(self):
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")


# The packaged models' shapes, for code that sizes a head before loading (`load` reads them from the file).
CONFIGS = {
    "base": WhisperEncoderConfig(width=512, layers=6, heads=8),
    "tiny.en": WhisperEncoderConfig(width=384, layers=4, heads=6),
}


def sinusoids(length: int, channels: int) -> np.ndarray:
    """Whisper's position table: [length, channels], sin then cos over geometric timescales 1 … 10000."""
    increment = math.log(10000) / (channels // 2 - 1)
    inv_timescales = np.exp(-increment * np.arange(channels // 2))
    scaled = np.arange(length)[:, None] * inv_timescales[None, :]
    return np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1).astype(np.float32)


def output_mask(frame_mask: jax.Array) -> jax.Array:
    """frame_mask: [batch, frames] bool → [batch, ceil(frames/2)]: the encoder positions that cover a real frame
    (position j is centred on frame 2j); use it to pool the encoder's outputs."""
    return frame_mask[:, ::2]


def _gelu(x: jax.Array) -> jax.Array:
    return jax.nn.gelu(x, approximate=False)  # the erf form Whisper was trained with


class SelfAttention(nnx.Module):
    """Multi-head self-attention; Whisper's key projection has no bias."""

    def __init__(self, config: WhisperEncoderConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        dense = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.heads = config.heads
        self.query = nnx.Linear(config.width, config.width, **dense)
        self.key = nnx.Linear(config.width, config.width, use_bias=False, **dense)
        self.value = nnx.Linear(config.width, config.width, **dense)
        self.out = nnx.Linear(config.width, config.width, **dense)

    def __call__(self, x: jax.Array, key_mask: jax.Array | None) -> jax.Array:
        # x: [batch, time, width]; key_mask: [batch, time] bool, True for real positions → [batch, time, width]
        batch, time, width = x.shape
        split = lambda y: y.reshape(batch, time, self.heads, width // self.heads)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        context = jax.nn.dot_product_attention(split(self.query(x)), split(self.key(x)), split(self.value(x)),
                                               mask=mask)
        return self.out(context.reshape(batch, time, width))


class EncoderBlock(nnx.Module):
    """Pre-LN block: x += attn(LN(x)); x += MLP(LN(x)), MLP = 4× width with GELU."""

    def __init__(self, config: WhisperEncoderConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        dense = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        norm = dict(epsilon=_LAYER_NORM_EPS, use_fast_variance=False, **dense)
        self.attention_norm = nnx.LayerNorm(config.width, **norm)
        self.attention = SelfAttention(config, **dense)
        self.mlp_norm = nnx.LayerNorm(config.width, **norm)
        self.mlp_in = nnx.Linear(config.width, 4 * config.width, **dense)
        self.mlp_out = nnx.Linear(4 * config.width, config.width, **dense)

    def __call__(self, x: jax.Array, key_mask: jax.Array | None) -> jax.Array:
        # x: [batch, time, width] → [batch, time, width]
        x = x + self.attention(self.attention_norm(x), key_mask)
        return x + self.mlp_out(_gelu(self.mlp_in(self.mlp_norm(x))))


class WhisperEncoder(nnx.Module):
    """Whisper's encoder; `dtype` is the compute dtype, `param_dtype` the storage dtype (LayerNorm statistics and
    attention softmax stay in float32 under bf16 compute)."""

    def __init__(self, config: WhisperEncoderConfig, *, dtype=jnp.float32, param_dtype=jnp.float32,
                 rngs: nnx.Rngs):
        self.config = config
        conv = dict(kernel_size=(3,), padding=((1, 1),), dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.conv1 = nnx.Conv(config.n_mels, config.width, **conv)
        self.conv2 = nnx.Conv(config.width, config.width, strides=(2,), **conv)
        self.blocks = nnx.List([EncoderBlock(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
                                for _ in range(config.layers)])
        self.final_norm = nnx.LayerNorm(config.width, epsilon=_LAYER_NORM_EPS, use_fast_variance=False,
                                        dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.positions = nnx.Variable(jnp.asarray(sinusoids(config.max_positions, config.width)))

    def __call__(self, mel: jax.Array, frame_mask: jax.Array | None = None) -> jax.Array:
        """mel: [batch, frames, n_mels] (`emohd_jax.audio.whisper_mel.log_mel`), frame_mask: [batch, frames] bool
        (True for real frames, a prefix of each row; None: all real) → hidden: [layers + 1, batch,
        ceil(frames/2), width].

        hidden[0] is the embedding (convolutions + positions), hidden[i] for 1 ≤ i < layers the residual stream
        after block i, and hidden[layers] the last block's output after the final LayerNorm (what Whisper's
        decoder and `ctranslate2.models.Whisper.encode` see). Positions past `output_mask(frame_mask)` hold
        values that mean nothing.
        """
        time = -(-mel.shape[1] // 2)
        if time > self.config.max_positions:
            raise ValueError(f"{mel.shape[1]} frames exceed Whisper's {2 * self.config.max_positions} (30 s)")
        if frame_mask is None:
            key_mask = None
            x = _gelu(self.conv2(_gelu(self.conv1(mel))))
        else:
            keep = frame_mask[..., None]
            x = _gelu(self.conv1(jnp.where(keep, mel, 0)))
            x = _gelu(self.conv2(jnp.where(keep, x, 0)))
            key_mask = output_mask(frame_mask)
        x = x + self.positions[...][:time].astype(x.dtype)
        hidden = [x]
        for block in self.blocks:
            x = block(x, key_mask)
            hidden.append(x)
        hidden[-1] = self.final_norm(x)
        return jnp.stack(hidden)
