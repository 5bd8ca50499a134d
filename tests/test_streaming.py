"""Decoding as a stream: the blocks and frames that `predict` reads one at a time are exactly what the
whole-file readers (used by `prepare`) return, and a truncated file is refused before any block is used."""

import numpy as np
import pytest

from emohd_jax.audio.io import iter_audio, load_audio
from emohd_jax.errors import CorruptMediaError
from emohd_jax.vision.video_io import iter_sampled_frames, sample_frames


@pytest.mark.parametrize("name", ["cremad/1001_DFA_ANG_XX.flv", "cremad/1002_DFA_SAD_XX.mp3",
                                  "ravdess/Actor_17/03-01-05-01-01-01-17.flac"])
def test_audio_blocks_join_into_the_whole_file(data_root, name):
    whole = load_audio(data_root / name)
    blocks = list(iter_audio(data_root / name, block_s=0.5))
    assert len(blocks) >= 4 and all(b.dtype == np.float32 for b in blocks)
    np.testing.assert_array_equal(np.concatenate(blocks), whole)  # resampled in pieces, bit for bit


def test_truncated_flac_is_refused_before_its_first_block(data_root, tmp_path):
    data = (data_root / "ravdess/Actor_17/03-01-05-01-01-01-17.flac").read_bytes()
    path = tmp_path / "cut.flac"
    path.write_bytes(data[: len(data) // 2])
    blocks = iter_audio(path, block_s=60.0)
    with pytest.raises(CorruptMediaError, match="truncated"):
        next(blocks)


def test_frames_streamed_equal_frames_sampled(data_root):
    frames, times = sample_frames(data_root / "cremad/1001_DFA_ANG_XX.flv")
    streamed = list(iter_sampled_frames(data_root / "cremad/1001_DFA_ANG_XX.flv"))
    assert [t for _, t in streamed] == times.tolist()
    np.testing.assert_array_equal(np.stack([f for f, _ in streamed]), frames)


def test_a_float_wav_holding_nan_is_corrupt_media(tmp_path):
    import soundfile

    wave = np.full(16000, 0.1, np.float32)
    wave[100] = np.nan
    soundfile.write(tmp_path / "nan.wav", wave, 16000, subtype="FLOAT")
    with pytest.raises(CorruptMediaError, match="nan.wav: audio samples that are not finite"):
        load_audio(tmp_path / "nan.wav")
