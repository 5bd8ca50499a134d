"""Any media file → float32 mono waveform at 16 kHz (SPEC §3.1).

Plain wav/flac go through soundfile (fast, and it knows the declared length, so truncation is
caught); everything else (mp3, and the audio track of mp4/flv/avi/mkv/…) through PyAV. Channels
are averaged to mono, then soxr (HQ) resamples. Bad input raises the `BadInputError` subclass
that names the file; silence is checked separately (`check_not_silent`) because for the fusion a
silent clip is a missing modality, not a failure.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np
import soxr

from emohd_jax.errors import CorruptMediaError, NoAudioTrackError, SilenceError

SAMPLE_RATE = 16000
# Peak level below which a clip counts as silent. Peak, not RMS, because RAVDESS clips are mostly
# pauses: their RMS goes down to -64 dBFS while their peaks stay above -44 dBFS.
SILENCE_THRESHOLD_DBFS = -60.0
_SOUNDFILE_SUFFIXES = {".wav", ".flac"}


def load_audio(path: str | os.PathLike, *, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode `path` to wave: [samples] float32 mono at `sample_rate`; raises a BadInputError naming it."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise CorruptMediaError(path, "file not found")
    if path.stat().st_size == 0:
        raise CorruptMediaError(path, "empty file (0 bytes)")
    if path.suffix.lower() in _SOUNDFILE_SUFFIXES:
        channels, source_rate = _read_with_soundfile(path)
    else:
        channels, source_rate = _read_with_pyav(path)
    if channels.shape[0] == 0:
        raise CorruptMediaError(path, "no audio samples decoded")
    mono = channels.mean(axis=1, dtype=np.float32)
    if source_rate != sample_rate:
        mono = soxr.resample(mono, source_rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def peak_dbfs(wave: np.ndarray) -> float:
    """Peak level of wave: [samples] in dB relative to full scale (-inf for digital silence)."""
    peak = float(np.max(np.abs(wave))) if wave.size else 0.0
    return 20.0 * np.log10(peak) if peak > 0.0 else float("-inf")


def check_not_silent(wave: np.ndarray, path: str | os.PathLike, *,
                     threshold_dbfs: float = SILENCE_THRESHOLD_DBFS) -> None:
    """Raise SilenceError (naming `path`) when wave: [samples] is digital silence or below the threshold."""
    level = peak_dbfs(wave)
    if level < threshold_dbfs:
        what = "digital silence" if level == float("-inf") else f"peak level {level:.1f} dBFS"
        raise SilenceError(path, f"{what} is below the silence threshold of {threshold_dbfs:.0f} dBFS")


def _read_with_soundfile(path: pathlib.Path) -> tuple[np.ndarray, int]:
    """channels: [samples, channels] float32 and the file's rate; a short read means a truncated file."""
    import soundfile

    try:
        with soundfile.SoundFile(path) as f:
            declared, rate = f.frames, f.samplerate
            channels = f.read(dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError) as err:
        raise CorruptMediaError(path, f"unreadable audio ({err})") from err
    if channels.shape[0] < declared:
        raise CorruptMediaError(path, f"truncated: decoded {channels.shape[0]} of {declared} declared samples")
    return channels, rate


def _read_with_pyav(path: pathlib.Path) -> tuple[np.ndarray, int]:
    """channels: [samples, channels] float32 and the stream's rate, from the first audio stream."""
    import av

    try:
        container = av.open(str(path))
    except av.FFmpegError as err:
        raise CorruptMediaError(path, f"unreadable media ({err})") from err
    with container:
        if not container.streams.audio:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise NoAudioTrackError(path, f"no audio track (streams: {', '.join(kinds)})")
        stream = container.streams.audio[0]
        # Planar float keeps channels apart so the mono downmix is the same mean as the soundfile path.
        to_planar = av.AudioResampler(format="fltp")
        chunks: list[np.ndarray] = []
        try:
            for frame in container.decode(stream):
                for planar in to_planar.resample(frame):
                    chunks.append(planar.to_ndarray())  # [channels, samples]
            for planar in to_planar.resample(None):
                chunks.append(planar.to_ndarray())
        except av.FFmpegError as err:
            raise CorruptMediaError(path, f"audio decoding failed ({err})") from err
        rate = stream.codec_context.sample_rate or stream.rate
    if not chunks:
        return np.zeros((0, 1), np.float32), rate
    return np.concatenate(chunks, axis=1).T, rate
