"""`emohd bench predict`: media seconds processed per second by `emohd predict`, end to end and per stage.

    emohd bench predict [--data ../shared/data] [--minutes 2.5]   → reports/bench/predict.json + predict.png

Two inputs sets: the CREMA-D clips (short: one utterance each), and a recording of `--minutes` joined from
the CREMA-D video clips (`bench predict-memory` builds it the same way). Models are loaded and compiled on a
first clip that is not counted; each set then runs through one `Predictor`, whose stage clock says where the
time goes (decode, faces, towers, log-mel, ASR, fusion). Real time (1 media second per second) is the line
to beat; the aim is 3× on 2 cores.

Start: `emohd predict <first video clip> --out <new folder>` as a user runs it, each in a fresh process,
timed from launch to exit (its one result written): cold (an empty cache), warm (the same command again
with the compiled and traced programs the cold run kept, `emohd_jax.exported`; the median of five: the aim is
≤ 5 s) and with
`--no-cache`; then the rerun with nothing left to do (the result is in --out: no model is loaded).
"""

from __future__ import annotations

import os
import pathlib
import time

from emohd_jax.errors import CommandLineParser
from emohd_jax.run_config import default_data_root


def measure(predictor, paths: list[pathlib.Path]) -> dict:
    predictor.clock.reset()
    start, media_s, utterances = time.perf_counter(), 0.0, 0
    for path in paths:
        prediction = predictor.predict_file(path)
        media_s += prediction.duration_s
        utterances += prediction.num_utterances
    wall = time.perf_counter() - start
    stages = predictor.clock.seconds
    other = wall - sum(stages.values())
    return {"inputs": len(paths), "media_seconds": round(media_s, 2), "utterances": utterances,
            "wall_seconds": round(wall, 2), "media_seconds_per_second": media_s / wall,
            "stage_seconds": {**{k: round(v, 3) for k, v in stages.items()}, "other": round(other, 3)},
            "stage_media_seconds_per_second": {k: (media_s / v if v > 0 else None) for k, v in stages.items()}}


def start_times(clip: pathlib.Path, work: pathlib.Path, repeats: int = 5) -> dict:
    """Seconds from launching `emohd predict clip` to its exit, in fresh processes (see the module docstring);
    the warm start is the median of `repeats` launches."""
    import shutil
    import statistics
    import subprocess
    import sys

    cache_home = work / "start_cache"
    shutil.rmtree(cache_home, ignore_errors=True)
    env = {**os.environ, "XDG_CACHE_HOME": str(cache_home)}

    def launch(out: str, *flags: str) -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "emohd_jax.cli", "predict", str(clip), "--out", str(work / out),
                        "--quiet", *flags], env=env, check=True, stdout=subprocess.DEVNULL)
        return round(time.perf_counter() - start, 2)

    def fresh_launch(out: str, *flags: str) -> float:
        shutil.rmtree(work / out, ignore_errors=True)
        return launch(out, *flags)

    cold = fresh_launch("start_cold")
    warm = [fresh_launch("start_warm") for _ in range(repeats)]  # the median: one launch varies by ±0.5 s here
    return {"input": clip.name, "cold_s": cold, "warm_s": statistics.median(warm), "warm_runs_s": warm,
            "no_cache_s": fresh_launch("start_nocache", "--no-cache"), "nothing_to_do_s": launch("start_warm"),
            "aim_warm_s": 5.0}


def run(data_root: pathlib.Path, minutes: float, work: pathlib.Path, out_dir: pathlib.Path) -> dict:
    from emohd_jax.bench.predict_memory import build_recording
    from emohd_jax.measurement import save
    from emohd_jax.serve.predictor import Predictor

    clips = sorted(p for p in (data_root / "cremad").iterdir() if p.suffix in (".flv", ".mp3", ".wav", ".mp4"))
    work.mkdir(parents=True, exist_ok=True)
    recording = work / f"recording_{minutes:g}min.mp4"
    if not recording.is_file():
        build_recording(data_root, minutes, recording)
    start = start_times(next(p for p in clips if p.suffix in (".flv", ".mp4")), work)
    predictor = Predictor()
    warm_start = time.perf_counter()
    predictor.predict_file(clips[0])  # load Whisper, compile the towers' first buckets: not counted
    warm_up_s = time.perf_counter() - warm_start
    sets = {"cremad_clips": measure(predictor, clips), f"joined_{minutes:g}min": measure(predictor, [recording])}
    results = {"what": __doc__.splitlines()[0], "load_average_1m": os.getloadavg()[0],
               "warm_up_seconds": round(warm_up_s, 2), "reference": "real time = 1.0 media second per second",
               "start": start, "sets": sets}
    save("predict", results, out_dir)
    _plot(sets, out_dir / "predict.png")
    return results


def _plot(sets: dict, path: pathlib.Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4))
    FigureCanvasAgg(figure)
    share, speed = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    names = list(sets)
    bottom = [0.0] * len(names)
    for stage in next(iter(sets.values()))["stage_seconds"]:
        values = [sets[n]["stage_seconds"][stage] / sets[n]["media_seconds"] for n in names]
        share.bar(names, values, bottom=bottom, label=stage)
        bottom = [b + v for b, v in zip(bottom, values)]
    share.set(ylabel="seconds of work per media second", title="Where predict spends its time")
    share.legend(fontsize=7)
    speed.bar(names, [sets[n]["media_seconds_per_second"] for n in names], color="tab:green")
    speed.axhline(1.0, color="black", linestyle="--", label="real time")
    speed.axhline(3.0, color="tab:red", linestyle=":", label="aim: 3× real time")
    speed.set(ylabel="media seconds per second", title="End to end")
    speed.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> None:
    parser = CommandLineParser(prog="emohd bench predict", description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(default_data_root()), help="data root holding cremad/")
    parser.add_argument("--minutes", type=float, default=2.5, help="length of the joined recording")
    parser.add_argument("--work", default="work/bench_recordings")
    parser.add_argument("--out-dir", default="reports/bench")
    args = parser.parse_args(argv)
    run(pathlib.Path(args.data), args.minutes, pathlib.Path(args.work), pathlib.Path(args.out_dir))


if __name__ == "__main__":
    main()
