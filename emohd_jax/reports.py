"""Writes an evaluation as people read it: metrics.json, a Markdown table and a confusion-matrix PNG.

Every write goes through `etils.epath`, so a report or a run may live on `gs://` as well as on a local disk.
"""

from __future__ import annotations

import json
import os

import numpy as np
from etils import epath

from emohd_jax.classes import EMOTIONS


def markdown_table(metrics: dict) -> str:
    """Per-class rows plus the summary line, in percent."""
    lines = ["| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for name, row in metrics["per_class"].items():
        lines.append(f"| {name} | {row['precision']:.2f} | {row['recall']:.2f} | {row['f1']:.2f} | {row['support']} |")
    lines.append(f"\naccuracy {metrics['accuracy']:.2f} · weighted F1 {metrics['weighted_f1']:.2f} · "
                 f"macro F1 {metrics['macro_f1']:.2f} · n {metrics['n']}")
    return "\n".join(lines) + "\n"


def plot_confusion(confusion: np.ndarray, path: str | os.PathLike, title: str = "") -> None:
    """Row-normalised confusion matrix with raw counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    confusion = np.asarray(confusion)
    rows = confusion.sum(axis=1, keepdims=True)
    normalised = np.divide(confusion, rows, out=np.zeros(confusion.shape), where=rows > 0)
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(EMOTIONS)), EMOTIONS, rotation=45, ha="right")
    ax.set_yticks(range(len(EMOTIONS)), EMOTIONS)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(confusion.shape[0]):
        for j in range(confusion.shape[1]):
            ax.text(j, i, int(confusion[i, j]), ha="center", va="center",
                    color="white" if normalised[i, j] > 0.5 else "black", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    with epath.Path(path).open("wb") as f:  # matplotlib itself writes only local files
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)


def write_report(out_dir: str | os.PathLike, metrics: dict, *, dataset: str, split: str,
                 extra: dict | None = None) -> epath.Path:
    """metrics.json (the schema of metrics.py plus dataset/split), metrics.md and confusion.png."""
    from emohd_jax.run_config import shown_path

    out = epath.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    extra = {k: shown_path(v) if isinstance(v, str) else v for k, v in (extra or {}).items()}  # no machine folders
    payload = {"dataset": dataset, "split": split, **metrics, **extra}
    (out / "metrics.json").write_text(json.dumps(payload, indent=1))
    (out / "metrics.md").write_text(f"# {dataset} · {split}\n\n" + markdown_table(metrics))
    plot_confusion(np.asarray(metrics["confusion"]), out / "confusion.png", title=f"{dataset} {split}")
    return out / "metrics.json"


def write_run_eval(workdir: str | os.PathLike, metrics: dict, predictions: dict, *, dataset: str,
                   split: str) -> epath.Path:
    """`<workdir>/eval_<split>.json`: the evaluation saved with a run, from which `emohd export` fits the fusion
    (each tower's own dev confusion counts; read back by `emohd_jax.bundle`)."""
    path = epath.Path(workdir) / f"eval_{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"dataset": dataset, "split": split, "metrics": metrics, "predictions": predictions}))
    return path
