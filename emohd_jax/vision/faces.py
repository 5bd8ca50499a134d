"""Faces from video: the detector interface, the JAX MTCNN cascade, face crops, and the MELD-sub filter.

`faces_in_frames` is the one function that both offline `prepare` (through `extract_clip_faces`, one
clip) and online `predict` (a recording decoded once) call (SPEC §2: 1 fps frames → MTCNN → the largest
face per frame, cropped with a margin and resized).

The cascade follows facenet-pytorch's `detect_face` step for step (same pyramid, area resampling,
box arithmetic in float32, NMS conventions), so its boxes can be checked box-for-box against it;
the networks run jitted, PNet once per pyramid scale over all frames, RNet and ONet once over all
candidates of all frames. Image resampling uses integral images (exact box averages in int64).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Callable, Literal, Mapping, NamedTuple, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy
from flax import nnx

from emohd_jax.errors import NoFaceError
from emohd_jax.exported import CachedProgram
from emohd_jax.models import mtcnn
from emohd_jax.models.flat_state import with_state_dict
from emohd_jax.vision.video_io import sample_frames

Selection = Literal["largest", "most_confident"]


class Detections(NamedTuple):
    """The faces found in one frame, most probable first."""

    boxes: np.ndarray  # [k, 4] float32 x1, y1, x2, y2 in pixels
    probs: np.ndarray  # [k] float32
    landmarks: np.ndarray  # [k, 5, 2] float32 (x, y): eyes, nose, mouth corners


class FaceDetector(Protocol):
    """Anything that finds faces in a batch of frames of one size."""

    def detect(self, frames: np.ndarray) -> list[Detections]:
        """frames: [n, h, w, 3] uint8 RGB → one `Detections` per frame."""
        ...


# ---- resampling -------------------------------------------------------------------------------

def _integral_images(frames: np.ndarray) -> np.ndarray:
    """frames: [n, h, w, c] uint8 → [n, h + 1, w + 1, c] int64 with a zero first row and column."""
    n, h, w, c = frames.shape
    integral = np.zeros((n, h + 1, w + 1, c), np.int64)
    np.cumsum(np.cumsum(frames, axis=1, dtype=np.int64), axis=2, out=integral[:, 1:, 1:])
    return integral


def _area_bins(start: np.ndarray, length: np.ndarray, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Bin edges [k, n_out] of adaptive average pooling (torch's 'area' mode) over [start, start + length)."""
    i = np.arange(n_out)
    lo = (i * length[:, None]) // n_out
    hi = -((-(i + 1) * length[:, None]) // n_out)
    return start[:, None] + lo, start[:, None] + hi


def _area_resample(integral: np.ndarray, frame_index: np.ndarray, y0: np.ndarray, y1: np.ndarray,
                   x0: np.ndarray, x1: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Windows [y0, y1) × [x0, x1) of frames `frame_index` → [k, out_h, out_w, c] float32 box averages."""
    r0, r1 = _area_bins(y0, y1 - y0, out_hw[0])
    c0, c1 = _area_bins(x0, x1 - x0, out_hw[1])
    f = frame_index[:, None, None]
    r0, r1, c0, c1 = r0[:, :, None], r1[:, :, None], c0[:, None, :], c1[:, None, :]
    sums = integral[f, r1, c1] - integral[f, r0, c1] - integral[f, r1, c0] + integral[f, r0, c0]
    return (sums / ((r1 - r0) * (c1 - c0))[..., None]).astype(np.float32)


# ---- non-maximum suppression -------------------------------------------------------------------

def _nms(boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray, threshold: float,
         overlap: Literal["union", "min"] = "union") -> np.ndarray:
    """Indices kept by greedy NMS within each group, best score first.

    'union' is IoU with areas w·h (torchvision's convention, MTCNN stages 1–2); 'min' divides the
    intersection by the smaller area with (w + 1)·(h + 1) (the original Caffe convention, stage 3).
    """
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    plus = 1.0 if overlap == "min" else 0.0
    boxes = boxes + (groups * (boxes.max() + 1))[:, None].astype(boxes.dtype)  # groups never overlap
    x1, y1, x2, y2 = boxes.T
    area = (x2 - x1 + plus) * (y2 - y1 + plus)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + plus)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + plus)
        inter = w * h
        denominator = np.minimum(area[i], area[rest]) if overlap == "min" else area[i] + area[rest] - inter
        order = rest[inter / denominator <= threshold]
    return np.asarray(keep, np.int64)


# ---- box arithmetic (float32, as the reference) -------------------------------------------------

def _apply_offsets(boxes: np.ndarray, offsets: np.ndarray, plus: float) -> np.ndarray:
    """Box regression: each edge moves by its offset × the box side (side = x2 − x1 + plus)."""
    w = boxes[:, 2] - boxes[:, 0] + plus
    h = boxes[:, 3] - boxes[:, 1] + plus
    return boxes + offsets * np.stack([w, h, w, h], axis=1)


def _square(boxes: np.ndarray) -> np.ndarray:
    """Grow each box to a square around its centre, side = its longer side."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    x1 = boxes[:, 0] + w * 0.5 - side * 0.5
    y1 = boxes[:, 1] + h * 0.5 - side * 0.5
    return np.stack([x1, y1, x1 + side, y1 + side], axis=1)


def _pixel_windows(boxes: np.ndarray, width: int, height: int) -> tuple[np.ndarray, ...]:
    """Boxes → integer windows [y0, y1) × [x0, x1) clipped to the frame (MTCNN's 1-based `pad`)."""
    b = np.trunc(boxes).astype(np.int64)
    x0, y0 = np.maximum(b[:, 0], 1) - 1, np.maximum(b[:, 1], 1) - 1
    x1, y1 = np.minimum(b[:, 2], width), np.minimum(b[:, 3], height)
    return y0, y1, x0, x1


# ---- the cascade -------------------------------------------------------------------------------

def _jitted(weights: Mapping[str, np.ndarray], name: str, source: str) -> Callable[[jax.Array], tuple[jax.Array, ...]]:
    """The cascade's net `name` ("pnet" | "rnet" | "onet") as a pure function of its input, its program per input
    shape kept between runs (`emohd_jax.exported`: PNet has one per pyramid scale). Its weights (the file's
    `name.*` tensors) are the program's arguments and its module is built only while tracing, so a run that
    finds the programs saved builds none (`mtcnn.load` builds all three).

    Full float32 precision: TF32 on GPUs would move scores across the thresholds, and the nets are tiny.
    """
    net_class = {"pnet": mtcnn.PNet, "rnet": mtcnn.RNet, "onet": mtcnn.ONet}[name]
    tensors = jax.device_put({key.removeprefix(f"{name}."): value for key, value in weights.items()
                              if key.startswith(f"{name}.")})

    def apply(tensors, x):
        net = with_state_dict(nnx.eval_shape(lambda: net_class(nnx.Rngs(0))), tensors, source=source)
        with jax.default_matmul_precision("highest"):
            return net(mtcnn.normalize(x))

    program = CachedProgram(apply, name=f"mtcnn-{name}", cpu_inference=False)
    return lambda x: program(tensors, x)


def _bucket(n: int, smallest: int) -> int:
    """Batch sizes rounded up to powers of two, so the jitted nets compile a handful of times."""
    return max(smallest, 1 << (n - 1).bit_length())


def _run_padded(fn: Callable, x: np.ndarray, smallest: int) -> list[np.ndarray]:
    padded = np.zeros((_bucket(len(x), smallest), *x.shape[1:]), x.dtype)
    padded[:len(x)] = x
    return [np.asarray(out)[:len(x)] for out in fn(padded)]


@dataclasses.dataclass(frozen=True)
class _Candidates:
    """Face candidates over a batch of frames."""

    boxes: np.ndarray  # [k, 4] float32
    scores: np.ndarray  # [k] float32
    frame: np.ndarray  # [k] int64 frame index

    def take(self, index: np.ndarray) -> "_Candidates":
        return _Candidates(self.boxes[index], self.scores[index], self.frame[index])


class MTCNNDetector:
    """The MTCNN cascade (PNet → RNet → ONet) in JAX, with facenet-pytorch's defaults."""

    def __init__(self, weights: str | os.PathLike = mtcnn.DEFAULT_WEIGHTS, *, min_face_size: int = 20,
                 thresholds: Sequence[float] = (0.6, 0.7, 0.7), factor: float = 0.709):
        tensors = safetensors.numpy.load_file(str(weights))
        self._pnet, self._rnet, self._onet = (_jitted(tensors, name, str(weights)) for name in ("pnet", "rnet", "onet"))
        self.min_face_size, self.thresholds, self.factor = min_face_size, tuple(thresholds), factor

    def _scales(self, height: int, width: int) -> list[float]:
        """Pyramid scales: the smallest face maps to PNet's 12-pixel window, then shrink by `factor`."""
        scale, shorter = 12.0 / self.min_face_size, min(height, width) * 12.0 / self.min_face_size
        scales = []
        while shorter >= 12:
            scales.append(scale)
            scale, shorter = scale * self.factor, shorter * self.factor
        return scales

    def _propose(self, integral: np.ndarray, height: int, width: int) -> _Candidates:
        """Stage 1: PNet over the pyramid, NMS per scale and frame, then across scales."""
        n = integral.shape[0]
        # Empty first entries keep the concatenations valid when no scale fits the frame.
        boxes, offsets = [np.zeros((0, 4), np.float32)], [np.zeros((0, 4), np.float32)]
        scores, frames = [np.zeros(0, np.float32)], [np.zeros(0, np.int64)]
        for scale in self._scales(height, width):
            out_hw = (int(height * scale + 1), int(width * scale + 1))
            zeros = np.zeros(n, np.int64)
            pyramid = _area_resample(integral, np.arange(n), zeros, zeros + height, zeros, zeros + width, out_hw)
            offset_map, prob_map = _run_padded(self._pnet, pyramid, smallest=1)  # [n, h', w', 4], [n, h', w']
            frame, row, col = np.nonzero(prob_map >= self.thresholds[0])
            cell = np.stack([col, row], axis=1).astype(np.float32)  # PNet cells: stride 2, 12-pixel window
            corners = np.concatenate([np.floor((2 * cell + 1) / np.float32(scale)),
                                      np.floor((2 * cell + 12) / np.float32(scale))], axis=1)
            keep = _nms(corners, prob_map[frame, row, col], frame, 0.5)
            boxes.append(corners[keep])
            scores.append(prob_map[frame, row, col][keep])
            frames.append(frame[keep].astype(np.int64))
            offsets.append(offset_map[frame, row, col][keep])
        candidates = _Candidates(np.concatenate(boxes), np.concatenate(scores), np.concatenate(frames))
        keep = _nms(candidates.boxes, candidates.scores, candidates.frame, 0.7)
        candidates, offsets = candidates.take(keep), np.concatenate(offsets)[keep]
        return dataclasses.replace(candidates, boxes=_square(_apply_offsets(candidates.boxes, offsets, plus=0.0)))

    def _crops(self, integral: np.ndarray, candidates: _Candidates, size: int) -> tuple[np.ndarray, _Candidates]:
        """Each candidate's window resampled to size × size; candidates entirely off-frame are dropped."""
        height, width = integral.shape[1] - 1, integral.shape[2] - 1
        y0, y1, x0, x1 = _pixel_windows(candidates.boxes, width, height)
        inside = (y1 > y0) & (x1 > x0)
        crops = _area_resample(integral, candidates.frame[inside], y0[inside], y1[inside], x0[inside], x1[inside], (size, size))
        return crops, candidates.take(np.nonzero(inside)[0])

    def _refine(self, integral: np.ndarray, candidates: _Candidates) -> _Candidates:
        """Stage 2: RNet on 24×24 crops of every candidate of every frame at once."""
        crops, candidates = self._crops(integral, candidates, 24)
        offsets, probs = _run_padded(self._rnet, crops, smallest=16)
        passed = np.nonzero(probs > self.thresholds[1])[0]
        candidates = _Candidates(candidates.boxes[passed], probs[passed], candidates.frame[passed])
        keep = _nms(candidates.boxes, candidates.scores, candidates.frame, 0.7)
        candidates = candidates.take(keep)
        return dataclasses.replace(candidates, boxes=_square(_apply_offsets(candidates.boxes, offsets[passed][keep], plus=1.0)))

    def _output(self, integral: np.ndarray, candidates: _Candidates) -> tuple[_Candidates, np.ndarray]:
        """Stage 3: ONet on 48×48 crops → final boxes, probabilities and landmarks [k, 5, 2]."""
        crops, candidates = self._crops(integral, candidates, 48)
        offsets, points, probs = _run_padded(self._onet, crops, smallest=16)
        passed = np.nonzero(probs > self.thresholds[2])[0]
        boxes = candidates.boxes[passed]
        side = np.stack([boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1], axis=1)  # [k, 2]
        landmarks = points[passed].reshape(-1, 2, 5).transpose(0, 2, 1) * side[:, None] + boxes[:, None, :2] - 1
        candidates = _Candidates(_apply_offsets(boxes, offsets[passed], plus=1.0), probs[passed], candidates.frame[passed])
        keep = _nms(candidates.boxes, candidates.scores, candidates.frame, 0.7, overlap="min")
        return candidates.take(keep), landmarks[keep]

    def detect(self, frames: np.ndarray) -> list[Detections]:
        """frames: [n, h, w, 3] uint8 RGB → one `Detections` per frame, most probable face first."""
        n, height, width = frames.shape[:3]
        integral = _integral_images(frames)
        candidates = self._propose(integral, height, width)
        landmarks = np.zeros((0, 5, 2), np.float32)
        if len(candidates.scores):
            candidates = self._refine(integral, candidates)
        if len(candidates.scores):
            candidates, landmarks = self._output(integral, candidates)
        return [Detections(candidates.boxes[candidates.frame == i].astype(np.float32),
                           candidates.scores[candidates.frame == i].astype(np.float32),
                           landmarks[candidates.frame == i].astype(np.float32)) for i in range(n)]


# ---- crops -------------------------------------------------------------------------------------

@functools.partial(jax.jit, static_argnames="size")
def _resample_squares(frames: jax.Array, scale: jax.Array, translation: jax.Array, size: int) -> jax.Array:
    """frames: [m, h, w, 3] → [m, size, size, 3]: each frame scaled and shifted (antialiased bilinear)."""
    def one(frame, s, t):
        return jax.image.scale_and_translate(frame.astype(jnp.float32), (size, size, 3), (0, 1),
                                             jnp.stack([s, s]), t, method="linear", antialias=True)

    out = jax.vmap(one)(frames, scale, translation)
    return jnp.clip(jnp.round(out), 0, 255).astype(jnp.uint8)


def _select(detections: Detections, select: Selection) -> int:
    if select == "largest":
        sides = detections.boxes[:, 2:] - detections.boxes[:, :2]
        return int(np.argmax(sides[:, 0] * sides[:, 1]))
    if select == "most_confident":
        return int(np.argmax(detections.probs))
    raise ValueError(f"select must be 'largest' or 'most_confident', not {select!r}")


def crop_faces(frames: np.ndarray, detections: Sequence[Detections], *, size: int = 224, margin: float = 0.2,
               select: Selection = "largest") -> tuple[np.ndarray, np.ndarray]:
    """One face per frame that has any: (crops [m, size, size, 3] uint8, frame_index [m]).

    The crop is a square around the box centre with side = longer box side × (1 + margin), so faces
    keep their aspect ratio; parts beyond the frame are black.
    """
    chosen = [(i, d.boxes[_select(d, select)]) for i, d in enumerate(detections) if len(d.probs)]
    frame_index = np.asarray([i for i, _ in chosen], np.int64)
    if not chosen:
        return np.zeros((0, size, size, 3), np.uint8), frame_index
    boxes = np.stack([box for _, box in chosen]).astype(np.float32)  # [m, 4]
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2  # [m, 2] (x, y)
    side = (boxes[:, 2:] - boxes[:, :2]).max(axis=1) * (1 + margin)
    scale = size / side
    translation = (side[:, None] / 2 - centre) * scale[:, None]  # maps the square's corner to 0
    crops = _resample_squares(jnp.asarray(frames[frame_index]), jnp.asarray(scale),
                              jnp.asarray(translation[:, ::-1]), size)  # (y, x) order
    return np.asarray(crops), frame_index


# ---- clips -------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ClipFaces:
    """A clip's face crops at 1 fps and what was dropped on the way."""

    crops: np.ndarray  # [m, size, size, 3] uint8, one per frame with a face
    timestamps_s: np.ndarray  # [m] float64, the frames' times
    n_frames_sampled: int
    n_frames_without_face: int
    detections: list[Detections]  # one per sampled frame, for filters such as `meld_sub_keep`


def extract_clip_faces(video_path: str | os.PathLike, detector: FaceDetector, *, fps: float = 1.0, size: int = 224,
                       margin: float = 0.2, select: Selection = "largest") -> ClipFaces:
    """Video → sampled frames → one face crop per frame that has a face; NoFaceError if none has."""
    frames, timestamps = sample_frames(video_path, fps=fps)
    return faces_in_frames(frames, timestamps, detector, size=size, margin=margin, select=select,
                           source=video_path)


def faces_in_frames(frames: np.ndarray, timestamps: np.ndarray, detector: FaceDetector, *, size: int = 224,
                    margin: float = 0.2, select: Selection = "largest",
                    source: str | os.PathLike = "<frames>") -> ClipFaces:
    """frames: [n, h, w, 3] uint8 at their timestamps_s [n] → the faces (NoFaceError naming `source` if none).

    The single face path shared by offline `prepare` (one clip) and online `predict` (a whole recording
    decoded once, its frames then shared out among utterances).
    """
    detections = detector.detect(frames)
    crops, frame_index = crop_faces(frames, detections, size=size, margin=margin, select=select)
    if len(frame_index) == 0:
        raise NoFaceError(source, f"no face in any of the {len(frames)} frames sampled")
    return ClipFaces(crops, timestamps[frame_index], len(frames), len(frames) - len(frame_index), detections)


def meld_sub_keep(detections_per_frame: Sequence[Detections], *, min_prob: float = 0.95, max_faces: int = 1,
                  min_fraction: float = 0.5) -> bool:
    """SPEC §6 MELD-sub: keep a clip when at least `min_fraction` of its sampled frames show at most
    `max_faces` faces of probability ≥ `min_prob` (one person on screen; others unsure or partly seen)."""
    if not detections_per_frame:
        return False
    few_faces = [int(np.sum(d.probs >= min_prob)) <= max_faces for d in detections_per_frame]
    return float(np.mean(few_faces)) >= min_fraction
