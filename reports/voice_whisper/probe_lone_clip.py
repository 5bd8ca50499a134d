"""What a lone clip can reach across corpora with the training statistics: linear probes on clip summaries.

    emohd prepare --config voice_whisper:ravdess,corpus,clean      # the clean feature shards
    python reports/voice_whisper/probe_lone_clip.py                 # → probe_lone_clip.json (~10 min, 2 cores)

scikit-learn comes with the test dependencies (`make install-dev`).

Each clip → its frames' mean and std per layer and width [7, 512] of the stored Whisper base features; the
mean standardised with the training corpora's global statistics (what a lone clip gets at predict time), the
std as log(std / global std). Logistic regression over all layers, for several regularisation strengths C;
LOCO folds as the heads: RAVDESS 1-16 + URDU → TESS, RAVDESS 1-16 + TESS → URDU (argmax over its 4 classes).
`inner` is the same probe trained on RAVDESS 1-16 alone and scored on the fold's other training corpus: the
only selection signal that does not read the held-out corpus. A report script, not part of the package.
"""

import json
import warnings

import numpy as np
from sklearn.linear_model import LogisticRegression

from data_pipeline import shards

SHARDS = "work/shards/voice_whisper_clean"
SPLITS = ("ravdess_train", "tess", "urdu")
URDU_CLASSES = [0, 1, 2, 3]  # neutral, happiness, anger, sadness in the canonical order
KINDS = ("mean", "logstd", "mean+logstd")
CS = (0.001, 0.01, 0.1, 1.0)


def summaries(split: str) -> dict[str, np.ndarray]:
    source = shards.open_split(SHARDS, split)
    hidden = [np.asarray(source[i]["hidden"], np.float32) for i in range(len(source))]  # [frames, 7, 512] each
    return {"mean": np.stack([h.mean(0) for h in hidden]), "std": np.stack([h.std(0) for h in hidden]),
            "frames": np.asarray([len(h) for h in hidden], np.float64),
            "label": np.asarray([int(source[i]["label"]) for i in range(len(source))])}


def global_statistics(clips: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Frame-weighted mean and std over every frame of the training corpora."""
    frames = np.concatenate([c["frames"] for c in clips])[:, None, None]
    means = np.concatenate([c["mean"] for c in clips]).astype(np.float64)
    stds = np.concatenate([c["std"] for c in clips]).astype(np.float64)
    mean = (frames * means).sum(0) / frames.sum()
    var = (frames * (stds ** 2 + means ** 2)).sum(0) / frames.sum() - mean ** 2
    return mean, np.sqrt(np.maximum(var, 1e-6))


def features(clips: dict, mean: np.ndarray, std: np.ndarray, kind: str) -> np.ndarray:
    parts = {"mean": (clips["mean"] - mean) / std, "logstd": np.log(clips["std"] / std)}
    chosen = [parts[k] for k in kind.split("+")]
    return np.concatenate(chosen, -1).reshape(len(clips["label"]), -1)


def accuracy(data: dict, train: tuple[str, ...], test: str, kind: str, c: float) -> float:
    mean, std = global_statistics([data[s] for s in train])
    x = np.concatenate([features(data[s], mean, std, kind) for s in train])
    y = np.concatenate([data[s]["label"] for s in train])
    probe = LogisticRegression(C=c, max_iter=3000).fit(x, y)
    probs, classes = probe.predict_proba(features(data[test], mean, std, kind)), list(probe.classes_)
    allowed = URDU_CLASSES if test == "urdu" else classes
    predicted = np.asarray(allowed)[probs[:, [classes.index(k) for k in allowed]].argmax(1)]
    return round(100 * float((predicted == data[test]["label"]).mean()), 2)


def main() -> None:
    warnings.filterwarnings("ignore")
    data = {split: summaries(split) for split in SPLITS}
    rows = []
    for kind in KINDS:
        for c in CS:
            row = {"features": kind, "C": c,
                   "tess": accuracy(data, ("ravdess_train", "urdu"), "tess", kind, c),
                   "urdu": accuracy(data, ("ravdess_train", "tess"), "urdu", kind, c),
                   "inner_tess_fold": accuracy(data, ("ravdess_train",), "urdu", kind, c),
                   "inner_urdu_fold": accuracy(data, ("ravdess_train",), "tess", kind, c)}
            rows.append(row)
            print(row, flush=True)
    with open("reports/voice_whisper/probe_lone_clip.json", "w") as f:
        json.dump({"what": __doc__.splitlines()[0], "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
