"""Peak memory of `emohd predict` on long recordings: flat in the recording's length (streamed decoding).

    emohd bench predict-memory [--minutes 2,10,60] [--data ../shared/data]   → reports/bench/predict_memory.json + .png

Each recording is built from the real CREMA-D video clips (face, voice and words), joined with short pauses
until it is long enough, and predicted in a fresh process whose peak resident memory (ru_maxrss) and RSS over
time are recorded. The reference, measured in the same run on the same files, is what holding the whole
recording decoded costs (16 kHz audio + the 1 fps frames, as a non-streaming predict would): it grows with
the length, the streamed predict should not.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import threading
import time

import numpy as np

from emohd_jax.errors import CommandLineParser
from emohd_jax.run_config import default_data_root

VIDEO_FPS = 10  # the recording's frame rate (predict samples 1 fps of it)
CLIPS = ("1001_DFA_ANG_XX.flv", "1001_DFA_HAP_XX.flv", "1001_DFA_NEU_XX.flv")


def build_recording(data_root: pathlib.Path, minutes: float, out: pathlib.Path) -> pathlib.Path:
    """An mp4 of `minutes` made of the CREMA-D clips in turn, 1.5 s of pause (still frame, silence) between."""
    import av

    from emohd_jax.audio.io import load_audio
    from emohd_jax.vision.video_io import sample_frames

    pieces = []
    for name in CLIPS:
        frames, _ = sample_frames(data_root / "cremad" / name, fps=VIDEO_FPS)
        wave = load_audio(data_root / "cremad" / name)
        pause_frames = np.repeat(frames[-1:], int(1.5 * VIDEO_FPS), axis=0)
        pieces.append((np.concatenate([frames, pause_frames]),
                       np.concatenate([wave, np.zeros(int(1.5 * 16000), np.float32)])))
    total_frames = int(minutes * 60 * VIDEO_FPS)
    height, width = pieces[0][0].shape[1:3]
    with av.open(str(out), "w") as container:
        video = container.add_stream("mpeg4", rate=VIDEO_FPS)
        video.width, video.height, video.pix_fmt, video.bit_rate = width, height, "yuv420p", 800_000
        sound = container.add_stream("aac", rate=16000)
        written = k = 0
        while written < total_frames:
            frames, wave = pieces[k % len(pieces)]
            frames = frames[: total_frames - written]
            wave = wave[: int(len(frames) / VIDEO_FPS * 16000)]
            for frame in frames:
                container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            samples = (np.clip(wave, -1, 1) * 32767).astype(np.int16)[None]
            for start in range(0, samples.shape[1], 1024):
                chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, start:start + 1024]),
                                                   format="s16", layout="mono")
                chunk.sample_rate = 16000
                container.mux(sound.encode(chunk))
            written += len(frames)
            k += 1
        container.mux(video.encode())
        container.mux(sound.encode())
    return out


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _child(mode: str, path: str) -> None:
    """In a fresh process: predict `path` (or decode it whole), print peak RSS and RSS over time as JSON."""
    import resource

    samples, done = [], threading.Event()
    start = time.perf_counter()

    def watch() -> None:
        while not done.wait(1.0):
            samples.append((round(time.perf_counter() - start, 1), round(_rss_mb(), 1)))

    threading.Thread(target=watch, daemon=True).start()
    info = {}
    if mode == "predict":
        from emohd_jax.serve.batch import predict

        run = predict([path], progress=False)
        result = run.results[0]
        info = {"utterances": len(result["utterances"]), "duration_s": result["duration_s"],
                "faces": len(result["per_second"]), "patches": len(result["per_patch"]),
                "spoken": sum(u["transcript"] is not None for u in result["utterances"])}
    else:
        from emohd_jax.audio.io import load_audio
        from emohd_jax.vision.video_io import sample_frames

        wave, (frames, _) = load_audio(path), sample_frames(path)
        info = {"wave_mb": round(wave.nbytes / 2**20, 1), "frames_mb": round(frames.nbytes / 2**20, 1)}
    done.set()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(json.dumps({"peak_rss_mb": round(peak_mb, 1), "wall_s": round(time.perf_counter() - start, 1),
                      "rss_mb_over_time": samples, **info}))


def _measure(mode: str, path: pathlib.Path) -> dict:
    done = subprocess.run([sys.executable, "-m", "emohd_jax.bench.predict_memory", "--child", mode, str(path)],
                          capture_output=True, text=True, check=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(data_root: pathlib.Path, minutes: list[float], work: pathlib.Path, out_dir: pathlib.Path) -> dict:
    from tqdm import tqdm

    from emohd_jax.measurement import save

    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for length in tqdm(minutes, desc="bench predict-memory", unit="recording"):
        path = work / f"recording_{length:g}min.mp4"
        if not path.is_file():
            build_recording(data_root, length, path)
        rows.append({"minutes": length, "file_mb": round(path.stat().st_size / 2**20, 1),
                     "predict": _measure("predict", path), "reference_whole_decode": _measure("decode", path)})
        print(json.dumps({k: rows[-1][k] for k in ("minutes", "file_mb")} |
                         {"predict_peak_rss_mb": rows[-1]["predict"]["peak_rss_mb"],
                          "whole_decode_peak_rss_mb": rows[-1]["reference_whole_decode"]["peak_rss_mb"]}))
    results = {"what": "peak resident memory of `emohd predict` (shipped bundle, a fresh process per recording) "
                       "on recordings joined from the CREMA-D video clips; reference: decoding the whole recording "
                       "at once (16 kHz audio + 1 fps frames), what a non-streaming predict holds",
               "load_average_1m": os.getloadavg()[0], "recordings": rows}
    save("predict_memory", results, out_dir)
    _plot(rows, out_dir / "predict_memory.png")
    return results


def _plot(rows: list[dict], path: pathlib.Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4))
    FigureCanvasAgg(figure)
    peaks, timeline = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    minutes = [r["minutes"] for r in rows]
    peaks.plot(minutes, [r["predict"]["peak_rss_mb"] for r in rows], "o-", label="emohd predict (streamed)")
    peaks.plot(minutes, [r["reference_whole_decode"]["peak_rss_mb"] for r in rows], "s--",
               label="reference: whole recording decoded")
    peaks.set(xlabel="recording length (minutes)", ylabel="peak RSS (MiB)", title="Peak memory")
    peaks.legend()
    for r in rows:
        t, rss = zip(*r["predict"]["rss_mb_over_time"]) if r["predict"]["rss_mb_over_time"] else ((), ())
        timeline.plot(t, rss, label=f"{r['minutes']:g} min")
    timeline.set(xlabel="seconds into the run", ylabel="RSS (MiB)", title="emohd predict: RSS over the run")
    timeline.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> None:
    parser = CommandLineParser(prog="emohd bench predict-memory", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", default="2,10,60", help="recording lengths, comma-separated")
    parser.add_argument("--data", default=str(default_data_root()),
                        help="data root holding cremad/ (default: $EMOHD_DATA, else %(default)s)")
    parser.add_argument("--work", default="work/bench_recordings", help="where the built recordings are kept")
    parser.add_argument("--out-dir", default="reports/bench")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(*args.child)
        return
    run(pathlib.Path(args.data), [float(m) for m in args.minutes.split(",")], pathlib.Path(args.work),
        pathlib.Path(args.out_dir))


if __name__ == "__main__":
    main()
