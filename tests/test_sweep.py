"""Sweeps (emohd_jax.study): a trial batch trained as one vmapped program equals the trials run one by one (its
steps bitwise), on 8 devices too; a study killed with SIGKILL resumes to the same results; two workers share one
study.

Data: the first rows of the shipped MELD sample through the real MiniLM (frozen features, prepared once).
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.data_paths import REPO
from tests.train_harness import emohd, make_tiny_setup

pytest.importorskip("optuna")

SWEEP = """
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from emohd_jax.study.space import Sweep


def get_sweep():
    space = {{"optim.lr": FloatDistribution(3e-4, 3e-3, log=True), "model.head_dropout": FloatDistribution(0.0, 0.5),
             "train.label_smoothing": FloatDistribution(0.0, 0.2),
             "train.class_weights": CategoricalDistribution(["none", "sqrt"]), "seed": IntDistribution(0, 3)}}
    return Sweep(name="tiny", space=space, sampler="random", n_trials={n_trials}, batch_trials={batch}, prune=False)
"""


def settings(root, **overrides) -> list[str]:
    values = {"data.root": root, "data.shards": root / "shards", "train.batch_size": 16, "train.num_steps": 24,
              "train.eval_every": 8, "train.checkpoint_every": 4, "train.log_every": 4, "eval.batch_size": 16,
              "optim.warmup_steps": 4, "model.head_hidden": 32, **overrides}
    return ["--config", str(REPO / "configs" / "meld_text_head.py"), *(f"--config.{k}={v}" for k, v in values.items())]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """MELD sample rows → MiniLM mean-pooled features, through `emohd prepare` (the real encoder, once)."""
    root = make_tiny_setup(tmp_path_factory.mktemp("sweep"), n_train=96, n_dev=32)
    proc = emohd(["prepare", *settings(root)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out.decode()[-3000:]
    return root


def sweep_file(root, n_trials: int, batch: int):
    path = root / f"tiny_{n_trials}_{batch}.py"
    path.write_text(SWEEP.format(n_trials=n_trials, batch=batch))
    return path


def study_rows(workdir) -> list[dict]:
    import optuna

    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{workdir / 'study.db'}")
    return [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
             "history": t.user_attrs.get("history"), "owner": t.user_attrs.get("owner")}
            for t in sorted(study.trials, key=lambda t: t.number)]


def run_sweep(root, workdir, sweep, *extra, env=None):
    """`emohd sweep` in its own process, its output in a log file (a pipe left unread could stall it)."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = open(workdir.parent / f"{workdir.name}.{time.monotonic_ns()}.log", "wb")
    proc = emohd(["sweep", *settings(root), "--sweep", str(sweep), "--workdir", str(workdir),
                  "--report-dir", str(workdir / "report"), *extra], env=env, stdout=log, stderr=subprocess.STDOUT)
    proc.log = log.name
    return proc


def finish(proc, timeout: int = 600) -> None:
    proc.wait(timeout=timeout)
    assert proc.returncode == 0, open(proc.log, errors="replace").read()[-3000:]


@pytest.mark.slow
def test_eight_trials_on_eight_devices_equal_sequential_runs(root):
    """8 trials sharded one per device (forced CPU devices) = each trial trained alone by the trainer (≤ 1e-5)."""
    sweep = sweep_file(root, 8, 8)
    script = textwrap.dedent(f"""
        import json, numpy as np, optuna
        from emohd_jax.bench.sweep import dev_logits
        from emohd_jax.run_config import load_config
        from emohd_jax.study.driver import sweep
        from emohd_jax.study.space import load_sweep, trial_config
        from emohd_jax.train.trainer import train_and_evaluate
        config = load_config({settings(root)!r})
        spec = load_sweep({str(sweep)!r})
        study = sweep(config, spec, workdir={str(root / 'eight')!r}, report_dir={str(root / 'eight_report')!r})
        import jax
        out = {{"devices": jax.device_count(), "trials": []}}
        for t in sorted(study.trials, key=lambda t: t.number):
            alone = trial_config(config, spec, t.params)
            alone.workdir = {str(root / 'alone')!r} + f"/{{t.number}}"
            history = train_and_evaluate(alone)["history"]
            diff = np.abs(dev_logits(config, {str(root / 'eight' / 'trials')!r} + f"/{{t.number}}")
                          - dev_logits(config, alone.workdir)).max()
            out["trials"].append({{"diff": float(diff), "sweep": t.user_attrs["history"], "alone": history}})
        print("RESULT" + json.dumps(out))
    """)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT")[-1])
    assert result["devices"] == 8
    assert len(result["trials"]) == 8
    for trial in result["trials"]:
        assert trial["diff"] <= 1e-5
        for swept, alone in zip(trial["sweep"], trial["alone"], strict=True):
            assert swept["step"] == alone["step"]
            assert swept["weighted_f1"] == pytest.approx(alone["weighted_f1"], abs=1e-6)


@pytest.fixture(scope="module")
def straight(root):
    """An uninterrupted 4-trial sweep in batches of 2 (long enough for the SIGKILL test to hit the second batch)."""
    workdir = root / "straight"
    finish(run_sweep(root, workdir, sweep_file(root, 4, 2), *LONG))
    return workdir


# 200 steps with a checkpoint every 4: the second batch runs long enough to be killed mid-way.
LONG = ("--config.train.num_steps=200", "--config.train.eval_every=100")


@pytest.mark.slow
def test_sigkill_mid_sweep_then_rerun_gives_the_uninterrupted_results(root, straight):
    sweep = sweep_file(root, 4, 2)
    killed = root / "killed"
    proc = run_sweep(root, killed, sweep, *LONG)
    # Kill once the second batch has a checkpoint mid-way (the first batch done, trials 2-3 running).
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        steps = [int(p.name) for p in (killed / "batches").glob("2-*/checkpoints/latest/*") if p.name.isdigit()]
        if steps and max(steps) >= 40:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert any(r["state"] == "RUNNING" for r in study_rows(killed))

    finish(run_sweep(root, killed, sweep, *LONG))
    a, b = study_rows(straight), study_rows(killed)
    assert [r["state"] for r in b] == ["COMPLETE"] * 4
    for x, y in zip(a, b, strict=True):
        assert x["params"] == y["params"]
        assert x["value"] == pytest.approx(y["value"], abs=1e-9)
        assert [h["weighted_f1"] for h in x["history"]] == pytest.approx([h["weighted_f1"] for h in y["history"]])
    assert (killed / "report" / "trials.md").exists() and (killed / "report" / "best_config.py").exists()


@pytest.mark.slow
def test_two_workers_share_one_study(root):
    """Two processes on one sqlite study: disjoint trials, every trial finished once, both did work."""
    sweep = sweep_file(root, 4, 1)
    workdir = root / "shared"
    workers = [run_sweep(root, workdir, sweep) for _ in range(2)]
    for w in workers:
        finish(w)
    rows = study_rows(workdir)
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    assert len(complete) == 4
    owners = {r["owner"] for r in complete}
    assert owners == {f"{os.uname().nodename}:{w.pid}" for w in workers}
    trial_dirs = sorted(p.name for p in (workdir / "trials").iterdir())
    assert trial_dirs == sorted(str(r["number"]) for r in complete)


@pytest.mark.slow
def test_best_trial_config_trains_as_is_to_the_trials_result(root, straight):
    """The report's best_config.py, given to `emohd train --config` unchanged, retrains the best trial exactly."""
    report = straight / "report"
    table = json.loads((report / "trials.json").read_text())
    assert table["trials"][0]["trial"] == table["best_trial"]  # sorted by dev weighted F1, the selected metric
    assert (report / "metric_vs_params.png").stat().st_size > 0 and (report / "trials.md").exists()
    assert len(list((report / "tensorboard").iterdir())) == 4
    proc = emohd(["train", "--config", str(report / "best_config.py")], env={"EMOHD_HOME": str(root)},
                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out.decode()[-3000:]
    retrained = json.loads((root / "work" / "runs" / "sweep_tiny_best" / "checkpoints" / "best" /
                            "best_metrics.json").read_text())
    assert retrained["step"] == table["best_dev"]["step"]
    assert retrained["weighted_f1"] == pytest.approx(table["best_dev"]["weighted_f1"], abs=1e-6)


def test_trial_batch_steps_equal_the_trainers_steps_bitwise(root):
    """Each trial of a vmapped batch takes the very steps `emohd train`'s jitted step takes: params bitwise equal.

    The trials differ in dropout, learning rate, class weights and label smoothing, and the gradients are clipped:
    before, XLA:CPU compiled the batch's divisions by a per-trial scalar (dropout, clipping, Adam's bias
    corrections) as multiplies by the reciprocal, the shared data into other matmuls, and the constant label
    smoothing and the gradient norms' sums into other kernels, so every trial drifted by ulps from its first step
    (and by 2e-2 on the logits after 936 steps of the MELD sweep).
    """
    import json

    import jax
    import numpy as np

    from data_pipeline import shards
    from emohd_jax import input_pipeline
    from emohd_jax.run_config import load_config
    from emohd_jax.study.batch import TrialProgram, TrialValues, trial_mesh
    from emohd_jax.train import sharding
    from emohd_jax.train.trainer import class_weights, create_train_state, make_task, make_train_step, shuffle_seed

    base = load_config(settings(root))
    trials = [{"optim.lr": 2e-3, "model.head_dropout": 0.3, "train.label_smoothing": 0.0,
               "train.class_weights": "sqrt"},
              {"optim.lr": 5e-4, "model.head_dropout": 0.1, "train.label_smoothing": 0.1,
               "train.class_weights": "none"},
              {"optim.lr": 1e-3, "model.head_dropout": 0.2, "train.label_smoothing": 0.05,
               "train.class_weights": "balanced", "seed": 3}]
    configs = []
    for values in trials:
        config = load_config(settings(root, **values))
        config.workdir = str(root / "unused")
        configs.append(config)
    counts = json.loads((root / "shards" / "manifest.json").read_text())["counts"]["train"]["records_per_class"]
    source = shards.open_split(base.data.shards, base.data.train_split)
    task = make_task(base)
    loader = input_pipeline.train_loader(source, global_batch_size=base.train.batch_size, seed=shuffle_seed(base),
                                         collate_fn=input_pipeline.Collate(task.padded), augment=task.augment)
    batches = [{k: b[k] for k in ("features", "label")} for b, _ in zip(loader, range(10))]

    total = base.train.num_steps
    values = TrialValues.of(configs, counts)
    program = TrialProgram(task, base, trial_mesh(len(configs)), total, counts)
    state, model = program.init(values)
    step = program.train_step(state, model, values)
    batch_params, norms = [], []
    for batch in batches:
        state, metrics = step(state, {k: jax.device_put(v, program.batch_sharding) for k, v in batch.items()}, model)
        batch_params.append(jax.device_get(state.params))
        norms.append(jax.device_get(metrics["grad_norm"]))
    assert np.max(norms) > base.optim.clip_norm  # clipping is exercised

    mesh = sharding.make_mesh(1)
    for k, config in enumerate(configs):
        one_task = make_task(config)
        one_model, one_state, shardings, tx = create_train_state(one_task, config, mesh, total)
        one_step = make_train_step(one_task, config, tx, one_state, shardings, mesh,
                                   class_weights(counts, config.train.class_weights))
        for i, batch in enumerate(batches):
            one_state, _ = one_step(one_state, sharding.global_batch(batch, mesh), one_model)
            alone = jax.device_get(one_state.params)
            for a, b in zip(jax.tree.leaves(alone), jax.tree.leaves(batch_params[i]), strict=True):
                np.testing.assert_array_equal(a, b[k], err_msg=f"trial {k}, step {i}")


def test_injected_learning_rate_and_weight_decay_equal_built_in_ones():
    """One optimiser whose state is given lr/wd (a trial's values) updates as one built with them, in one compile."""
    import jax
    import jax.numpy as jnp
    import ml_collections
    from flax import nnx

    from emohd_jax.train.optim import make_optimizer, set_hyperparams

    params = nnx.State({"w": jnp.arange(6.0).reshape(2, 3) / 7, "b": jnp.ones(3)})
    grads = jax.tree.map(lambda p: jnp.cos(p), params)

    def optim(lr, wd):
        return ml_collections.ConfigDict({"lr": lr, "weight_decay": wd, "warmup_steps": 2, "clip_norm": 1.0,
                                          "trainable": ()})

    shared = make_optimizer(optim(1e-3, 0.0), params, total_steps=10)
    update = jax.jit(lambda state: shared.update(grads, state, params)[0])
    for lr, wd in ((1e-3, 0.0), (5e-2, 0.1)):
        own = make_optimizer(optim(lr, wd), params, total_steps=10)
        expected = own.update(grads, own.update(grads, own.init(params), params)[1], params)[0]
        state = set_hyperparams(shared.init(params), learning_rate=lr, weight_decay=wd)
        state = shared.update(grads, state, params)[1]
        got = update(state)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
            assert jnp.allclose(a, b, rtol=1e-6, atol=1e-9)
    assert update._cache_size() == 1


def test_grid_points_and_groups_by_width():
    """A grid is enqueued in a fixed order; trials differing only in traced values share one program, widths do not."""
    import ml_collections
    from optuna.distributions import CategoricalDistribution

    from emohd_jax.study.batch import batch_groups
    from emohd_jax.study.space import Sweep, trial_config

    sweep = Sweep(name="g", space={"optim.lr": CategoricalDistribution([1e-3, 2e-3]),
                                   "model.head_hidden": CategoricalDistribution([16, 32])},
                  grid={"optim.lr": [1e-3, 2e-3], "model.head_hidden": [16, 32]}, sampler="grid")
    points = sweep.grid_points()
    assert points == [{"optim.lr": 1e-3, "model.head_hidden": 16}, {"optim.lr": 1e-3, "model.head_hidden": 32},
                      {"optim.lr": 2e-3, "model.head_hidden": 16}, {"optim.lr": 2e-3, "model.head_hidden": 32}]
    from emohd_jax.run_config import load_config

    base = load_config(["--config", str(REPO / "configs" / "meld_text_head.py")])
    configs = [trial_config(base, sweep, p) for p in points]
    for i, c in enumerate(configs):
        c.workdir = f"trial_{i}"
    assert batch_groups(configs) == [[0, 2], [1, 3]]
    assert isinstance(configs[0], ml_collections.ConfigDict) and configs[3].model.head_hidden == 32
