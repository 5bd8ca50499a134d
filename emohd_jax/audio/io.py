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
from typing import Iterator

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
    blocks = list(iter_audio(path, sample_rate=sample_rate))
    return np.concatenate(blocks) if len(blocks) > 1 else blocks[0]


def iter_audio(path: str | os.PathLike, *, sample_rate: int = SAMPLE_RATE,
               block_s: float = 60.0) -> Iterator[np.ndarray]:
    """Decode `path` as a stream of wave blocks: [~block_s · sample_rate] float32 mono, so a recording of any
    length is never whole in memory. The blocks joined equal `load_audio` sample for sample (soxr's streaming
    resampler is the one-shot one cut into pieces)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise CorruptMediaError(path, "file not found")
    if path.stat().st_size == 0:
        raise CorruptMediaError(path, "empty file (0 bytes)")
    read = _read_with_soundfile if path.suffix.lower() in _SOUNDFILE_SUFFIXES else _read_with_pyav
    resampler, pending, pending_samples, yielded = None, [], 0, False
    for channels, source_rate in read(path, block_s=block_s):
        if resampler is None and source_rate != sample_rate:
            resampler = soxr.ResampleStream(source_rate, sample_rate, 1, dtype="float32", quality="HQ")
        mono = channels.mean(axis=1, dtype=np.float32)
        if not np.isfinite(mono).all():  # a float file can hold NaN/inf: it would pass the silence check
            raise CorruptMediaError(path, "audio samples that are not finite numbers (NaN or infinity)")
        pending.append(resampler.resample_chunk(mono) if resampler else mono)
        pending_samples += pending[-1].size
        if pending_samples >= block_s * sample_rate:
            yield np.ascontiguousarray(np.concatenate(pending), dtype=np.float32)
            pending, pending_samples, yielded = [], 0, True
    if resampler is not None:
        pending.append(resampler.resample_chunk(np.zeros(0, np.float32), last=True))
    tail = np.concatenate(pending) if pending else np.zeros(0, np.float32)
    if tail.size:
        yield np.ascontiguousarray(tail, dtype=np.float32)
    elif not yielded:
        raise CorruptMediaError(path, "no audio samples decoded")


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


def _read_with_soundfile(path: pathlib.Path, *, block_s: float) -> Iterator[tuple[np.ndarray, int]]:
    """(channels: [frames, channels] float32, the file's rate) per block; a short read means a truncated file,
    and is raised before the block that shows it is handed on."""
    import soundfile

    try:
        with soundfile.SoundFile(path) as f:
            declared, rate, read = f.frames, f.samplerate, 0
            block_frames = max(1, int(block_s * rate))
            while read < declared:
                channels = f.read(min(block_frames, declared - read), dtype="float32", always_2d=True)
                read += channels.shape[0]
                if channels.shape[0] == 0 or (channels.shape[0] < block_frames and read < declared):
                    raise CorruptMediaError(path, f"truncated: decoded {read} of {declared} declared samples")
                yield channels, rate
    except (soundfile.LibsndfileError, RuntimeError) as err:
        raise CorruptMediaError(path, f"unreadable audio ({err})") from err


def _read_with_pyav(path: pathlib.Path, *, block_s: float) -> Iterator[tuple[np.ndarray, int]]:
    """(channels: [frames, channels] float32, the stream's rate) per block of about `block_s`, from the first
    audio stream."""
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
        rate = stream.codec_context.sample_rate or stream.rate
        block_frames = max(1, int(block_s * rate))
        # Planar float keeps channels apart so the mono downmix is the same mean as the soundfile path.
        to_planar = av.AudioResampler(format="fltp")
        chunks: list[np.ndarray] = []
        try:
            for frame in container.decode(stream):
                chunks += [planar.to_ndarray() for planar in to_planar.resample(frame)]  # [channels, samples]
                if sum(c.shape[1] for c in chunks) >= block_frames:
                    yield np.concatenate(chunks, axis=1).T, rate
                    chunks = []
            chunks += [planar.to_ndarray() for planar in to_planar.resample(None)]
        except av.FFmpegError as err:
            raise CorruptMediaError(path, f"audio decoding failed ({err})") from err
        if chunks:
            yield np.concatenate(chunks, axis=1).T, rate
