"""`emohd bench gpu-check --out DIR`: every accelerator measurement in one call (fused inference, training).

On a lent GPU (the `device` tool's H200) this is the one prepared command: `emohd bench fused` (both model
sets, fp32 and bf16, batches 1 to 256 utterances, PyTorch eager/compile/bf16 autocast beside it) and
`emohd bench train` (ResNet50 stage 1, mini-Xception, the text tower; fp32 and bf16 where the tower computes
in it), a sweep's trial batch (16 face-head trials as one program against one program per trial, trial-steps/s), with `--budget-s` (default 420 s) checked between parts so the call ends well inside the 8-minute aim.
JSON (+ PNG) land in DIR. `--small` is the CPU dry run: toy widths, batch 1, eager PyTorch only — it proves
the script end to end in about two minutes (a test runs it).
"""

from __future__ import annotations

import json
import pathlib
import time

import jax

from emohd_jax.errors import CommandLineParser


def run(out_dir: pathlib.Path, *, small: bool, budget_s: float, workdir: pathlib.Path) -> dict:
    from emohd_jax.bench import fused, train

    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    accelerator = jax.default_backend() != "cpu"
    done = {"backend": jax.default_backend(), "devices": [d.device_kind for d in jax.devices()], "parts": {}}
    batches = [1] if small else ([1, 4, 16, 64, 128, 256] if accelerator else [1, 2, 4])
    dtypes = ["float32"] if small else ["float32", "bfloat16"]
    modes = ("eager",) if small else ("eager", "compile")
    fused.run(["paper", "bundle"], batches, dtypes, repeats=2 if small else 5, small=small, torch_ref=True,
              workdir=workdir, out_dir=out_dir, torch_modes=modes, tower_times=not accelerator)
    done["parts"]["fused"] = round(time.perf_counter() - start, 1)
    if time.perf_counter() - start < budget_s:
        towers = ["mini_xception", "text"] if small else ["resnet50", "mini_xception", "text"]
        train.run(towers, 2 if small else (128 if accelerator else 32), 1 if small else 5, 64, dtypes, out_dir,
                  torch_modes=modes)
        done["parts"]["train"] = round(time.perf_counter() - start, 1)
    else:
        done["parts"]["train"] = f"skipped: the budget of {budget_s:.0f} s was spent by the fused benchmark"
    if time.perf_counter() - start < budget_s:  # a sweep's trial batch (one program) against trials one by one
        from emohd_jax.bench.sweep import batch_throughput

        done["sweep"] = batch_throughput(k_trials=2 if small else 16, steps=3 if small else 100,
                                         overrides=("--config.model.feature_dim=64", "--config.train.batch_size=8")
                                         if small else ())
        (out_dir / "sweep_batch.json").write_text(json.dumps(done["sweep"], indent=1))
        done["parts"]["sweep"] = round(time.perf_counter() - start, 1)
    (out_dir / "gpu_check.json").write_text(json.dumps(done, indent=1))
    print(json.dumps(done, indent=1))
    return done


def main(argv: list[str] | None = None) -> None:
    parser = CommandLineParser(prog="emohd bench gpu-check", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="where the JSON and PNG files go ($OUT on the device machine)")
    parser.add_argument("--small", action="store_true", help="CPU dry run at toy sizes")
    parser.add_argument("--budget-s", type=float, default=420.0, help="start no new part after this many seconds")
    parser.add_argument("--workdir", default="work/bench")
    args = parser.parse_args(argv)
    run(pathlib.Path(args.out), small=args.small, budget_s=args.budget_s, workdir=pathlib.Path(args.workdir))


if __name__ == "__main__":
    main()
