"""`emohd bench sweep`: a sweep's trial batch (one program) against the same trials run one after another by `emohd train`.

Both sides are timed in the same run as the commands a user types: one `emohd sweep` process for all the
trials, then one `emohd train` process per trial with the trial's values as overrides (same seeds, same data
order). Each trial's best checkpoint from both is restored and its dev logits compared (fp32). Writes
`<report-dir>/benchmark.json` (both wall times, the speed-up, per-trial metrics and logit differences) and
`benchmark.png`. Default: the 16 MELD text-head configurations over frozen MiniLM features.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import numpy as np

from emohd_jax.errors import CommandLineParser


def _emohd(args: list[str], log: pathlib.Path) -> float:
    """Runs `emohd ARGS` in a fresh process (as a user would); its wall time in seconds."""
    start = time.perf_counter()
    with open(log, "a") as out:
        subprocess.run([sys.executable, "-m", "emohd_jax.cli", *args], check=True, stdout=out, stderr=subprocess.STDOUT)
    return time.perf_counter() - start


def dev_logits(config, checkpoint: str) -> np.ndarray:
    """logits [dev records, classes] of a run's best checkpoint (`trainer.restore_for_eval`), in shard order."""
    import jax
    from flax import nnx

    from data_pipeline import shards
    from emohd_jax import input_pipeline
    from emohd_jax.train import sharding
    from emohd_jax.train.trainer import make_task, restore_for_eval

    config = config.copy_and_resolve_references()
    config.checkpoint = checkpoint
    task = make_task(config)
    mesh = sharding.make_mesh(1)
    model, weights = restore_for_eval(config, task, mesh)
    source = shards.open_split(config.data.shards, config.data.eval_split)
    logits_fn = jax.jit(lambda w, batch: task.logits(nnx.merge(model.graphdef, w["params"], model.rng_state,
                                                               w["other"]), batch, train=False))
    out = []
    for batch in input_pipeline.eval_batches(source, global_batch_size=config.eval.batch_size,
                                             collate_fn=input_pipeline.Collate(task.padded)):
        keep = batch["index"] >= 0
        out.append(np.asarray(logits_fn(weights, {k: batch[k] for k in task.model_fields}))[keep])
    return np.concatenate(out)


def _overrides(params: dict) -> list[str]:
    return [f"--config.{k}={v}" for k, v in params.items()]


def run(config_spec: str, sweep_name: str, workdir: pathlib.Path, report_dir: pathlib.Path,
        overrides: list[str], n_trials: int = 0) -> dict:
    import optuna

    from emohd_jax.measurement import machine_info
    from emohd_jax.run_config import load_config
    from emohd_jax.study.space import load_sweep

    if workdir.exists():
        shutil.rmtree(workdir)  # both sides start from nothing: no resumed checkpoints, no compile cache
    workdir.mkdir(parents=True)
    log = workdir / "bench.log"
    base = ["--config", config_spec, *overrides]
    sweep = load_sweep(sweep_name)
    sweep_s = _emohd(["sweep", *base, "--sweep", sweep_name, "--workdir", str(workdir / "sweep"),
                      "--report-dir", str(report_dir), *(["--trials", str(n_trials)] if n_trials else [])], log)
    study = optuna.load_study(study_name=sweep.name, storage=f"sqlite:///{workdir / 'sweep' / 'study.db'}")
    trials = sorted((t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: t.number)
    sequential_s = 0.0
    for t in trials:
        run_dir = workdir / "sequential" / str(t.number)
        sequential_s += _emohd(["train", *base, *_overrides({**sweep.fixed, **t.params}),
                                f"--config.workdir={run_dir}", f"--config.report_dir={run_dir / 'report'}"], log)
    config = load_config(base)
    rows = []
    for t in trials:
        swept = dev_logits(config, str(workdir / "sweep" / "trials" / str(t.number)))
        alone = dev_logits(config, str(workdir / "sequential" / str(t.number)))
        best_alone = json.loads((workdir / "sequential" / str(t.number) / "checkpoints" / "best" /
                                 "best_metrics.json").read_text())
        rows.append({"trial": t.number, "params": t.params, "sweep_dev": t.user_attrs["dev"],
                     "sequential_dev": best_alone, "max_abs_logit_diff": float(np.abs(swept - alone).max()),
                     "same_predictions": bool((swept.argmax(-1) == alone.argmax(-1)).all())})
    result = {"benchmark": "sweep", "machine": machine_info(), "config": config_spec, "sweep": sweep_name,
              "overrides": overrides, "trials": len(trials), "sweep_wall_s": round(sweep_s, 2),
              "sequential_wall_s": round(sequential_s, 2), "speedup": round(sequential_s / sweep_s, 2),
              "max_abs_logit_diff": max(r["max_abs_logit_diff"] for r in rows),
              "command": f"emohd bench sweep --config {config_spec} --sweep {sweep_name}", "per_trial": rows}
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "benchmark.json").write_text(json.dumps(result, indent=1))
    _plot(result, report_dir / "benchmark.png")
    print(json.dumps({k: v for k, v in result.items() if k not in ("per_trial", "machine")}, indent=1))
    return result


def _plot(result: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    left.bar(["emohd sweep\n(one program)", f"{result['trials']} × emohd train"],
             [result["sweep_wall_s"], result["sequential_wall_s"]], color=["tab:blue", "tab:gray"])
    left.set_ylabel("wall time (s)")
    left.set_title(f"{result['trials']} trials: {result['speedup']}× faster")
    rows = result["per_trial"]
    right.scatter([r["sequential_dev"]["weighted_f1"] for r in rows], [r["sweep_dev"]["weighted_f1"] for r in rows])
    lo = min(r["sweep_dev"]["weighted_f1"] for r in rows) - 1
    hi = max(r["sweep_dev"]["weighted_f1"] for r in rows) + 1
    right.plot([lo, hi], [lo, hi], color="tab:gray", lw=0.8)
    right.set_xlabel("dev weighted F1, emohd train")
    right.set_ylabel("dev weighted F1, in the sweep")
    right.set_title(f"max |Δ logit| {result['max_abs_logit_diff']:.1e}")
    fig.tight_layout()
    fig.savefig(str(path), dpi=110)
    plt.close(fig)


def main(argv: list[str]) -> int:
    parser = CommandLineParser(prog="emohd bench sweep", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="meld_text_head", help="the swept config (its feature shards prepared)")
    parser.add_argument("--sweep", default="meld_text", help="sweeps/<name>.py")
    parser.add_argument("--workdir", default="work/bench_sweep", help="scratch: both sides' runs (emptied first)")
    parser.add_argument("--report-dir", default="", help="default: reports/sweep_<sweep>")
    parser.add_argument("--trials", type=int, default=0, help="fewer trials than the sweep's (a quick check)")
    args, overrides = parser.parse_known_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    run(args.config, args.sweep, pathlib.Path(args.workdir).resolve(),
        pathlib.Path(args.report_dir or f"reports/sweep_{args.sweep}"), overrides, args.trials)
    return 0


def batch_throughput(config_spec: str = "fer_face_head", k_trials: int = 16, steps: int = 50,
                     overrides: tuple[str, ...] = ()) -> dict:
    """Trial-steps/s of one K-trial program against the same K trials stepped one program each, in-process.

    Timing only (what `emohd bench gpu-check` reports on an accelerator): the inputs are a fixed pseudo-random
    batch of the config's feature width, so no shards are needed; compile time is measured apart.
    """
    import jax
    import numpy as np

    from emohd_jax.classes import EMOTIONS
    from emohd_jax.run_config import load_config
    from emohd_jax.study.batch import TrialProgram, TrialValues, trial_mesh
    from emohd_jax.train.trainer import make_task

    config = load_config(["--config", config_spec, *overrides])
    task = make_task(config)
    rng = np.random.default_rng(0)
    bs, dim = config.train.batch_size, config.model.feature_dim
    local = {"features": rng.standard_normal((bs, dim), np.float32),
             "label": rng.integers(0, len(EMOTIONS), bs).astype(np.int32)}
    counts = {name: 1 for name in EMOTIONS}

    def timed(k: int) -> tuple[float, float]:
        configs = [config.copy_and_resolve_references() for _ in range(k)]
        for i, c in enumerate(configs):
            c.seed, c.optim.lr = i, float(config.optim.lr) * (1 + i / k)
        program = TrialProgram(task, config, trial_mesh(k), steps, counts)
        values = TrialValues.of(configs, counts)
        state, model = program.init(values)
        step = program.train_step(state, model, values)
        batch = {key: jax.device_put(v, program.batch_sharding) for key, v in local.items()}
        t0 = time.perf_counter()
        state, metrics = step(state, batch, model)
        jax.block_until_ready(metrics)
        compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(steps):
            state, metrics = step(state, batch, model)
        jax.block_until_ready(metrics)
        return compile_s, time.perf_counter() - t0

    batch_compile, batch_s = timed(k_trials)
    one_compile, one_s = timed(1)
    sequential_s = one_s * k_trials  # K runs of the one-trial program (each run would also compile)
    return {"config": config_spec, "trials": k_trials, "steps": steps, "batch_size": bs, "feature_dim": dim,
            "devices": [d.device_kind for d in jax.devices()],
            "batch_trial_steps_per_s": round(k_trials * steps / batch_s, 1),
            "sequential_trial_steps_per_s": round(k_trials * steps / sequential_s, 1),
            "speedup_steps": round(sequential_s / batch_s, 2),
            "speedup_with_compiles": round((sequential_s + k_trials * one_compile) / (batch_s + batch_compile), 2),
            "compile_s": {"batch": round(batch_compile, 2), "one_trial": round(one_compile, 2)}}
