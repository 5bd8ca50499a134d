"""Seconds spent per stage of `predict`: where the time goes, for `emohd bench predict` and anyone tuning a deployment."""

from __future__ import annotations

import contextlib
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
_END = object()


class StageClock:
    """Seconds per stage (decode, faces, log-mel, ASR, each tower, fusion), summed over inputs."""

    STAGES = ("decode_video", "decode_audio", "faces", "visual_tower", "log_mel", "whisper_encoder", "audio_tower",
              "vad", "asr", "text_tokens", "text_tower", "fusion")

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.seconds = dict.fromkeys(self.STAGES, 0.0)

    @contextlib.contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - start

    def iterate(self, stage: str, items: Iterable[T]) -> Iterator[T]:
        """`items` with the time spent producing each one (a decoder) counted to `stage`."""
        iterator = iter(items)
        while True:
            with self(stage):
                item = next(iterator, _END)
            if item is _END:
                return
            yield item
