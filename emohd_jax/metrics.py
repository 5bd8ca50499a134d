"""Classification metrics in the report schema: per-class P/R/F1, weighted and macro F1, accuracy (percent)."""

from __future__ import annotations

import numpy as np

from emohd_jax.classes import EMOTIONS, NUM_CLASSES


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """counts: [true_class, predicted_class]."""
    y_true = np.asarray(y_true, np.int64)
    y_pred = np.asarray(y_pred, np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    counts = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(counts, (y_true, y_pred), 1)
    return counts


def metrics_from_confusion(confusion: np.ndarray, class_names: tuple[str, ...] = EMOTIONS) -> dict:
    """Per-class precision/recall/F1/support plus accuracy, weighted F1 and macro F1 (percent).

    Macro F1 averages over classes present in the ground truth, so a split without a class
    (CREMA-D has no surprise) is not penalised for it.
    """
    confusion = np.asarray(confusion, np.float64)
    tp = np.diag(confusion)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    n = support.sum()
    present = support > 0
    return {
        "n": int(n),
        "accuracy": float(100 * tp.sum() / max(n, 1)),
        "weighted_f1": float(100 * (f1 * support).sum() / max(n, 1)),
        "macro_f1": float(100 * f1[present].mean()) if present.any() else 0.0,
        "per_class": {
            name: {"precision": float(100 * precision[i]), "recall": float(100 * recall[i]),
                   "f1": float(100 * f1[i]), "support": int(support[i])}
            for i, name in enumerate(class_names)
        },
        "confusion": confusion.astype(np.int64).tolist(),
    }


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """The report schema for label vectors (class indices in EMOTIONS order)."""
    return metrics_from_confusion(confusion_matrix(y_true, y_pred))
