"""VGGish log-mel input in JAX (SPEC §3.2): 16 kHz wave → 0.96 s patches of 96 frames × 64 mel bands.

The recipe is the one of the published VGGish input pipeline (AudioSet `mel_features.py`): frames of
25 ms (400 samples, no centering, no padding) every 10 ms, periodic Hann, |rfft| over 512 points,
64 HTK mel bands 125–7500 Hz whose triangles are linear on the *mel* axis (as in HTK; librosa builds
them linear in Hz instead), log(mel + 0.01), and non-overlapping patches of 96 frames; incomplete
trailing frames and patches are dropped, as VGGish does.

Short clips: a clip too short for one patch (< 15,600 samples ≈ 0.975 s) is zero-padded at the end
to exactly one patch, so every decodable clip yields at least one patch; the padded frames read
log(0.01), the same value as digital silence.

`waveform_to_patches` is the one entry point of both offline `prepare` and online `predict`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from emohd_jax.errors import SampleRateError
from emohd_jax.models.vggish import VGGISH_LOG_MEL, LogMelSpec  # the recipe is the model's input contract


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: 1127 ln(1 + f / 700)."""
    return 1127.0 * np.log1p(np.asarray(hz, np.float64) / 700.0)


@functools.lru_cache(maxsize=8)
def mel_filterbank(spec: LogMelSpec = VGGISH_LOG_MEL) -> np.ndarray:
    """weights: [fft_bins, mel] float64, HTK triangles linear on the mel axis, unnormalised (VGGish)."""
    bin_hz = np.linspace(0.0, spec.sample_rate / 2.0, spec.fft_bins)
    bin_mel = hz_to_mel(bin_hz)[:, None]  # [fft_bins, 1]
    edges = np.linspace(hz_to_mel(spec.mel_min_hz), hz_to_mel(spec.mel_max_hz), spec.num_mel_bins + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]  # each [mel]
    rising = (bin_mel - lower) / (center - lower)
    falling = (upper - bin_mel) / (upper - center)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0  # the DC bin never contributes (matters only when mel_min_hz is 0)
    weights.setflags(write=False)
    return weights


def periodic_hann(length: int) -> np.ndarray:
    """Hann window of period `length` (the last sample is not the closing zero), float64."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)


def num_frames(num_samples: int, spec: LogMelSpec = VGGISH_LOG_MEL) -> int:
    """Complete STFT frames in `num_samples` (no padding, as VGGish)."""
    return max(0, 1 + (num_samples - spec.window_length) // spec.hop_length)


def num_patches(num_samples: int, spec: LogMelSpec = VGGISH_LOG_MEL) -> int:
    """Patches `waveform_to_patches` returns for a clip of `num_samples` (≥ 1: short clips are padded)."""
    frames = num_frames(max(num_samples, spec.patch_samples), spec)
    return 1 + (frames - spec.patch_frames) // spec.patch_hop_frames


def _frame(x: jnp.ndarray, length: int, hop: int, axis: int) -> jnp.ndarray:
    """Split `axis` of x into complete windows: [..., n, ...] → [..., windows, length, ...]."""
    count = 1 + (x.shape[axis] - length) // hop
    index = hop * jnp.arange(count)[:, None] + jnp.arange(length)[None, :]  # [windows, length]
    return jnp.take(x, index, axis=axis)


@functools.partial(jax.jit, static_argnames="spec")
def log_mel(wave: jnp.ndarray, spec: LogMelSpec = VGGISH_LOG_MEL) -> jnp.ndarray:
    """wave: [batch, samples] at spec.sample_rate → log-mel: [batch, frames, mel] float32.

    Frames are independent, so zero-padding a wave at the end leaves its first frames unchanged.
    """
    frames = _frame(wave.astype(jnp.float32), spec.window_length, spec.hop_length, axis=-1)
    windowed = frames * jnp.asarray(periodic_hann(spec.window_length), jnp.float32)  # [batch, frames, window]
    magnitude = jnp.abs(jnp.fft.rfft(windowed, n=spec.fft_length, axis=-1))  # [batch, frames, fft_bins]
    weights = jnp.asarray(mel_filterbank(spec), jnp.float32)  # [fft_bins, mel]
    mel = jnp.matmul(magnitude, weights, precision=jax.lax.Precision.HIGHEST)
    return jnp.log(mel + spec.log_offset)


def patches(log_mel_frames: jnp.ndarray, spec: LogMelSpec = VGGISH_LOG_MEL) -> jnp.ndarray:
    """log-mel: [..., frames, mel] → [..., n_patches, patch_frames, mel]; the incomplete tail is dropped."""
    return _frame(log_mel_frames, spec.patch_frames, spec.patch_hop_frames, axis=-2)


@functools.partial(jax.jit, static_argnames="spec")
def _batch_patches(waves: jnp.ndarray, spec: LogMelSpec) -> jnp.ndarray:
    """waves: [batch, samples] → [batch, n_patches, patch_frames, mel]."""
    return patches(log_mel(waves, spec), spec)


def batch_waveforms_to_patches(waves: list[np.ndarray], sample_rate: int, *,
                               spec: LogMelSpec = VGGISH_LOG_MEL,
                               source: str = "<waveform>") -> list[np.ndarray]:
    """Each wave: [samples] → its patches: [n_i, 96, 64] float32, computed in one padded jitted batch.

    Raises SampleRateError (naming `source`) unless `sample_rate` is spec.sample_rate: resampling
    belongs to `audio_io.load_audio`, so a wrong rate here is a caller bug, never silently fixed.
    """
    if sample_rate != spec.sample_rate:
        raise SampleRateError(source, f"log-mel needs {spec.sample_rate} Hz audio, got {sample_rate} Hz "
                                      "(resample with emohd_jax.audio.io.load_audio)")
    if not waves:
        return []
    counts = [num_patches(w.shape[0], spec) for w in waves]
    # Cut/pad every wave to exactly what the longest needs for its patches: jit then compiles once
    # per (batch size, patch count), not once per clip length.
    length = spec.patch_samples + (max(counts) - 1) * spec.patch_hop_frames * spec.hop_length
    batch = np.zeros((len(waves), length), np.float32)  # [batch, samples]
    for row, wave in zip(batch, waves):
        row[: wave.shape[0]] = wave[:length]
    out = np.asarray(_batch_patches(jnp.asarray(batch), spec))  # [batch, n_max, 96, 64]
    return [out[i, :n] for i, n in enumerate(counts)]


def waveform_to_patches(wave: np.ndarray, sample_rate: int, *, spec: LogMelSpec = VGGISH_LOG_MEL,
                        source: str = "<waveform>") -> np.ndarray:
    """wave: [samples] mono → patches: [n_patches, 96, 64] float32 (the VGGish input examples)."""
    return batch_waveforms_to_patches([wave], sample_rate, spec=spec, source=source)[0]
