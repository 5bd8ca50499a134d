"""Whisper's own log-mel input in JAX (not VGGish's, `emohd_jax.audio.log_mel`): the features its encoder was
trained on, so `emohd_jax.models.whisper_encoder` sees what Whisper and faster-whisper feed it.

Recipe (openai/whisper `audio.py`, as faster-whisper's `FeatureExtractor` reimplements it): 400-sample (25 ms)
periodic Hann frames every 160 samples (10 ms), centred (the wave reflect-padded by 200 samples at each
end), |rfft|² over 400 points, 80 slaney-scale mel bands 0–8 kHz with slaney area normalisation, the last
STFT frame dropped, log10 of max(·, 1e-10), floored at 8 below the clip's maximum, then (x + 4) / 4. A wave of
n samples gives n // 160 frames.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from emohd_jax.audio.io import SAMPLE_RATE
from emohd_jax.audio.log_mel import _frame, periodic_hann

N_FFT, HOP, N_MELS = 400, 160, 80
WINDOW_SAMPLES = 30 * SAMPLE_RATE  # Whisper's fixed 30 s window, 3000 frames
_DYNAMIC_RANGE = 8.0  # log10 units: 80 dB


@functools.lru_cache(maxsize=4)
def mel_filters(n_mels: int = N_MELS) -> np.ndarray:
    """weights: [n_mels, N_FFT // 2 + 1] float32, triangles in Hz between slaney-mel-spaced edges, each scaled
    to unit area per Hz (librosa's `filters.mel(norm='slaney')`, which Whisper ships as mel_filters.npz)."""
    linear_hz_per_mel, log_start_hz = 200.0 / 3, 1000.0
    log_start_mel, log_step = log_start_hz / linear_hz_per_mel, np.log(6.4) / 27.0

    def to_mel(hz: np.ndarray) -> np.ndarray:
        return np.where(hz < log_start_hz, hz / linear_hz_per_mel,
                        log_start_mel + np.log(np.maximum(hz, log_start_hz) / log_start_hz) / log_step)

    def to_hz(mel: np.ndarray) -> np.ndarray:
        return np.where(mel < log_start_mel, mel * linear_hz_per_mel,
                        log_start_hz * np.exp(log_step * (mel - log_start_mel)))

    edges = to_hz(np.linspace(0.0, to_mel(np.float64(SAMPLE_RATE / 2)), n_mels + 2))  # [n_mels + 2] Hz
    bins = np.fft.rfftfreq(N_FFT, 1.0 / SAMPLE_RATE)  # [fft_bins] Hz
    rising = (bins[None, :] - edges[:-2, None]) / (edges[1:-1] - edges[:-2])[:, None]
    falling = (edges[2:, None] - bins[None, :]) / (edges[2:] - edges[1:-1])[:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    weights = weights.astype(np.float32)
    weights.setflags(write=False)
    return weights


def num_frames(num_samples: int, *, pad_to_30s: bool = False) -> int:
    """Frames `log_mel` returns for a wave of `num_samples`."""
    return (WINDOW_SAMPLES if pad_to_30s else num_samples) // HOP


@functools.partial(jax.jit, static_argnames="pad_to_30s")
def log_mel(audio: jax.Array, *, pad_to_30s: bool = False) -> jax.Array:
    """audio: [samples] float32 mono 16 kHz (> 200 samples) → [frames, 80] float32, frames = samples // 160, or
    3000 with `pad_to_30s` (zero-padded or cut to 30 s, the window `ctranslate2`'s Whisper encodes)."""
    audio = audio.astype(jnp.float32)
    if pad_to_30s:
        audio = jnp.pad(audio[:WINDOW_SAMPLES], (0, max(0, WINDOW_SAMPLES - audio.shape[0])))
    centred = jnp.pad(audio, (N_FFT // 2, N_FFT // 2), mode="reflect")
    frames = _frame(centred, N_FFT, HOP, axis=-1)[:-1]  # [frames, N_FFT], Whisper drops the last one
    power = jnp.abs(jnp.fft.rfft(frames * jnp.asarray(periodic_hann(N_FFT), jnp.float32), axis=-1)) ** 2
    mel = jnp.matmul(power, jnp.asarray(mel_filters().T), precision=jax.lax.Precision.HIGHEST)  # [frames, mels]
    log_spec = jnp.log10(jnp.maximum(mel, 1e-10))
    log_spec = jnp.maximum(log_spec, log_spec.max() - _DYNAMIC_RANGE)
    return (log_spec + 4.0) / 4.0
