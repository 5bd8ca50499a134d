"""Face extraction speed (decode → detect → crop) in clip-seconds per second, against facenet-pytorch.

    python -m emohd_jax.bench.faces [--data ../shared/data] [--repeats 3]   → reports/bench/faces.json

Runs over the CREMA-D .flv samples. facenet-pytorch's `detect_face` is timed in the same run on the
same frames when it imports; without torchvision its `batched_nms` is a plain-torch stand-in, whose
own time is measured and reported apart so the comparison stays fair.
"""

from __future__ import annotations

import os
import pathlib
import time

import av
import numpy as np

from emohd_jax import measurement
from emohd_jax.vision.faces import MTCNNDetector, crop_faces
from emohd_jax.vision.video_io import sample_frames
from emohd_jax.errors import CommandLineParser

DEFAULT_DATA = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _seconds(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _facenet_detect_timer(frames_per_clip: list[np.ndarray], repeats: int) -> dict:
    """facenet-pytorch detect_face seconds per pass over the clips, and the NMS share of it."""
    try:
        import torch

        from emohd_jax.convert.mtcnn import import_facenet_reference

        facenet_mtcnn, facenet_detect, nms = import_facenet_reference()
    except ImportError as err:
        return {"available": False, "why_not": f"{type(err).__name__}: {err}"}
    torch.set_num_threads(os.cpu_count() or 1)
    nets = [facenet_mtcnn.PNet().eval(), facenet_mtcnn.RNet().eval(), facenet_mtcnn.ONet().eval()]
    nms_seconds = [0.0]
    real_nms = facenet_detect.batched_nms

    def timed_nms(*args):
        seconds, keep = _seconds(lambda: real_nms(*args))
        nms_seconds[0] += seconds
        return keep

    facenet_detect.batched_nms = timed_nms
    passes = []
    try:
        with torch.no_grad():
            for _ in range(repeats + 1):  # the first pass warms up
                nms_seconds[0] = 0.0
                seconds, _ = _seconds(lambda: [facenet_detect.detect_face(f, 20, *nets, [0.6, 0.7, 0.7], 0.709, "cpu")
                                               for f in frames_per_clip])
                passes.append((seconds, nms_seconds[0]))
    finally:
        facenet_detect.batched_nms = real_nms
    total, nms_share = sorted(passes[1:])[len(passes[1:]) // 2]
    return {"available": True, "nms": nms, "detect_s": total, "of_which_nms_s": nms_share,
            "torch_threads": torch.get_num_threads()}


def run(data: pathlib.Path, repeats: int) -> dict:
    clips = sorted((data / "cremad").glob("*.flv"))
    if not clips:
        raise FileNotFoundError(f"no CREMA-D .flv clips under {data / 'cremad'}")
    clip_seconds = 0.0
    for clip in clips:
        with av.open(str(clip)) as container:
            clip_seconds += container.duration / 1e6
    detector = MTCNNDetector()
    stages = {"decode": [], "detect": [], "crop": []}
    batched = []
    for _ in range(repeats + 1):  # the first pass compiles
        times = dict.fromkeys(stages, 0.0)
        frames_per_clip = []
        for clip in clips:
            seconds, (frames, _) = _seconds(lambda: sample_frames(clip))
            times["decode"] += seconds
            seconds, detections = _seconds(lambda: detector.detect(frames))
            times["detect"] += seconds
            times["crop"] += _seconds(lambda: crop_faces(frames, detections, size=224))[0]
            frames_per_clip.append(frames)
        for stage, seconds in times.items():
            stages[stage].append(seconds)
        all_frames = np.concatenate(frames_per_clip)  # how prepare batches frames of many clips of one size
        batched.append(_seconds(lambda: detector.detect(all_frames))[0])
    median = {stage: float(np.median(seconds[1:])) for stage, seconds in stages.items()}
    total = sum(median.values())
    n_frames = sum(len(f) for f in frames_per_clip)
    facenet = _facenet_detect_timer(frames_per_clip, repeats)
    if facenet["available"]:
        facenet["detect_clip_seconds_per_s"] = clip_seconds / facenet["detect_s"]
        facenet["detect_without_nms_clip_seconds_per_s"] = clip_seconds / (facenet["detect_s"] - facenet["of_which_nms_s"])
    return {
        "what": "CREMA-D .flv clips (480x360, 29.97 fps) → 1 fps frames → JAX MTCNN → 224x224 largest-face crops",
        "clips": [c.name for c in clips],
        "clip_seconds": clip_seconds,
        "frames_sampled": n_frames,
        "repeats": repeats,
        "load_average_1m": os.getloadavg()[0],
        "seconds_per_pass": median,
        "clip_seconds_per_s": {"end_to_end": clip_seconds / total,
                               **{stage: clip_seconds / s for stage, s in median.items()}},
        "detect_all_clips_in_one_batch": {"seconds": float(np.median(batched[1:])),
                                          "clip_seconds_per_s": clip_seconds / float(np.median(batched[1:]))},
        "facenet_pytorch_detect_face": facenet,
    }


def main(argv: list[str] | None = None) -> None:
    parser = CommandLineParser(prog="emohd bench faces", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=pathlib.Path, default=DEFAULT_DATA)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    measurement.save("faces", run(args.data, args.repeats))


if __name__ == "__main__":
    main()
