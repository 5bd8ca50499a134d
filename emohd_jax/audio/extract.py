"""Voice → model input: log-mel patches of an utterance's audio, the same call for `prepare` and `predict`."""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from emohd_jax.errors import CorruptMediaError, NoAudioTrackError
from emohd_jax.extract import BASE_FIELDS, Field, Record, Utterance


class AudioExtractor:
    """VGGish log-mel patches of the utterance's audio (or its video's audio track), one record per 0.96 s.

    Decode → mono 16 kHz → silence check → speech window → log-mel patches: the same call at prepare
    and predict time. A span (`start_s`/`end_s`, IEMOCAP) is cut from the decoded recording first.
    `trim_db` > 0 keeps only the whole patches around the speech (frames within `trim_db` of the
    loudest), so acted clips with a second of silence at each end (RAVDESS) do not give patches of
    silence that carry an emotion label; 0 keeps the whole clip, as VGGish does.
    """

    name = "audio"

    def __init__(self, *, trim_db: float = 0.0):
        from emohd_jax.audio.log_mel import VGGISH_LOG_MEL

        self.spec, self.trim_db = VGGISH_LOG_MEL, float(trim_db)
        self.fields = {**BASE_FIELDS, "patches": Field((self.spec.patch_frames, self.spec.num_mel_bins), "float32"),
                       "patch_index": Field((), "int32"),
                       "seconds": Field((), "float32")}  # length of the whole utterance

    def options(self) -> dict:
        return {"log_mel": dataclasses.asdict(self.spec), "trim_db": self.trim_db}

    def speech_window(self, wave: np.ndarray) -> slice:
        """The shortest run of whole patches around the frames within `trim_db` of the loudest, as a slice of wave: [samples].

        The window is centred on the speech and filled with the clip's own surroundings, not with zeros.
        """
        from emohd_jax.audio.log_mel import num_frames

        spec = self.spec
        frames = num_frames(wave.size, spec)
        if frames == 0:
            return slice(0, wave.size)
        starts = np.arange(frames) * spec.hop_length
        energy = np.add.reduceat(np.square(wave, dtype=np.float64), starts)[:frames]  # ≈ hop energy per frame
        level_db = 10.0 * np.log10(energy + 1e-20)
        active = np.flatnonzero(level_db > level_db.max() - self.trim_db)
        first, last = starts[active[0]], starts[active[-1]] + spec.window_length
        patch_stride = spec.patch_hop_frames * spec.hop_length
        n = max(1, -(-(last - first - spec.patch_samples) // patch_stride) + 1)  # patches covering the speech
        length = spec.patch_samples + (n - 1) * patch_stride
        start = int(np.clip((first + last - length) // 2, 0, max(0, wave.size - length)))
        return slice(start, start + length)

    def patches(self, utterance: Utterance) -> tuple[np.ndarray, float]:
        """(patches: [n, 96, 64] float32, seconds of audio) of one utterance; raises BadInputError naming the file."""
        from emohd_jax.audio.io import load_audio

        media = utterance.audio or utterance.video
        if media is None:
            raise NoAudioTrackError(utterance.uid, "utterance has neither an audio nor a video file")
        rate = self.spec.sample_rate
        wave = load_audio(media, sample_rate=rate)  # [samples]
        if utterance.start_s is not None or utterance.end_s is not None:
            start = int(round((utterance.start_s or 0.0) * rate))
            end = None if utterance.end_s is None else int(round(utterance.end_s * rate))
            wave = wave[start:end]
            if wave.size == 0:
                raise CorruptMediaError(media, f"span {utterance.start_s}-{utterance.end_s} s is empty")
        patches, _ = self.wave_patches(wave, media)
        return patches, wave.size / rate

    def wave_patches(self, wave: np.ndarray, source: str | os.PathLike) -> tuple[np.ndarray, float]:
        """wave: [samples] 16 kHz → (patches [n, 96, 64] float32, offset_s of the first patch in `wave`).

        Silence check → speech window → log-mel patches: what `prepare` stores and `predict` feeds the
        tower, from one function. SilenceError names `source`.
        """
        from emohd_jax.audio.log_mel import waveform_to_patches
        from emohd_jax.audio.io import check_not_silent

        check_not_silent(wave, source)
        window = self.speech_window(wave) if self.trim_db > 0 else slice(0, wave.size)
        rate = self.spec.sample_rate
        return waveform_to_patches(wave[window], rate, spec=self.spec, source=str(source)), window.start / rate

    def records(self, utterance: Utterance) -> list[Record]:
        patches, seconds = self.patches(utterance)
        return [{"uid": utterance.uid, "label": utterance.label, "patches": patch, "patch_index": np.int32(i),
                 "seconds": np.float32(seconds)} for i, patch in enumerate(patches)]
