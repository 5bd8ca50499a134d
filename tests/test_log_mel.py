"""The JAX log-mel frontend against the VGGish reference recipe, librosa's filterbank, and a pure tone."""

import numpy as np
import pytest

from emohd_jax.audio import log_mel as af
from emohd_jax.errors import SampleRateError

SPEC = af.VGGISH_LOG_MEL


def _speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """A few harmonics with a wobbling pitch plus noise: broadband like speech, deterministic."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SPEC.sample_rate)) / SPEC.sample_rate
    pitch = 140.0 + 30.0 * np.sin(2 * np.pi * 3.0 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / SPEC.sample_rate
    wave = sum(0.3 / k * np.sin(k * phase) for k in range(1, 12)) + 0.01 * rng.standard_normal(t.shape)
    return wave.astype(np.float32)


def test_patches_match_torchvggish_float64_reference():
    vggish_input = pytest.importorskip("torchvggish.vggish_input")
    wave = _speech_like(3.3)
    ours = af.waveform_to_patches(wave, SPEC.sample_rate)
    reference = vggish_input.waveform_to_examples(wave.astype(np.float64), SPEC.sample_rate, return_tensor=False)
    assert ours.shape == reference.shape == (3, 96, 64)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-4)


def test_filterbank_matches_torchvggish_exactly():
    mel_features = pytest.importorskip("torchvggish.mel_features")
    reference = mel_features.spectrogram_to_mel_matrix(
        num_mel_bins=SPEC.num_mel_bins, num_spectrogram_bins=SPEC.fft_bins, audio_sample_rate=SPEC.sample_rate,
        lower_edge_hertz=SPEC.mel_min_hz, upper_edge_hertz=SPEC.mel_max_hz)
    np.testing.assert_allclose(af.mel_filterbank(SPEC), reference, rtol=0, atol=1e-12)


def _librosa_mel(librosa) -> np.ndarray:
    """librosa.filters.mel (HTK formula, no norm) in float64 as [fft_bins, mel]."""
    return librosa.filters.mel(sr=SPEC.sample_rate, n_fft=SPEC.fft_length, n_mels=SPEC.num_mel_bins,
                               fmin=SPEC.mel_min_hz, fmax=SPEC.mel_max_hz, htk=True, norm=None,
                               dtype=np.float64).T


def test_filterbank_matches_librosa_built_on_the_mel_axis(monkeypatch):
    """librosa draws each triangle linear in Hz between mel-spaced edges; VGGish (like HTK) draws it
    linear in mel. Feeding librosa's own construction mel-valued bin and edge positions (HTK formula)
    turns it into the VGGish filterbank, which must then agree to 1e-6."""
    librosa = pytest.importorskip("librosa")
    hz_bins = librosa.fft_frequencies(sr=SPEC.sample_rate, n_fft=SPEC.fft_length)
    mel_edges = np.linspace(librosa.hz_to_mel(SPEC.mel_min_hz, htk=True),
                            librosa.hz_to_mel(SPEC.mel_max_hz, htk=True), SPEC.num_mel_bins + 2)
    monkeypatch.setattr(librosa.filters, "fft_frequencies", lambda **_: librosa.hz_to_mel(hz_bins, htk=True))
    monkeypatch.setattr(librosa.filters, "mel_frequencies", lambda *_, **__: mel_edges)
    np.testing.assert_allclose(af.mel_filterbank(SPEC), _librosa_mel(librosa), rtol=0, atol=1e-6)


def test_filterbank_close_to_plain_librosa_htk():
    """Unpatched librosa: same band edges (1e-6 Hz), same support, weights within 5e-3 (Hz- vs mel-linear)."""
    librosa = pytest.importorskip("librosa")
    edges_hz = librosa.mel_frequencies(SPEC.num_mel_bins + 2, fmin=SPEC.mel_min_hz, fmax=SPEC.mel_max_hz, htk=True)
    ours_edges = 700.0 * np.expm1(np.linspace(af.hz_to_mel(SPEC.mel_min_hz), af.hz_to_mel(SPEC.mel_max_hz),
                                              SPEC.num_mel_bins + 2) / 1127.0)
    np.testing.assert_allclose(ours_edges, edges_hz, rtol=0, atol=1e-6)
    ours, theirs = af.mel_filterbank(SPEC), _librosa_mel(librosa)
    np.testing.assert_array_equal(ours > 0, theirs > 0)
    np.testing.assert_array_equal(ours.argmax(axis=0), theirs.argmax(axis=0))
    assert np.abs(ours - theirs).max() < 5e-3


def test_pure_tone_lands_in_its_mel_band():
    freq = 1000.0
    t = np.arange(2 * SPEC.sample_rate) / SPEC.sample_rate
    wave = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    patches = af.waveform_to_patches(wave, SPEC.sample_rate)  # [2, 96, 64]
    edges = np.linspace(af.hz_to_mel(SPEC.mel_min_hz), af.hz_to_mel(SPEC.mel_max_hz), SPEC.num_mel_bins + 2)
    expected_band = int(np.argmin(np.abs(edges[1:-1] - af.hz_to_mel(freq))))
    assert np.all(patches.argmax(axis=-1) == expected_band)
    # Far from the tone, bands sit near the log floor log(0.01).
    assert patches[..., expected_band + 10].max() < np.log(SPEC.log_offset) + 1.0


def test_batched_padded_waves_give_the_same_patches_as_one_by_one():
    waves = [_speech_like(s, seed=i) for i, s in enumerate((0.5, 1.2, 2.9, 4.05))]
    batched = af.batch_waveforms_to_patches(waves, SPEC.sample_rate)
    for wave, got in zip(waves, batched):
        alone = af.waveform_to_patches(wave, SPEC.sample_rate)
        assert got.shape == alone.shape == (af.num_patches(wave.shape[0]), 96, 64)
        np.testing.assert_allclose(got, alone, rtol=0, atol=1e-6)
    # and the jitted batched log-mel keeps each row's valid frames whatever the padding
    padded = np.zeros((2, 3 * SPEC.sample_rate), np.float32)
    padded[0, : waves[1].shape[0]] = waves[1]
    rows = np.asarray(af.log_mel(padded))
    alone = np.asarray(af.log_mel(waves[1][None]))[0]
    np.testing.assert_allclose(rows[0, : alone.shape[0]], alone, rtol=0, atol=1e-6)


def test_short_clip_is_padded_to_one_patch():
    wave = _speech_like(0.5)
    patches = af.waveform_to_patches(wave, SPEC.sample_rate)
    assert patches.shape == (1, 96, 64)
    # frames entirely in the zero padding read log(0.01)
    np.testing.assert_allclose(patches[0, -30:], np.log(SPEC.log_offset), atol=1e-6)
    assert af.num_patches(SPEC.patch_samples - 1) == 1
    assert af.num_patches(SPEC.patch_samples + 96 * SPEC.hop_length) == 2


def test_wrong_sample_rate_raises():
    with pytest.raises(SampleRateError, match="clip.mp3.*16000 Hz.*44100 Hz"):
        af.waveform_to_patches(np.zeros(44100, np.float32), 44100, source="clip.mp3")
