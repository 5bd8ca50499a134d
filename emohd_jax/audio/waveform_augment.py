"""Waveform augmentation for what changes between speech corpora: room, noise, channel, codec, voice, level.

A voice tower trained on one studio's actors learns that studio. Each function here imitates one thing that
differs in another corpus (TV talk-show noise and music, a reverberant room, a phone line, a lossy codec, a
higher or faster voice, a louder recording), on mono float32 waves [samples] at `sample_rate`, NumPy only,
seeded through a `np.random.Generator`. `random_view` draws a chain of them: one augmented copy of a training
clip, cached like the clean one (emohd_jax.audio.whisper_features).
"""

from __future__ import annotations

import fractions
import io

import numpy as np

SAMPLE_RATE = 16000
_EPS = 1e-12


def power(wave: np.ndarray) -> float:
    """Mean square of wave: [samples]."""
    return float(np.mean(np.square(wave, dtype=np.float64)))


def pink_noise(num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """[num_samples] noise with a 1/f power spectrum (white noise shaped by 1/sqrt(f) in the frequency domain),
    unit power: the spectral tilt of most room and crowd noise."""
    spectrum = np.fft.rfft(rng.standard_normal(num_samples))
    freqs = np.arange(spectrum.size, dtype=np.float64)
    spectrum /= np.sqrt(np.maximum(freqs, 1.0))
    noise = np.fft.irfft(spectrum, n=num_samples)
    return (noise / np.sqrt(power(noise) + _EPS)).astype(np.float32)


def add_noise(wave: np.ndarray, snr_db: float, rng: np.random.Generator, *, kind: str = "white",
              noise: np.ndarray | None = None) -> np.ndarray:
    """wave + noise scaled so that 10·log10(P_wave / P_noise) = `snr_db` exactly (powers over the whole clip).

    `kind`: 'white', 'pink', or 'given' (`noise`, e.g. other speech for babble, tiled or cut to the length).
    """
    if kind == "white":
        noise = rng.standard_normal(wave.size).astype(np.float32)
    elif kind == "pink":
        noise = pink_noise(wave.size, rng)
    elif kind == "given":
        if noise is None or noise.size == 0:
            raise ValueError("kind='given' needs a non-empty noise array")
        noise = np.resize(noise.astype(np.float32), wave.size)
    else:
        raise ValueError(f"noise kind must be white, pink or given, not {kind!r}")
    scale = np.sqrt(power(wave) / (power(noise) * 10.0 ** (snr_db / 10.0) + _EPS))
    return (wave + scale * noise).astype(np.float32)


def room_impulse_response(rt60_s: float, rng: np.random.Generator, *, sample_rate: int = SAMPLE_RATE,
                          direct_to_reverb_db: float = 0.0) -> np.ndarray:
    """A procedural room: [samples] impulse response, a unit direct path then Gaussian noise whose amplitude decays
    exponentially so that its energy falls 60 dB in `rt60_s` (exp(-6.91 t / RT60) in amplitude), 1.2·RT60 long.

    `direct_to_reverb_db`: energy of the direct path over that of the tail (0 dB: as much reverb as direct sound).
    """
    length = max(2, int(round(1.2 * rt60_s * sample_rate)))
    t = np.arange(length) / sample_rate
    tail = rng.standard_normal(length) * np.exp(-3.0 * np.log(10.0) * t / rt60_s)
    tail[0] = 0.0
    tail *= np.sqrt(10.0 ** (-direct_to_reverb_db / 10.0) / (np.sum(tail ** 2) + _EPS))
    tail[0] = 1.0
    return tail.astype(np.float32)


def reverberate(wave: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """wave convolved with rir (FFT), cut to the input's length, rescaled to the input's power."""
    n = wave.size + rir.size - 1
    size = 1 << (n - 1).bit_length()
    wet = np.fft.irfft(np.fft.rfft(wave, size) * np.fft.rfft(rir, size), size)[:wave.size]
    return (wet * np.sqrt(power(wave) / (power(wet) + _EPS))).astype(np.float32)


def band_limit(wave: np.ndarray, low_hz: float, high_hz: float, *, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Zero-phase band-pass in the frequency domain (cosine tapers 50 Hz wide at each edge)."""
    spectrum = np.fft.rfft(wave)
    freqs = np.fft.rfftfreq(wave.size, 1.0 / sample_rate)
    taper = 50.0
    gain = np.clip((freqs - (low_hz - taper)) / taper, 0, 1) * np.clip(((high_hz + taper) - freqs) / taper, 0, 1)
    gain = 0.5 - 0.5 * np.cos(np.pi * gain)
    gain[freqs > high_hz] = 0.0  # nothing above the band edge: a phone line carries none
    return np.fft.irfft(spectrum * gain, n=wave.size).astype(np.float32)


def resample(wave: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """soxr (HQ), the resampler audio.io decodes with."""
    import soxr

    return soxr.resample(wave, source_rate, target_rate, quality="HQ").astype(np.float32)


def telephone(wave: np.ndarray, *, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A narrow-band phone line: 300–3400 Hz, through 8 kHz sampling and back, μ-law's 8-bit companding."""
    narrow = resample(band_limit(wave, 300.0, 3400.0, sample_rate=sample_rate), sample_rate, 8000)
    peak = float(np.abs(narrow).max()) + _EPS
    mu = 255.0
    coded = np.sign(narrow / peak) * np.log1p(mu * np.abs(narrow / peak)) / np.log1p(mu)
    coded = np.round(coded * 127.0) / 127.0
    narrow = peak * np.sign(coded) * np.expm1(np.abs(coded) * np.log1p(mu)) / mu
    out = resample(narrow.astype(np.float32), 8000, sample_rate)
    return band_limit(_fit(out, wave.size), 300.0, 3400.0, sample_rate=sample_rate)


_CODECS = {"mp3": ("mp3", "libmp3lame", 16000), "opus": ("ogg", "libopus", 48000)}


def codec_round_trip(wave: np.ndarray, codec: str, bitrate_kbps: int, *, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """wave encoded with `codec` ('mp3' through LAME at 16 kHz, 'opus' at 48 kHz) at `bitrate_kbps` and decoded
    again in memory through PyAV; the decoder's priming delay is removed, the output has the input's length."""
    import av

    if codec not in _CODECS:
        raise ValueError(f"codec must be one of {sorted(_CODECS)}, not {codec!r}")
    container_format, encoder, codec_rate = _CODECS[codec]
    samples = resample(wave, sample_rate, codec_rate) if codec_rate != sample_rate else wave
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container_format) as container:
        stream = container.add_stream(encoder, rate=codec_rate, layout="mono")
        stream.bit_rate = bitrate_kbps * 1000
        frame_size = stream.codec_context.frame_size or 1152
        pcm = np.clip(samples, -1.0, 1.0)
        for start in range(0, pcm.size, frame_size):
            chunk = pcm[start:start + frame_size]
            frame = av.AudioFrame.from_ndarray(chunk[None, :].astype(np.float32), format="flt", layout="mono")
            frame.sample_rate = codec_rate
            for packet in stream.encode(_to_codec_format(frame, stream)):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    buffer.seek(0)
    decoded = []
    with av.open(buffer, "r") as container:
        for frame in container.decode(audio=0):
            decoded.append(frame.to_ndarray().astype(np.float32).mean(axis=0) if frame.format.is_planar
                           else frame.to_ndarray().astype(np.float32).reshape(-1, frame.layout.nb_channels).mean(1))
    out = np.concatenate(decoded) if decoded else np.zeros(0, np.float32)
    out = out[_delay(samples, out):]
    if codec_rate != sample_rate:
        out = resample(out, codec_rate, sample_rate)
    return _fit(out, wave.size)


def _to_codec_format(frame, stream):
    """The frame in the sample format the encoder takes (LAME: planar float; opus: interleaved float or s16)."""
    import av

    wanted = stream.codec_context.format.name
    return frame if frame.format.name == wanted else av.AudioResampler(format=wanted, layout="mono",
                                                                        rate=frame.sample_rate).resample(frame)[0]


def _delay(reference: np.ndarray, decoded: np.ndarray, max_lag: int = 4096) -> int:
    """Samples of encoder priming at the start of `decoded`: the lag in [0, max_lag] of best correlation (FFT)."""
    n = min(reference.size, decoded.size - max_lag, 1 << 15)
    if n <= 0:
        return 0
    size = 1 << (n + max_lag).bit_length()
    spectrum = np.fft.rfft(decoded[:n + max_lag], size) * np.conj(np.fft.rfft(reference[:n], size))
    return int(np.argmax(np.fft.irfft(spectrum, size)[:max_lag + 1]))


def _fit(wave: np.ndarray, length: int) -> np.ndarray:
    """Cut or zero-pad to `length` samples."""
    return np.pad(wave, (0, max(0, length - wave.size)))[:length].astype(np.float32)


def change_speed(wave: np.ndarray, factor: float, *, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Played `factor` times faster (tempo and pitch both move, as Kaldi's speed perturbation): resampled."""
    ratio = fractions.Fraction(factor).limit_denominator(100)
    return resample(wave, sample_rate * ratio.numerator, sample_rate * ratio.denominator)


def time_stretch(wave: np.ndarray, rate: float, *, n_fft: int = 512, hop: int = 128) -> np.ndarray:
    """Phase-vocoder time stretch: `rate` > 1 is shorter (len ≈ len / rate), pitch unchanged."""
    window = np.hanning(n_fft + 1)[:-1]
    padded = np.pad(wave, (n_fft // 2, n_fft // 2 + n_fft))
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop] * window
    stft = np.fft.rfft(frames, axis=1)  # [frames, bins]
    steps = np.arange(0, stft.shape[0] - 1, rate)
    expected = 2 * np.pi * hop * np.arange(stft.shape[1]) / n_fft
    phase = np.angle(stft[0])
    out_frames = []
    for step in steps:
        i = int(step)
        frac = step - i
        magnitude = (1 - frac) * np.abs(stft[i]) + frac * np.abs(stft[i + 1])
        out_frames.append(magnitude * np.exp(1j * phase))
        delta = np.angle(stft[i + 1]) - np.angle(stft[i]) - expected
        phase = phase + expected + (delta - 2 * np.pi * np.round(delta / (2 * np.pi)))
    frames_out = np.fft.irfft(np.asarray(out_frames), n=n_fft, axis=1) * window
    length = hop * (len(out_frames) - 1) + n_fft
    out, norm = np.zeros(length), np.zeros(length)
    for k, frame in enumerate(frames_out):
        out[k * hop:k * hop + n_fft] += frame
        norm[k * hop:k * hop + n_fft] += window ** 2
    out = out / np.maximum(norm, 1e-3)
    return out[n_fft // 2:n_fft // 2 + int(round(wave.size / rate))].astype(np.float32)


def shift_pitch(wave: np.ndarray, semitones: float, *, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Pitch moved by `semitones` at the same duration: time-stretched by 2^(s/12), then resampled back."""
    factor = 2.0 ** (semitones / 12.0)
    return _fit(change_speed(time_stretch(wave, 1.0 / factor), factor, sample_rate=sample_rate), wave.size)


def active_level_db(wave: np.ndarray, *, sample_rate: int = SAMPLE_RATE, floor_db: float = 40.0) -> float:
    """RMS level in dBFS of the 20 ms frames within `floor_db` of the loudest (speech, not the pauses)."""
    hop = sample_rate // 50
    n = max(1, wave.size // hop)
    frames = np.square(wave[:n * hop].astype(np.float64)).reshape(n, -1).mean(axis=1) if wave.size >= hop \
        else np.asarray([power(wave)])
    level = 10.0 * np.log10(frames + _EPS)
    active = frames[level > level.max() - floor_db]
    return float(10.0 * np.log10(active.mean() + _EPS))


def normalize_loudness(wave: np.ndarray, target_dbfs: float = -23.0, *, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Scaled so the active speech is at `target_dbfs` RMS (then limited to peak 1): a studio recording and a TV
    broadcast reach the encoder at one level."""
    gain = 10.0 ** ((target_dbfs - active_level_db(wave, sample_rate=sample_rate)) / 20.0)
    out = wave * gain
    peak = float(np.abs(out).max())
    return (out / peak if peak > 1.0 else out).astype(np.float32)


def random_view(wave: np.ndarray, rng: np.random.Generator, *, sample_rate: int = SAMPLE_RATE
                ) -> tuple[np.ndarray, list[str]]:
    """One augmented copy of a clip and the list of what was done (for the record and the logs).

    Voice (p 0.5: speed 0.9–1.1 or pitch ±3 semitones), room (p 0.5: RT60 0.2–1.0 s), noise (p 0.7:
    white or pink at 5–30 dB SNR), channel (p 0.4: telephone, mp3 24–64 kbit/s or opus 12–32 kbit/s).
    """
    steps = []
    if rng.random() < 0.5:
        if rng.random() < 0.5:
            factor = float(rng.uniform(0.9, 1.1))
            wave = change_speed(wave, factor, sample_rate=sample_rate)
            steps.append(f"speed {factor:.2f}")
        else:
            semitones = float(rng.uniform(-3.0, 3.0))
            wave = shift_pitch(wave, semitones, sample_rate=sample_rate)
            steps.append(f"pitch {semitones:+.1f}")
    if rng.random() < 0.5:
        rt60 = float(rng.uniform(0.2, 1.0))
        rir = room_impulse_response(rt60, rng, sample_rate=sample_rate, direct_to_reverb_db=float(rng.uniform(-3, 6)))
        wave = reverberate(wave, rir)
        steps.append(f"reverb {rt60:.2f}s")
    if rng.random() < 0.7:
        snr, kind = float(rng.uniform(5.0, 30.0)), ("white", "pink")[int(rng.integers(2))]
        wave = add_noise(wave, snr, rng, kind=kind)
        steps.append(f"{kind} {snr:.0f}dB")
    if rng.random() < 0.4:
        choice = int(rng.integers(3))
        if choice == 0:
            wave = telephone(wave, sample_rate=sample_rate)
            steps.append("telephone")
        else:
            codec = ("mp3", "opus")[choice - 1]
            kbps = int(rng.choice((24, 32, 48, 64) if codec == "mp3" else (12, 16, 24, 32)))
            wave = codec_round_trip(wave, codec, kbps, sample_rate=sample_rate)
            steps.append(f"{codec} {kbps}k")
    return wave, steps
