"""How fast `prepare` turns RAVDESS into VGGish patches: decode + resample, then log-mel, in × real time.

Each stage is timed over the same clips, and the log-mel stage against the NumPy reference
(torchvggish's `waveform_to_examples`, float64) in the same run, which also checks agreement.

    python -m emohd_jax.bench.audio_prepare --root ../shared/data/ravdess --actors 1-20
"""

from __future__ import annotations

import os
import time
from typing import Callable, Iterable, Sequence

import numpy as np
from tqdm import tqdm

from data_pipeline.prepare import parse_actors
from data_pipeline.sources.ravdess import read_ravdess
from emohd_jax.audio.log_mel import VGGISH_LOG_MEL, batch_waveforms_to_patches, waveform_to_patches
from emohd_jax.audio.io import load_audio
from emohd_jax import measurement
from emohd_jax.errors import CommandLineParser

_BATCH = 32


def _timed_pass(items: Sequence, fn: Callable, desc: str) -> tuple[list, float]:
    """Results of fn over items with a progress bar, and the wall seconds it took."""
    start = time.perf_counter()
    results = [fn(item) for item in tqdm(items, desc=desc, unit="clip")]
    return results, time.perf_counter() - start


def _stage(name: str, audio_seconds: float, wall_seconds: float) -> dict:
    return {"stage": name, "wall_s": round(wall_seconds, 3), "x_real_time": round(audio_seconds / wall_seconds, 1)}


def run(root: str | os.PathLike = "../shared/data/ravdess", actors: Iterable[int] = range(1, 21),
        out_dir: str | os.PathLike = "reports/bench", limit: int | None = None) -> dict:
    """Time decode + resample and log-mel over the RAVDESS clips of `actors`; write audio_prepare.json."""
    utterances, _ = read_ravdess(root, actors=actors, split="bench", calm="neutral")
    paths = [u.audio for u in utterances][:limit]
    waves, decode_s = _timed_pass(paths, load_audio, "decode+resample")
    audio_s = sum(w.shape[0] for w in waves) / VGGISH_LOG_MEL.sample_rate

    rate = VGGISH_LOG_MEL.sample_rate
    waveform_to_patches(waves[0], rate)  # compile once outside the timing (one program per patch count)
    _timed_pass(sorted({len(w) // 1000: w for w in waves}.values(), key=len),
                lambda w: waveform_to_patches(w, rate), "compile")
    ours, mel_s = _timed_pass(waves, lambda w: waveform_to_patches(w, rate), "log-mel (jax, per clip)")
    batches = [waves[i:i + _BATCH] for i in range(0, len(waves), _BATCH)]
    _timed_pass(batches, lambda b: batch_waveforms_to_patches(b, rate), "compile batches")
    _, batched_s = _timed_pass(batches, lambda b: batch_waveforms_to_patches(b, rate), f"log-mel (jax, batch {_BATCH})")

    from torchvggish.vggish_input import waveform_to_examples

    reference, reference_s = _timed_pass(
        waves, lambda w: waveform_to_examples(w.astype(np.float64), rate, return_tensor=False),
        "log-mel (torchvggish numpy)")
    diffs = np.concatenate([np.abs(a - b).ravel() for a, b in zip(ours, reference)])

    results = {
        "dataset": str(root), "clips": len(waves), "audio_seconds": round(audio_s, 1),
        "patches": int(sum(p.shape[0] for p in ours)),
        "stages": [_stage("decode+resample (soundfile/PyAV + soxr)", audio_s, decode_s),
                   _stage("log-mel jax per clip", audio_s, mel_s),
                   _stage(f"log-mel jax batch {_BATCH}", audio_s, batched_s),
                   _stage("log-mel torchvggish numpy (reference)", audio_s, reference_s)],
        "end_to_end": _stage("decode+resample+log-mel (jax per clip)", audio_s, decode_s + mel_s),
        "end_to_end_reference": _stage("decode+resample+log-mel (torchvggish numpy)", audio_s, decode_s + reference_s),
        # float32 FFT vs float64: the error grows where a band is weak next to a loud one in the same frame
        "max_abs_diff_vs_reference": float(diffs.max()),
        "fraction_of_values_over_1e-4": float((diffs > 1e-4).mean()),
    }
    measurement.save("audio_prepare", results, out_dir)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = CommandLineParser(prog="emohd bench audio", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="../shared/data/ravdess")
    parser.add_argument("--actors", default="1-20", type=parse_actors)
    parser.add_argument("--limit", type=int, default=None, help="only the first N clips")
    parser.add_argument("--out-dir", default="reports/bench")
    args = parser.parse_args(argv)
    run(args.root, args.actors, args.out_dir, args.limit)


if __name__ == "__main__":
    main()
