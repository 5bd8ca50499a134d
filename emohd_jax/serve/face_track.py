"""The face modality of `predict`: every sampled frame of a video through the detector and the face tower,
streamed in chunks (a few numbers per frame are kept, never the frames), then each utterance's faces decided."""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from emohd_jax.bundle import LoadedTower
from emohd_jax.classes import EMOTIONS
from emohd_jax.clip_decision import clip_probabilities
from emohd_jax.errors import BadInputError
from emohd_jax.serve.clock import StageClock
from emohd_jax.serve.plan import Plan, run_tower
from emohd_jax.vision.extract import VideoFaceExtractor


@dataclasses.dataclass
class FaceTrack:
    frame_times: np.ndarray        # [frames] s, every sampled frame
    frame_face_probs: list[np.ndarray]  # [frames] each [faces]: the detector's probability of each face
    face_times: np.ndarray         # [faces] s, the frames with a face
    face_probs: np.ndarray         # [faces, class]: the face tower on the chosen face of each
    reason: str | None             # why the video is unusable (decoding stopped), None when it decoded
    duration_s: float


def track_faces(path: pathlib.Path, faces: VideoFaceExtractor, tower: LoadedTower, clock: StageClock, *,
                frame_chunk: int = 16) -> FaceTrack:
    """The face tower over the whole video, `frame_chunk` sampled frames at a time (bounded memory)."""
    from emohd_jax.vision.video_io import iter_sampled_frames

    stamps: list[float] = []
    chunk: list[np.ndarray] = []
    detected: list[np.ndarray] = []
    face_times: list[np.ndarray] = []
    face_probs: list[np.ndarray] = []

    def flush() -> None:
        frames, times = np.stack(chunk), np.asarray(stamps[-len(chunk):])
        try:
            with clock("faces"):
                crops, crop_times, detections = faces.faces_in_frames(frames, times, source=path)
        except BadInputError:  # no face in this chunk
            crops, crop_times, detections = np.zeros((0,)), np.zeros(0), None
        # Every detected face's probability per sampled frame: what the MELD-sub filter (SPEC §6) reads.
        if detections is None:
            detected.extend(np.zeros(0, np.float32) for _ in times)
        else:
            detected.extend(np.asarray(d.probs, np.float32) for d in detections)
        if len(crops):
            face_times.append(crop_times)
            with clock("visual_tower"):
                face_probs.append(run_tower(tower, {"face": crops}))
        chunk.clear()

    reason = None
    try:
        for frame, t in clock.iterate("decode_video", iter_sampled_frames(path, fps=faces.fps)):
            chunk.append(frame)
            stamps.append(t)
            if len(chunk) == frame_chunk:
                flush()
    except BadInputError as error:  # unusable video; frames decoded before a late failure are kept
        reason = error.reason
    if chunk:
        flush()
    frame_times = np.asarray(stamps, np.float64)
    return FaceTrack(frame_times, detected,
                     np.concatenate(face_times) if face_times else np.zeros(0),
                     np.concatenate(face_probs) if face_probs else np.zeros((0, len(EMOTIONS)), np.float32),
                     reason, float(frame_times[-1]) + 0.5 / faces.fps if stamps else 0.0)


def decide_faces(plan: Plan, track: FaceTrack) -> None:
    """Each utterance's face: the majority vote of the faces in its span (SPEC §2.5), or why there is none."""
    plan.frame_times, plan.frame_face_probs = track.frame_times, track.frame_face_probs
    plan.face_times, plan.face_probs = track.face_times, track.face_probs
    if not len(track.frame_times):
        for i in range(len(plan.spans)):
            plan.miss("visual", i, track.reason or "no video frame decoded")
        return
    for i, span in enumerate(plan.spans):
        inside = (track.face_times >= span.start_s) & (track.face_times < span.end_s)
        sampled = int(np.sum((track.frame_times >= span.start_s) & (track.frame_times < span.end_s)))
        if not inside.any():
            plan.miss("visual", i, f"no face in the {sampled} frame(s) sampled" if sampled else "no frame sampled")
            continue
        decided, mean = clip_probabilities(track.face_probs[inside], "vote")
        plan.put("visual", i, mean, decision=decided, count=int(inside.sum()))
