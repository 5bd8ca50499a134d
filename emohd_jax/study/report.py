"""A finished study → reports/sweep_<name>/: trials table (Markdown + JSON), parameter importances, a PNG of the
metric against each hyper-parameter, TensorBoard scalars per trial, and the best trial as a config file."""

from __future__ import annotations

import json
import math
import pprint

import ml_collections
import optuna
from etils import epath

from emohd_jax.run_config import portable_paths, shown_path
from emohd_jax.study.space import Sweep, trial_config

METRICS = ("weighted_f1", "accuracy", "macro_f1")


def trials_table(study: optuna.Study) -> list[dict]:
    """One row per finished trial, sorted by dev weighted F1 (best first)."""
    rows = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,
                                                        optuna.trial.TrialState.PRUNED)):
        dev = t.user_attrs.get("dev", {})
        rows.append({"trial": t.number, "state": t.state.name.lower(), **{m: dev.get(m) for m in METRICS},
                     "best_step": dev.get("step"), "params": t.params,
                     "checkpoint": shown_path(t.user_attrs.get("checkpoint") or "") or None})
    return sorted(rows, key=lambda r: -(r["weighted_f1"] if r["weighted_f1"] is not None else -math.inf))


def best_config_text(config: ml_collections.ConfigDict, sweep: Sweep, trial: optuna.trial.FrozenTrial) -> str:
    """A config file `emohd train --config` takes as is: the swept config with the best trial's values."""
    best = trial_config(config, sweep, trial.params)
    best.workdir = f"work/runs/sweep_{sweep.name}_best"
    best.report_dir = f"reports/sweep_{sweep.name}_best"
    best = portable_paths(best)  # no machine's folders in a committed config
    return (f'"""Best trial ({trial.number}) of sweep {sweep.name!r}: {json.dumps(trial.params)}; dev '
            f'{json.dumps(trial.user_attrs.get("dev", {}))}.\n\n    emohd train --config <this file>\n"""\n\n'
            "import ml_collections\n\n\ndef get_config(arg: str = '') -> ml_collections.ConfigDict:\n"
            f"    return ml_collections.ConfigDict({pprint.pformat(best.to_dict(), indent=1, width=110)})\n")


def _plot(study: optuna.Study, sweep: Sweep, metric: str, path: epath.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("dev")]
    names = list(sweep.space)
    cols = min(3, len(names))
    fig, axes = plt.subplots(math.ceil(len(names) / cols), cols, figsize=(4 * cols, 3.2 * math.ceil(len(names) / cols)),
                             squeeze=False)
    for ax, name in zip(axes.flat, names):
        distribution = sweep.space[name]
        values = [t.params[name] for t in trials]
        scores = [t.user_attrs["dev"][metric] for t in trials]
        colors = ["tab:gray" if t.state == optuna.trial.TrialState.PRUNED else "tab:blue" for t in trials]
        if isinstance(distribution, optuna.distributions.CategoricalDistribution):
            choices = [str(c) for c in distribution.choices]
            ax.scatter([choices.index(str(v)) for v in values], scores, c=colors, s=18)
            ax.set_xticks(range(len(choices)), choices)
        else:
            ax.scatter(values, scores, c=colors, s=18)
            if getattr(distribution, "log", False):
                ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.set_ylabel(f"dev {metric}")
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle(f"sweep {sweep.name}: {len(trials)} trials (grey: pruned)")
    fig.tight_layout()
    fig.savefig(str(path), dpi=110)
    plt.close(fig)


def write_report(study: optuna.Study, config: ml_collections.ConfigDict, sweep: Sweep, out_dir: str,
                 *, metric: str) -> epath.Path:
    """Writes every output of a finished study under `out_dir`; returns it."""
    from tensorboardX import SummaryWriter

    out = epath.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = trials_table(study)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    try:
        importances = optuna.importance.get_param_importances(study) if len(complete) > 1 else {}
    except (ValueError, RuntimeError) as error:  # e.g. every trial with one value of a parameter
        importances = {"error": str(error)}
    best = study.best_trial if complete else None
    summary = {"sweep": sweep.name, "study": study.study_name, "sampler": sweep.sampler, "metric": metric,
               "n_trials": len(rows), "pruned": sum(r["state"] == "pruned" for r in rows),
               "best_trial": best.number if best else None, "best_dev": best.user_attrs.get("dev") if best else None,
               "best_params": best.params if best else None, "importances": importances, "trials": rows}
    (out / "trials.json").write_text(json.dumps(summary, indent=1))
    names = list(sweep.space)
    lines = [f"# Sweep `{sweep.name}`: {len(rows)} trials, sorted by dev weighted F1", "",
             "| trial | state | weighted F1 | accuracy | macro F1 | step | " + " | ".join(names) + " |",
             "|---" * (6 + len(names)) + "|"]
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    for r in rows:
        lines.append(f"| {r['trial']} | {r['state']} | " + " | ".join(
            f"{r[m]:.2f}" if r[m] is not None else "" for m in METRICS) + f" | {r['best_step']} | "
            + " | ".join(fmt(r["params"].get(n)) for n in names) + " |")
    lines += ["", "Parameter importances (Optuna, on the metric "
              f"`{metric}`): " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k}: {v}"
                                           for k, v in importances.items())]
    (out / "trials.md").write_text("\n".join(lines) + "\n")
    _plot(study, sweep, metric, out / "metric_vs_params.png")
    for t in study.trials:  # TensorBoard scalars per trial: dev metrics at each evaluation
        history = t.user_attrs.get("history")
        if not history:
            continue
        writer = SummaryWriter(str(out / "tensorboard" / f"trial_{t.number:03d}"))
        for h in history:
            for m in METRICS:
                writer.add_scalar(f"dev/{m}", h[m], h["step"])
        writer.close()
    if best:
        (out / "best_config.py").write_text(best_config_text(config, sweep, best))
    return out
