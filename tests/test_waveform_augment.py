"""Waveform augmentation on real clips: asked SNR, RIR decay, phone band, codec round trips, speed, pitch, level."""

import numpy as np
import pytest

from emohd_jax.audio import waveform_augment as wa
from emohd_jax.audio.io import load_audio

RATE = 16000


@pytest.fixture(scope="module")
def clip(data_root) -> np.ndarray:
    """RAVDESS actor 17, angry, strong: 'Dogs are sitting by the door' (16 kHz)."""
    return load_audio(data_root / "ravdess" / "Actor_17" / "03-01-05-02-02-01-17.flac")


@pytest.mark.parametrize("kind", ["white", "pink"])
@pytest.mark.parametrize("snr_db", [20.0, 10.0, 0.0])
def test_noise_is_mixed_at_the_asked_snr(clip, kind, snr_db):
    mixed = wa.add_noise(clip, snr_db, np.random.default_rng(1), kind=kind)
    noise = mixed.astype(np.float64) - clip
    assert abs(10 * np.log10(wa.power(clip) / wa.power(noise)) - snr_db) < 0.5


def test_pink_noise_falls_3_db_per_octave():
    noise = wa.pink_noise(1 << 18, np.random.default_rng(0))
    spectrum = np.abs(np.fft.rfft(noise)) ** 2
    freqs = np.fft.rfftfreq(noise.size, 1 / RATE)
    band = lambda f: spectrum[(freqs >= f) & (freqs < 2 * f)].mean()  # noqa: E731
    assert abs(10 * np.log10(band(500) / band(1000)) - 3.0) < 0.5


@pytest.mark.parametrize("rt60", [0.3, 0.8])
def test_room_impulse_response_decays_60_db_in_rt60(rt60):
    rir = wa.room_impulse_response(rt60, np.random.default_rng(2), direct_to_reverb_db=0.0)
    tail = rir[1:].astype(np.float64)
    assert abs(10 * np.log10(1.0 / np.sum(tail ** 2))) < 1e-3  # direct path energy = tail energy at 0 dB
    decay = np.cumsum(tail[::-1] ** 2)[::-1]  # Schroeder backward integration
    decay_db = 10 * np.log10(decay / decay[0])
    t = np.arange(decay_db.size) / RATE
    fit = (decay_db <= -5) & (decay_db >= -35)
    slope = np.polyfit(t[fit], decay_db[fit], 1)[0]  # dB per second; T30 extrapolated to 60 dB
    assert abs(-60.0 / slope - rt60) < 0.1 * rt60


def test_reverb_keeps_length_and_power(clip):
    wet = wa.reverberate(clip, wa.room_impulse_response(0.6, np.random.default_rng(3)))
    assert wet.shape == clip.shape and abs(10 * np.log10(wa.power(wet) / wa.power(clip))) < 0.01
    assert np.corrcoef(wet, clip)[0, 1] < 0.9  # the room changed it


def test_telephone_band_has_little_energy_above_3400_hz(clip):
    phone = wa.telephone(clip)
    assert phone.shape == clip.shape
    spectrum = np.abs(np.fft.rfft(phone)) ** 2
    freqs = np.fft.rfftfreq(phone.size, 1 / RATE)
    original = np.abs(np.fft.rfft(clip)) ** 2
    assert spectrum[freqs > 3400].sum() / spectrum.sum() < 1e-3
    assert spectrum[freqs < 250].sum() / spectrum.sum() < 1e-2
    assert original[freqs > 3400].sum() / original.sum() > 1e-2  # the clip had energy there to remove


@pytest.mark.parametrize("codec,kbps,min_corr", [("mp3", 32, 0.95), ("opus", 16, 0.9)])
def test_codec_round_trip_keeps_length_and_alignment(clip, codec, kbps, min_corr):
    coded = wa.codec_round_trip(clip, codec, kbps)
    assert coded.shape == clip.shape and coded.dtype == np.float32
    assert np.corrcoef(coded, clip)[0, 1] > min_corr  # priming delay removed: sample-aligned with the input


def test_speed_and_pitch(clip):
    fast = wa.change_speed(clip, 1.1)
    assert abs(fast.size - clip.size / 1.1) <= 2
    shifted = wa.shift_pitch(clip, 3.0)
    assert shifted.shape == clip.shape

    def spectral_scale(a, b):
        """The frequency scale s that best maps |A(f)| onto |B(s f)| (speech: harmonics and formants move together)."""
        fa, fb = (np.abs(np.fft.rfft(x[:1 << 15])) for x in (a, b))
        bins = np.arange(50, 2000)
        scales = np.linspace(0.8, 1.4, 121)
        return scales[np.argmax([np.corrcoef(fa[bins], np.interp(bins * s, np.arange(fb.size), fb))[0, 1]
                                 for s in scales])]

    assert abs(spectral_scale(clip, shifted) - 2 ** (3 / 12)) < 0.02
    assert abs(spectral_scale(clip, wa.shift_pitch(clip, -2.0)) - 2 ** (-2 / 12)) < 0.02


def test_loudness_normalisation_and_random_views(clip):
    quiet = wa.normalize_loudness(clip * 0.01, -23.0)
    assert abs(wa.active_level_db(quiet) - -23.0) < 0.05
    view, steps = wa.random_view(clip, np.random.default_rng(7))
    again, same_steps = wa.random_view(clip, np.random.default_rng(7))
    assert steps == same_steps and np.array_equal(view, again) and np.isfinite(view).all()
    assert {wa.random_view(clip, np.random.default_rng(s))[1][0].split()[0] for s in range(12)} >= {"speed", "pitch"}
