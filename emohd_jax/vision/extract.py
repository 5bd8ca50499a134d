"""Faces → model input: still face images of class-folder sets, and 1 fps MTCNN faces of videos, at the
backbone's input size; the same calls for `prepare` and `predict`."""

from __future__ import annotations

import os
import warnings

import numpy as np

from emohd_jax.errors import CorruptMediaError
from emohd_jax.extract import BASE_FIELDS, Field, Record, Utterance
from emohd_jax.vision.video_io import MAX_IMAGE_PIXELS


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

def _face_fields(backbone: str) -> dict[str, Field]:
    if backbone not in FACE_SHAPES:
        raise ValueError(f"unknown face backbone {backbone!r} (known: {', '.join(FACE_SHAPES)})")
    return {**BASE_FIELDS, "face": Field(FACE_SHAPES[backbone], "uint8")}


# An image's size is read from its header before anything is decoded: below the face detector's smallest face
# (MTCNN's 20 px) nothing can be recognised; above `video_io.MAX_IMAGE_PIXELS` decoding could take GBs.
MIN_IMAGE_SIDE = 20


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
        self.fields = _face_fields(backbone)

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
        self.fields = {**_face_fields(backbone), "timestamp_s": Field((), "float32")}
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
