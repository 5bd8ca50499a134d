"""load_audio on real media (RAVDESS flac, CREMA-D mp3/flv) and on each kind of bad input."""


import numpy as np
import pytest

from emohd_jax.audio.io import SAMPLE_RATE, check_not_silent, load_audio
from emohd_jax.errors import CorruptMediaError, NoAudioTrackError, SilenceError



def test_ravdess_flac_is_16k_mono(data_root):
    path = data_root / "ravdess" / "Actor_01" / "03-01-01-01-01-01-01.flac"
    wave = load_audio(path)
    assert wave.dtype == np.float32 and wave.ndim == 1
    # The file is 16 kHz already: samples pass through untouched (3.30 s).
    assert wave.shape[0] == 52853
    check_not_silent(wave, path)


@pytest.mark.parametrize("name, seconds", [("1002_DFA_ANG_XX.mp3", 2.612), ("1001_DFA_ANG_XX.flv", 2.27)])
def test_cremad_44k_media_resampled_to_16k(data_root, name, seconds):
    path = data_root / "cremad" / name
    wave = load_audio(path)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(wave.shape[0] / SAMPLE_RATE - seconds) < 0.02
    assert 0.01 < np.abs(wave).max() <= 1.0
    check_not_silent(wave, path)


def test_resampling_keeps_a_tone_at_its_frequency(tmp_path):
    sf = pytest.importorskip("soundfile")
    rate, freq = 44100, 1000.0
    t = np.arange(rate) / rate
    path = tmp_path / "tone44k.wav"
    sf.write(path, np.stack([0.5 * np.sin(2 * np.pi * freq * t)] * 2, axis=1), rate)  # stereo
    wave = load_audio(path)
    assert wave.shape == (SAMPLE_RATE,)
    spectrum = np.abs(np.fft.rfft(wave))
    assert np.argmax(spectrum) * SAMPLE_RATE / wave.shape[0] == pytest.approx(freq, abs=1.0)


def test_zero_byte_file_is_corrupt(tmp_path):
    path = tmp_path / "empty.flac"
    path.touch()
    with pytest.raises(CorruptMediaError, match="empty.flac.*0 bytes"):
        load_audio(path)


def test_truncated_flac_is_corrupt(tmp_path, data_root):
    source = data_root / "ravdess" / "Actor_01" / "03-01-01-01-01-01-01.flac"
    data = source.read_bytes()
    path = tmp_path / "truncated.flac"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptMediaError, match="truncated.flac"):
        load_audio(path)


def test_garbage_mp3_is_corrupt(tmp_path):
    path = tmp_path / "garbage.mp3"
    path.write_bytes(b"this is not an mp3 file" * 10)
    with pytest.raises(CorruptMediaError, match="garbage.mp3"):
        load_audio(path)


def test_video_without_audio_track(tmp_path):
    av = pytest.importorskip("av")
    path = tmp_path / "silent_film.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(5):
            image = np.full((32, 32, 3), 40 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    with pytest.raises(NoAudioTrackError, match="silent_film.mp4.*no audio track"):
        load_audio(path)


def test_one_second_of_digital_silence(tmp_path):
    sf = pytest.importorskip("soundfile")
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(SAMPLE_RATE, np.int16), SAMPLE_RATE, subtype="PCM_16")
    wave = load_audio(path)  # decoding succeeds: silence is reported, not a decoding failure
    assert wave.shape == (SAMPLE_RATE,)
    with pytest.raises(SilenceError, match="silence.wav.*digital silence"):
        check_not_silent(wave, path)


def test_quiet_noise_below_threshold_is_silence():
    wave = np.random.default_rng(0).uniform(-1e-4, 1e-4, SAMPLE_RATE).astype(np.float32)  # peak -80 dBFS
    with pytest.raises(SilenceError, match="quiet.wav.*-8\\d.\\d dBFS"):
        check_not_silent(wave, "quiet.wav")
