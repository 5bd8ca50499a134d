"""VGGish (Hershey et al., 2017) in Flax NNX, and the 7-way emotion classifier built on it (SPEC §3.3).

Input: log-mel patches [batch, 96, 64] from `emohd_jax.audio.log_mel`, used as a 96×64 one-channel
image (NHWC). Four conv blocks (3×3 SAME, ReLU; 2×2/2 max pool after each), flatten in NHWC order
(the TF original's order, which torchvggish reproduces by permuting before `view`), FC 4096 → 4096,
then the 128-d embedding layer.

The classifier replaces that final 128-d layer by a 7-way layer whose logits go through a softmax
(SPEC: "final layer replaced by a 7-way softmax"); `keep_embedding=True` keeps the 128-d layer and
puts the 7-way layer on top instead. Parameters live under `conv/…`, `fc/…`, `embedding/…` and
`head/…`, so "convolutions frozen, fully connected trainable" is a path rule (`trainable_patterns`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from emohd_jax.classes import NUM_CLASSES
from emohd_jax.models.flat_state import fill
from emohd_jax.models.flops import conv2d

@dataclasses.dataclass(frozen=True)
class LogMelSpec:
    """The VGGish input recipe; the defaults are the published constants (vggish_params.py)."""

    sample_rate: int = 16000
    window_length: int = 400        # 25 ms
    hop_length: int = 160           # 10 ms
    fft_length: int = 512
    num_mel_bins: int = 64
    mel_min_hz: float = 125.0
    mel_max_hz: float = 7500.0
    log_offset: float = 0.01
    patch_frames: int = 96          # 0.96 s
    patch_hop_frames: int = 96      # non-overlapping

    @property
    def fft_bins(self) -> int:
        return self.fft_length // 2 + 1

    @property
    def patch_samples(self) -> int:
        """Samples needed for exactly one patch (15,600 for VGGish)."""
        return self.window_length + (self.patch_frames - 1) * self.hop_length


VGGISH_LOG_MEL = LogMelSpec()


INPUT_FRAMES = VGGISH_LOG_MEL.patch_frames   # 96
INPUT_BANDS = VGGISH_LOG_MEL.num_mel_bins    # 64
# He initialisation: VGGish has no normalisation layers, and from scratch the default LeCun init
# left the ReLU stack at chance loss for hundreds of steps. Published weights overwrite it anyway.
_HE = nnx.initializers.he_normal()


@dataclasses.dataclass(frozen=True)
class VGGishConfig:
    """Layer widths; the defaults are the published VGGish."""

    conv_blocks: tuple[tuple[int, ...], ...] = ((64,), (128,), (256, 256), (512, 512))
    fc_widths: tuple[int, ...] = (4096, 4096)
    embedding_size: int = 128
    embedding_relu: bool = True     # the torchvggish port applies ReLU to the embedding
    keep_embedding: bool = False    # classifier: 7-way layer on top of the 128-d layer instead of replacing it
    dropout: float = 0.0            # after each FC layer, in training only (not in the original)
    num_classes: int = NUM_CLASSES


# "small": VGGish-shaped at 1/4 conv width and 1/8 FC width (≈2.1 M parameters instead of ≈72 M),
# for training from scratch on CPU when no pretrained weights are available.
VGGISH_CONFIGS: dict[str, VGGishConfig] = {
    "full": VGGishConfig(),
    "small": VGGishConfig(conv_blocks=((16,), (32,), (64, 64), (128, 128)), fc_widths=(512, 512), dropout=0.3),
}

CONV_PATTERN = r"(^|/)conv/"
FC_PATTERN = r"(^|/)(fc|embedding|head)/"


def trainable_patterns(freeze_conv: bool) -> tuple[str, ...]:
    """Regexes over parameter paths for `config.optim.trainable`: FC layers only, or everything (empty)."""
    return (FC_PATTERN,) if freeze_conv else ()


class VGGish(nnx.Module):
    """patches: [batch, 96, 64] → embedding: [batch, 128], or the last FC features without the embedding layer.

    `dtype`: the compute dtype of every layer (patches are cast by the first conv); `param_dtype`: storage.
    """

    def __init__(self, config: VGGishConfig = VGGishConfig(), *, with_embedding: bool = True, dtype=jnp.float32,
                 param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.config = config
        layer = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        convs, in_features = [], 1
        for block in config.conv_blocks:
            for width in block:
                convs.append(nnx.Conv(in_features, width, (3, 3), padding="SAME", kernel_init=_HE, **layer))
                in_features = width
        self.conv = nnx.List(convs)
        # index of the last conv of each block, after which a 2×2 max pool halves the grid
        self.pool_after = tuple(int(i) for i in np.cumsum([len(block) for block in config.conv_blocks]) - 1)
        pooled = 2 ** len(config.conv_blocks)
        widths = ((INPUT_FRAMES // pooled) * (INPUT_BANDS // pooled) * in_features,) + tuple(config.fc_widths)
        self.fc = nnx.List([nnx.Linear(a, b, kernel_init=_HE, **layer) for a, b in zip(widths[:-1], widths[1:])])
        self.dropout = nnx.Dropout(config.dropout, rngs=rngs)
        self.embedding = nnx.Linear(widths[-1], config.embedding_size, **layer) if with_embedding else None

    @property
    def output_size(self) -> int:
        return self.config.embedding_size if self.embedding is not None else self.config.fc_widths[-1]

    def __call__(self, patches: jax.Array, *, train: bool = False) -> jax.Array:
        x = patches[..., None]  # [batch, 96, 64, 1]
        for i, conv in enumerate(self.conv):
            x = nnx.relu(conv(x))
            if i in self.pool_after:
                x = nnx.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape(x.shape[0], -1)  # [batch, 6 * 4 * 512], NHWC order as in the TF original
        for fc in self.fc:
            x = self.dropout(nnx.relu(fc(x)), deterministic=not train)
        if self.embedding is not None:
            x = self.embedding(x)
            x = nnx.relu(x) if self.config.embedding_relu else x
        return x


class VGGishClassifier(nnx.Module):
    """patches: [batch, 96, 64] → logits: [batch, 7] fp32 (canonical class order; softmax gives the probabilities)."""

    def __init__(self, config: VGGishConfig = VGGishConfig(), *, dtype=jnp.float32, param_dtype=jnp.float32,
                 rngs: nnx.Rngs):
        layer = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.vggish = VGGish(config, with_embedding=config.keep_embedding, **layer)
        self.head = nnx.Linear(self.vggish.output_size, config.num_classes, **layer)

    def __call__(self, patches: jax.Array, *, train: bool = False) -> jax.Array:
        # fp32 logits, so the loss and the softmax are stable under bf16 compute
        return self.head(self.vggish(patches, train=train)).astype(jnp.float32)


def load_vggish_weights(model: VGGish | VGGishClassifier, tensors: dict[str, np.ndarray], *,
                        source: str = "VGGish weights") -> None:
    """Fill the VGGish part of `model` in place from a full VGGish flat state dict (`conv.0.kernel`, …).

    The converters in `emohd_jax.convert.vggish` produce `tensors`; a classifier that replaced the
    embedding layer simply does not take it, and its 7-way head keeps its initialisation.
    """
    trunk = model.vggish if isinstance(model, VGGishClassifier) else model
    if trunk.embedding is None:
        tensors = {k: v for k, v in tensors.items() if not k.startswith("embedding.")}
    # Only nnx.Param: the dropout's RNG state is not a weight.
    params = nnx.state(trunk, nnx.Param)
    fill(params, tensors, source=source)
    nnx.update(trunk, params)



def flops_per_patch(config: VGGishConfig = VGGishConfig()) -> int:
    """Forward conv and dense FLOPs (`models.flops` convention) of the classifier on one 96×64 patch; ReLU and
    pooling (< 1 %) are left out."""
    total, height, width, in_features = 0, INPUT_FRAMES, INPUT_BANDS, 1
    for block in config.conv_blocks:
        for out_features in block:
            total += conv2d(height, width, 3, 1, 1, in_features, out_features)[2]
            in_features = out_features
        height, width = height // 2, width // 2
    widths = (height * width * in_features, *config.fc_widths)
    if config.keep_embedding:
        widths += (config.embedding_size,)
    widths += (config.num_classes,)
    return total + sum(2 * a * b for a, b in zip(widths[:-1], widths[1:]))
