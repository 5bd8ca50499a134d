"""Video → frames sampled at a fixed rate (SPEC §2: 1 frame per second), with PyAV.

Sampling rule: second k is represented by the decoded frame nearest to its middle,
t = (k + 0.5) / fps, for every such t inside the video; a clip shorter than half a period
still gives one frame (its last). A 3.2 s clip gives 3 frames and a 3.7 s clip 4, i.e.
round(duration · fps); the middle of a second is never a fade-in first frame and stands
for that second on a per-second timeline. Timestamps count from the first decoded frame.
"""

from __future__ import annotations

import math
import os
from typing import Iterator

import av
import numpy as np

from emohd_jax.errors import CorruptMediaError, ImageTooLargeError, NoVideoStreamError

# Above 40 megapixels (a 7700×5200 photo) decoding one frame could take GBs: refused from the header, for video
# frames here and still images in `vision.extract` alike (an 8K video frame is under it).
MAX_IMAGE_PIXELS = 40_000_000


def _video_stream(container: av.container.InputContainer, path: str | os.PathLike) -> av.video.stream.VideoStream:
    """The first real video stream; an audio file's embedded cover picture does not count."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    raise NoVideoStreamError(path, "no video stream (an audio-only file, or a container left empty)")


def _check_frame_size(stream: av.video.stream.VideoStream, path: str | os.PathLike) -> None:
    """ImageTooLargeError from the header, before a frame is decoded: a giant photo in a folder of inputs would
    otherwise take GBs."""
    if stream.width * stream.height > MAX_IMAGE_PIXELS:
        raise ImageTooLargeError(path, f"{stream.width}×{stream.height} ({stream.width * stream.height / 1e6:.0f} "
                                       f"megapixels) is over the {MAX_IMAGE_PIXELS / 1e6:.0f}-megapixel limit "
                                       "(downscale it first)")


def iter_sampled_frames(path: str | os.PathLike, *, fps: float = 1.0) -> Iterator[tuple[np.ndarray, float]]:
    """(frame: [h, w, 3] uint8 RGB, timestamp_s) at `fps` frames per second, decoded as a stream: a recording
    of any length holds one decoded frame (and the previous one) in memory at a time."""
    try:
        container = av.open(str(path))
    except FileNotFoundError:  # a wrong path is the caller's mistake, not bad media
        raise
    except (av.FFmpegError, UnicodeDecodeError) as err:
        raise CorruptMediaError(path, f"cannot open as media: {err}") from err
    sampled = 0
    with container:
        stream = _video_stream(container, path)
        _check_frame_size(stream, path)
        period = 1.0 / fps
        frame_step = float(1 / stream.average_rate) if stream.average_rate else 0.0
        target = 0.5 * period  # the middle of the next second to fill
        start = previous = previous_t = None
        try:
            for frame in container.decode(stream):
                if frame.time is None:  # no timestamp: count frames at the stream's rate
                    t = 0.0 if previous is None else previous_t + frame_step
                else:
                    start = frame.time if start is None else start
                    t = frame.time - start
                while t >= target:  # the target lies between the previous frame and this one
                    previous_is_nearer = previous is not None and target - previous_t < t - target
                    nearest, nearest_t = (previous, previous_t) if previous_is_nearer else (frame, t)
                    yield nearest.to_ndarray(format="rgb24"), nearest_t
                    sampled += 1
                    target += period
                previous, previous_t = frame, t
        except av.FFmpegError as err:
            raise CorruptMediaError(path, f"video decoding failed after {sampled} sampled frames: {err}") from err
        if previous is None:
            raise CorruptMediaError(path, "the video stream has no decodable frame")
        while not sampled or target < previous_t + frame_step:  # a target inside the last frame's span
            yield previous.to_ndarray(format="rgb24"), previous_t
            sampled += 1
            target += period


def sample_frames(path: str | os.PathLike, *, fps: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(frames: [n, h, w, 3] uint8 RGB, timestamps_s: [n] float64) sampled at `fps` frames per second."""
    frames, times = zip(*iter_sampled_frames(path, fps=fps))
    return np.stack(frames), np.asarray(times, dtype=np.float64)


# A container's declared duration and what its streams decode to differ by a frame or an audio packet, and the
# 1 fps sampling of a video-only input stands for up to half a period less: beyond that, the file is truncated.
TRUNCATION_TOLERANCE_S, TRUNCATION_TOLERANCE_FRACTION = 0.5, 0.01


def declared_duration_s(path: str | os.PathLike) -> float | None:
    """The duration a video file's container declares (its header or index), None for a file without a real video
    stream or without a declared duration (an audio file's is an estimate from its bit rate, not a record)."""
    try:
        with av.open(str(path)) as container:
            _video_stream(container, path)
            duration = container.duration
    except (OSError, av.FFmpegError, UnicodeDecodeError, NoVideoStreamError):
        return None
    return duration / av.time_base if duration and duration > 0 else None


def truncation_warning(decoded_s: float, declared_s: float | None) -> str | None:
    """"truncated: decoded 1.00 s of 2.24 s" when the decoded length falls short of the declared one (a cut
    download or copy), else None."""
    if declared_s is None or not math.isfinite(declared_s):
        return None
    if decoded_s < declared_s - TRUNCATION_TOLERANCE_S - TRUNCATION_TOLERANCE_FRACTION * declared_s:
        return f"truncated: decoded {decoded_s:.2f} s of {declared_s:.2f} s"
    return None
