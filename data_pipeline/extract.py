"""Per-utterance feature extraction, shared by offline `prepare` and online `predict`.

An extractor turns one `Utterance` into one or more records (one per utterance for text, one
per 0.96 s patch for audio, one per face crop for video) and declares their tfds schema.
Bad input raises a `BadInputError`; the caller records it and goes on.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import warnings
from typing import Protocol, Sequence

import numpy as np
import tensorflow_datasets as tfds

from data_pipeline.sources.base import Utterance
from emohd_jax.classes import EMOTIONS
from emohd_jax.errors import CorruptMediaError, EmptyTranscriptError, NoAudioTrackError

Record = dict[str, np.ndarray | str | int]


class Extractor(Protocol):
    name: str
    features: tfds.features.FeaturesDict

    def options(self) -> dict: ...

    def records(self, utterance: Utterance) -> list[Record]: ...


def _base_features(**fields) -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict({
        "uid": tfds.features.Text(),
        "label": tfds.features.ClassLabel(names=list(EMOTIONS)),
        **fields,
    })


def dialogue_context(utterances: Sequence[Utterance], turns: int) -> dict[str, str]:
    """uid → the previous `turns` utterances of its dialogue as "Speaker: text" lines, oldest first."""
    if turns <= 0:
        return {}
    by_dialogue = collections.defaultdict(list)
    for utt in utterances:
        if utt.dialogue is not None:
            by_dialogue[utt.dialogue].append(utt)
    context = {}
    for dialogue in by_dialogue.values():
        dialogue.sort(key=lambda u: u.turn or 0)
        for i, utt in enumerate(dialogue):
            previous = dialogue[max(0, i - turns):i]
            context[utt.uid] = " ".join(f"{p.speaker}: {p.text}" for p in previous)
    return context


class TextExtractor:
    """Word-piece tokens of the utterance (segment A) and, optionally, its dialogue context (segment B).

    The current utterance is never truncated; only the context is (`truncation='only_second'`), and
    the context holds at most `context_turns` previous turns, as a live system would have heard them.
    """

    name = "text"

    def __init__(self, tokenizer_dir: str | os.PathLike, *, max_length: int = 128, context_turns: int = 0):
        from transformers import AutoTokenizer

        self.tokenizer_dir = str(tokenizer_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_dir, use_fast=True)
        self.max_length, self.context_turns = max_length, context_turns
        self.features = _base_features(
            input_ids=tfds.features.Tensor(shape=(None,), dtype=np.int32),
            token_type_ids=tfds.features.Tensor(shape=(None,), dtype=np.int32),
            text=tfds.features.Text(),
        )
        self._context: dict[str, str] = {}

    def options(self) -> dict:
        return {"tokenizer": os.path.basename(self.tokenizer_dir.rstrip("/")), "max_length": self.max_length,
                "context_turns": self.context_turns}

    def set_dialogues(self, utterances: Sequence[Utterance]) -> None:
        """Give the extractor the whole split so it can look up each utterance's preceding turns."""
        self._context = dialogue_context(utterances, self.context_turns)

    def encode(self, text: str, speaker: str | None = None, context: str = "") -> dict[str, np.ndarray]:
        """Token ids for one utterance: the same call at prepare time and at predict time."""
        if speaker:
            text = f"{speaker}: {text}"
        if context and len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) + 4 > self.max_length:
            context = ""  # the utterance alone fills the window: it keeps priority over its context
        encoded = self.tokenizer(text, context or None, truncation="only_second" if context else True,
                                 max_length=self.max_length, return_token_type_ids=True)
        return {"input_ids": np.asarray(encoded["input_ids"], np.int32),
                "token_type_ids": np.asarray(encoded["token_type_ids"], np.int32)}

    def records(self, utterance: Utterance) -> list[Record]:
        if not utterance.text or not utterance.text.strip():
            raise EmptyTranscriptError(utterance.uid, "empty transcript")
        speaker = utterance.speaker if self.context_turns else None  # speakers matter only beside context
        tokens = self.encode(utterance.text, speaker, self._context.get(utterance.uid, ""))
        return [{"uid": utterance.uid, "label": utterance.label, "text": utterance.text, **tokens}]


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
        self.features = _base_features(
            patches=tfds.features.Tensor(shape=(self.spec.patch_frames, self.spec.num_mel_bins), dtype=np.float32),
            patch_index=tfds.features.Scalar(dtype=np.int32),
            seconds=tfds.features.Scalar(dtype=np.float32),  # length of the whole utterance
        )

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


FACE_SHAPES: dict[str, tuple[int, int, int]] = {"mini_xception": (64, 64, 1), "resnet50": (224, 224, 3)}


def backbone_faces(images: np.ndarray, backbone: str) -> np.ndarray:
    """uint8 faces [b, h, w] or [b, h, w, 3] → uint8 [b, *FACE_SHAPES[backbone]] (64×64 gray or 224×224 RGB).

    The one resize between a face and a backbone (the model module's own), for prepare and predict alike.
    """
    if backbone == "mini_xception":
        from emohd_jax.models.mini_xception import resize_faces
    elif backbone == "resnet50":
        from emohd_jax.models.resnet50 import resize_faces
    else:
        raise ValueError(f"unknown face backbone {backbone!r} (known: {', '.join(FACE_SHAPES)})")
    return resize_faces(images)


def _face_features(backbone: str, **fields) -> tfds.features.FeaturesDict:
    if backbone not in FACE_SHAPES:
        raise ValueError(f"unknown face backbone {backbone!r} (known: {', '.join(FACE_SHAPES)})")
    return _base_features(face=tfds.features.Tensor(shape=FACE_SHAPES[backbone], dtype=np.uint8), **fields)


# An image's size is read from its header before anything is decoded: below the face detector's smallest face
# (MTCNN's 20 px) nothing can be recognised; above 40 megapixels (a 7700×5200 photo) decoding could take GBs.
MIN_IMAGE_SIDE = 20
MAX_IMAGE_PIXELS = 40_000_000


def load_image(path: str | os.PathLike) -> np.ndarray:
    """uint8 [h, w] for grayscale files, [h, w, 3] RGB otherwise; ImageTooSmallError / ImageTooLargeError by
    the size in the header, before anything is decoded."""
    from PIL import Image

    from emohd_jax.errors import ImageTooLargeError, ImageTooSmallError

    limit = f"the {MAX_IMAGE_PIXELS / 1e6:.0f}-megapixel limit (downscale it first)"
    try:
        with warnings.catch_warnings():
            # PIL warns from 89 MP and refuses from 179 MP; the lower limit below refuses first, with its reason.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)  # lazy: only the header is read here
    except Image.DecompressionBombError as err:
        raise ImageTooLargeError(path, f"more than {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels, over "
                                       f"{limit}") from err
    with image:
        width, height = image.size
        if min(width, height) < MIN_IMAGE_SIDE:
            raise ImageTooSmallError(path, f"too small to hold a face ({width}×{height}; the detector's smallest "
                                           f"face is {MIN_IMAGE_SIDE} px)")
        if width * height > MAX_IMAGE_PIXELS:
            raise ImageTooLargeError(path, f"{width}×{height} ({width * height / 1e6:.0f} megapixels) is over {limit}")
        return np.asarray(image.convert("L" if image.mode in ("L", "I;16", "1") else "RGB"))


class ImageExtractor:
    """A face image of a class-folder set (FER2013, CIFE) → one record, stored at the backbone's input size."""

    name = "image"

    def __init__(self, backbone: str = "mini_xception"):
        self.backbone = backbone
        self.features = _face_features(backbone)

    def options(self) -> dict:
        return {"backbone_input": self.backbone, "face_shape": list(FACE_SHAPES[self.backbone])}

    def records(self, utterance: Utterance) -> list[Record]:
        from PIL import UnidentifiedImageError

        if utterance.image is None:
            raise CorruptMediaError(utterance.uid, "utterance has no image file")
        try:
            image = load_image(utterance.image)  # [h, w] or [h, w, 3] uint8
        except (UnidentifiedImageError, OSError) as err:
            raise CorruptMediaError(utterance.image, f"cannot read as an image: {err}") from err
        face = backbone_faces(image[None], self.backbone)[0]
        return [{"uid": utterance.uid, "label": utterance.label, "face": face}]


class VideoFaceExtractor:
    """A clip's faces at `fps` (SPEC §2.1–2.2) → one record per frame with a face, at the backbone's input size.

    No face in any sampled frame raises NoFaceError: the visual modality of that clip is missing.
    """

    name = "faces"

    def __init__(self, backbone: str = "mini_xception", *, fps: float = 1.0, margin: float = 0.2,
                 select: str = "largest", detector=None):
        self.backbone, self.fps, self.margin, self.select = backbone, fps, margin, select
        self.features = _face_features(backbone, timestamp_s=tfds.features.Scalar(dtype=np.float32))
        self._detector = detector

    def options(self) -> dict:
        return {"backbone_input": self.backbone, "face_shape": list(FACE_SHAPES[self.backbone]), "fps": self.fps,
                "margin": self.margin, "select": self.select}

    @property
    def detector(self):
        if self._detector is None:  # built on first use: loading + jitting MTCNN costs seconds
            from emohd_jax.vision.faces import MTCNNDetector

            self._detector = MTCNNDetector()
        return self._detector

    def faces(self, video_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
        """(faces: [m, *FACE_SHAPES[backbone]] uint8, timestamps_s: [m]) of one video."""
        from emohd_jax.vision.faces import extract_clip_faces

        clip = extract_clip_faces(video_path, self.detector, fps=self.fps, size=FACE_SHAPES[self.backbone][0],
                                  margin=self.margin, select=self.select)
        return backbone_faces(clip.crops, self.backbone), clip.timestamps_s

    def faces_in_frames(self, frames: np.ndarray, timestamps: np.ndarray, *, source: str | os.PathLike):
        """frames: [n, h, w, 3] sampled at `fps` → (faces [m, *FACE_SHAPES[backbone]], timestamps_s [m],
        detections of every sampled frame [n]), for `predict`, which decodes a recording once.

        NoFaceError (naming `source`) when no frame has a face.
        """
        from emohd_jax.vision.faces import faces_in_frames

        size = FACE_SHAPES[self.backbone][0]
        clip = faces_in_frames(frames, timestamps, self.detector, size=size, margin=self.margin, select=self.select,
                               source=source)
        return backbone_faces(clip.crops, self.backbone), clip.timestamps_s, clip.detections

    def records(self, utterance: Utterance) -> list[Record]:
        from emohd_jax.errors import NoVideoStreamError

        if utterance.video is None:
            raise NoVideoStreamError(utterance.audio or utterance.uid,
                                     "no video stream (the face tower needs a video; this utterance has only audio)")
        faces, timestamps = self.faces(utterance.video)
        return [{"uid": utterance.uid, "label": utterance.label, "face": face, "timestamp_s": np.float32(t)}
                for face, t in zip(faces, timestamps)]
