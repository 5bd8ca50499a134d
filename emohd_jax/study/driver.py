"""`emohd sweep --config X --sweep S`: an Optuna study whose trials are trained K at a time as one program.

The study lives in `sqlite:///<workdir>/study.db` (embedded, nothing to start) or any database URL Optuna
takes (`--storage postgresql://…`): several processes or hosts running the same command share it, each
asking for its next batch, Optuna's own distributed mode. Each trial reports its dev metric at every
evaluation (the median pruner may stop it) and keeps its best checkpoint, metrics and checkpoint path as
user attributes. Killed (even `kill -9`), the same command resumes: the in-flight batch from its last
checkpoint, then the study goes on, to the same results (samplers are seeded per batch).
"""

from __future__ import annotations

import json
import os
import socket

import ml_collections
import optuna

from emohd_jax import checkpointing
from emohd_jax.errors import CommandLineParser, UsageError
from emohd_jax.study.space import Sweep, load_sweep, trial_config

OWNER, BATCH, TRIAL_DIR = "owner", "batch", "trial_dir"


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_alive(owner: str) -> bool:
    """False only for a process of this host that is gone; another host's worker is taken to be alive."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def open_study(name: str, storage: str, sweep: Sweep, *, attempts: int = 5) -> optuna.Study:
    """The study `name` in `storage`, created by whichever worker comes first. Workers started together race to
    create a fresh database's tables (Optuna's schema insert fails in all but one): the others retry."""
    import time

    import sqlalchemy.exc

    pruner = optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=0) if sweep.prune \
        else optuna.pruners.NopPruner()
    for attempt in range(attempts):
        try:
            return optuna.create_study(study_name=name, storage=storage, direction="maximize", pruner=pruner,
                                       load_if_exists=True)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError, optuna.exceptions.DuplicatedStudyError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))


def _orphaned_batches(study: optuna.Study) -> dict[str, list[optuna.trial.FrozenTrial]]:
    """Running trials whose worker died on this host, by batch: resumed from their batch checkpoint."""
    batches: dict[str, list] = {}
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        owner = trial.user_attrs.get(OWNER)
        if owner and owner != _owner() and not _owner_alive(owner):
            batches.setdefault(trial.user_attrs[BATCH], []).append(trial)
    return batches


def _ask_batch(study: optuna.Study, sweep: Sweep, n_trials: int) -> list[optuna.trial.Trial]:
    """Up to `batch_trials` new trials; fewer when the study's budget (`n_trials`) runs out."""
    if sweep.sampler == "grid" and not study.user_attrs.get("grid_enqueued"):
        study.set_user_attr("grid_enqueued", True)
        for point in sweep.grid_points():
            study.enqueue_trial(point)
    if sweep.sampler == "grid":
        n_trials = min(n_trials, len(sweep.grid_points()))
    states = tuple(s for s in optuna.trial.TrialState if s != optuna.trial.TrialState.WAITING)
    trials = []
    for _ in range(sweep.batch_trials):
        asked = len(study.get_trials(deepcopy=False, states=states))
        if asked >= n_trials:
            break
        study.sampler = sweep.make_sampler(asked)
        trial = study.ask(sweep.space)
        if trial.number >= n_trials:  # another worker asked first: give it back
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            break
        trials.append(trial)
    return trials


def sweep(config: ml_collections.ConfigDict, sweep_spec: str | Sweep, *, storage: str = "", workdir: str = "",
          study_name: str = "", report_dir: str = "", n_trials: int = 0, batch_trials: int = 0,
          max_batches: int = 0, devices=None) -> optuna.Study:
    """Runs (or resumes, or joins) the study of `sweep_spec` over `config`; writes its report when complete.

    workdir default: work/sweeps/<sweep>; storage: sqlite:///<workdir>/study.db; report: reports/sweep_<sweep>.
    `max_batches` > 0 stops this worker after that many batches (tests, time-boxed workers).
    """
    import dataclasses

    from emohd_jax.study import report
    from emohd_jax.study.batch import batch_groups, train_trial_batch

    spec = load_sweep(sweep_spec) if isinstance(sweep_spec, str) else sweep_spec
    spec = dataclasses.replace(spec, **{k: v for k, v in (("n_trials", n_trials), ("batch_trials", batch_trials)) if v})
    workdir = checkpointing.absolute(workdir or f"work/sweeps/{spec.name}")
    workdir.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{workdir / 'study.db'}"
    study = open_study(study_name or spec.name, storage, spec)
    metric = spec.metric or config.train.select_on
    owner = _owner()

    def run(trials: list, batch_id: str) -> None:
        configs = [trial_config(config, spec, t.params) for t in trials]
        for i, t in enumerate(trials):
            configs[i].workdir = str(workdir / "trials" / str(t.number))
        for group in batch_groups(configs):
            members = [trials[i] for i in group]
            handles = [optuna.trial.Trial(study, t._trial_id) for t in members]

            def on_evaluation(k: int, step: int, summary: dict) -> bool:
                handles[k].report(summary[metric], step)
                return handles[k].should_prune()

            outcomes = train_trial_batch([configs[i] for i in group], str(workdir / "batches" / f"{batch_id}-{group[0]}"),
                                         [configs[i].workdir for i in group], on_evaluation=on_evaluation,
                                         devices=devices)
            for t, handle, outcome in zip(members, handles, outcomes):
                handle.set_user_attr("dev", outcome.best)
                handle.set_user_attr("history", outcome.history)
                handle.set_user_attr("checkpoint", f"{outcome.checkpoint}/checkpoints/best")
                if outcome.pruned:
                    study.tell(t.number, state=optuna.trial.TrialState.PRUNED)
                else:
                    study.tell(t.number, outcome.best[metric])

    batches = 0
    for batch_id, trials in _orphaned_batches(study).items():  # a killed worker's batch: from its checkpoint
        for t in trials:
            study._storage.set_trial_user_attr(t._trial_id, OWNER, owner)
        run(sorted(trials, key=lambda t: t.number), batch_id)
        batches += 1
    while not max_batches or batches < max_batches:
        trials = _ask_batch(study, spec, spec.n_trials)
        if not trials:
            break
        batch_id = str(trials[0].number)
        for t in trials:
            t.set_user_attr(OWNER, owner)
            t.set_user_attr(BATCH, batch_id)
        run([study._storage.get_trial(t._trial_id) for t in trials], batch_id)
        batches += 1
    finished = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,
                                                        optuna.trial.TrialState.PRUNED))
    if len(finished) >= spec.n_trials:
        report.write_report(study, config, spec, report_dir or f"reports/sweep_{spec.name}", metric=metric)
    return study


def main(argv: list[str]) -> int:
    """`emohd sweep --config X --sweep S [--storage URL] [--workdir DIR] [--trials N] [--batch K] [--config.k=v …]`."""
    from emohd_jax.run_config import load_config

    parser = CommandLineParser(prog="emohd sweep", description=__doc__.splitlines()[0],
                               epilog="Also --config SPEC (required) and --config.KEY=VALUE overrides, as for emohd "
                                      "train; the sweep's values override those per trial.")
    parser.add_argument("--sweep", required=True, help="sweeps/<name>.py or a path to a file with get_sweep()")
    parser.add_argument("--storage", default="", help="Optuna storage URL (default sqlite:///<workdir>/study.db)")
    parser.add_argument("--workdir", default="", help="trial runs, batch checkpoints (default work/sweeps/<sweep>)")
    parser.add_argument("--study-name", default="", help="default: the sweep's name")
    parser.add_argument("--report-dir", default="", help="default: reports/sweep_<sweep>")
    parser.add_argument("--trials", type=int, default=0, help="the study's trial budget (default: the sweep's)")
    parser.add_argument("--batch", type=int, default=0, help="trials trained together (default: the sweep's)")
    parser.add_argument("--max-batches", type=int, default=0, help="stop this worker after N batches")
    args, rest = parser.parse_known_args(argv)
    if not any(a == "--config" or a.startswith("--config=") for a in rest):
        raise UsageError("emohd sweep", "--config is required", "e.g. --config meld_text_head --sweep meld_text")
    config = load_config(rest)
    study = sweep(config, args.sweep, storage=args.storage, workdir=args.workdir, study_name=args.study_name,
                  report_dir=args.report_dir, n_trials=args.trials, batch_trials=args.batch,
                  max_batches=args.max_batches)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        print(json.dumps({"trials": len(study.trials), "complete": len(complete), "best_trial": best.number,
                          "best_value": best.value, "params": best.params}, indent=1))
    return 0

