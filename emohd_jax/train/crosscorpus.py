"""A trained tower on every set it reports: its selection split and the corpora it never trained on.

    python -m emohd_jax.train.crosscorpus --config voice_whisper:loco_tess [--fusion-npz tess=work/fusion_inputs/x.npz]
    python -m emohd_jax.train.crosscorpus --config voice_whisper --bundle audio --splits ravdess_dev,tess,urdu \
        --out reports/voice_whisper_vggish_bundle     # today's shipped tower on the same sets

Each split gets `report_dir/<split>/metrics.json` (accuracy, weighted F1, macro F1, per-class recall) and a
confusion PNG, and `report_dir/metrics.json` collects them. A corpus with fewer classes than the tower
(URDU: 4) is scored by the argmax over its own classes (`RESTRICTED_CLASSES`). `--fusion-npz` writes a split's
probabilities for fusion work: probs [n, 7] (EMOTIONS order), labels [n], groups [n] (speaker), uids [n].
"""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Mapping, Sequence

import numpy as np

from emohd_jax import metrics as metrics_lib
from emohd_jax.classes import CLASS_INDEX, EMOTIONS

RESTRICTED_CLASSES: dict[str, tuple[str, ...]] = {"urdu": ("neutral", "happiness", "anger", "sadness")}


def restricted_decisions(probs: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """probs: [n, 7] → [n] class indices (EMOTIONS order): the argmax over `classes` only."""
    allowed = np.asarray([CLASS_INDEX[c] for c in classes])
    return allowed[np.argmax(probs[:, allowed], axis=1)]


def score(labels: np.ndarray, probs: np.ndarray, dataset: str) -> dict:
    """Clip metrics of probs [n, 7] against labels [n], over the dataset's own classes when it lacks some."""
    classes = RESTRICTED_CLASSES.get(dataset)
    decisions = probs.argmax(axis=1) if classes is None else restricted_decisions(probs, classes)
    result = metrics_lib.classification_metrics(np.asarray(labels), decisions)
    result["per_class_recall"] = {c: result["per_class"][c]["recall"] for c in classes or EMOTIONS}
    if classes is not None:
        result["scored_over"] = list(classes)
    return result


def summary(result: Mapping) -> dict:
    return {k: result[k] for k in ("accuracy", "weighted_f1", "macro_f1", "per_class_recall") if k in result}


def write_fusion_npz(path: str | pathlib.Path, predictions: Mapping, speakers: Mapping[str, str]) -> None:
    """probs [n, 7] float32, labels [n], groups [n] (speaker ids), uids [n]: a tower's outputs for fusion work."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    uids = list(predictions["uid"])
    np.savez(path, probs=np.asarray(predictions["probs"], np.float32), labels=np.asarray(predictions["label"]),
             groups=np.asarray([speakers[u] for u in uids]), uids=np.asarray(uids))


def evaluate_run(config, splits: Sequence[str] | None = None, fusion_npz: Mapping[str, str] | None = None) -> dict:
    """The run's best checkpoint on each split of `config.data.report_splits` (or `splits`); writes the reports."""
    from data_pipeline.prepare import read_source
    from emohd_jax.reports import write_report
    from emohd_jax.train.trainer import evaluate_shards

    out = pathlib.Path(config.report_dir)
    results = {}
    for split in splits or config.data.report_splits:
        _, predictions = evaluate_shards(config, config.data.shards, split)
        dataset = config.data.get("split_sources", {}).get(split, config.data.dataset)
        result = score(np.asarray(predictions["label"]), np.asarray(predictions["probs"]), dataset)
        write_report(out / split, result, dataset=dataset, split=split,
                     extra={"task": config.task, "checkpoint": config.checkpoint or config.workdir,
                            "trained_on": config.data.train_split, "normalize": config.model.get("normalize")})
        (out / split / "predictions.json").write_text(json.dumps(predictions))
        results[split] = {"dataset": dataset, "in_training": split in config.data.train_split.split("+"),
                          **summary(result)}
        if fusion_npz and split in fusion_npz:
            utterances, _ = read_source(config.data, split)
            write_fusion_npz(fusion_npz[split], predictions, {u.uid: u.speaker or "" for u in utterances})
    (out / "metrics.json").write_text(json.dumps({"train_split": config.data.train_split,
                                                  "select_split": config.data.eval_split,
                                                  "normalize": config.model.get("normalize"), "splits": results},
                                                 indent=1))
    return results


def bundle_tower_on(tower, utterances, *, batch_size: int = 64) -> tuple[list[str], np.ndarray, np.ndarray]:
    """A bundle tower (`emohd_jax.bundle.LoadedTower`) on utterances: (uids, labels [n], clip probs [n, 7]), the
    clip's probability the mean of its records' (the trainer's clip rule), bad input skipped."""
    from emohd_jax.errors import BadInputError
    from emohd_jax.input_pipeline import collate

    extractor = tower.task.extractor()
    uids, labels, probs = [], [], []
    for utterance in utterances:
        try:
            records = extractor.records(utterance)
        except BadInputError:
            continue
        fields = [{k: r[k] for k in tower.task.model_fields} for r in records]
        chunks = [np.asarray(tower.probs(collate(fields[i:i + batch_size], padded=tower.task.padded)))
                  for i in range(0, len(fields), batch_size)]
        uids.append(utterance.uid)
        labels.append(utterance.label)
        probs.append(np.concatenate(chunks).mean(axis=0))
    return uids, np.asarray(labels), np.stack(probs)


def evaluate_bundle_tower(config, modality: str, splits: Sequence[str], out_dir: str | pathlib.Path) -> dict:
    """The shipped bundle's `modality` tower (its own extractor, online) on `splits` of the config's data; writes
    `out_dir/<split>/metrics.json` + confusion and `out_dir/metrics.json`."""
    from data_pipeline.prepare import read_source
    from emohd_jax.bundle import load_bundle
    from emohd_jax.reports import write_report

    tower, out, results = load_bundle().towers[modality], pathlib.Path(out_dir), {}
    for split in splits:
        utterances, _ = read_source(config.data, split)
        uids, labels, probs = bundle_tower_on(tower, utterances)
        dataset = config.data.get("split_sources", {}).get(split, config.data.dataset)
        result = score(labels, probs, dataset)
        write_report(out / split, result, dataset=dataset, split=split, extra={"tower": f"shipped bundle {modality}"})
        results[split] = {"dataset": dataset, "n": len(uids), **summary(result)}
    (out / "metrics.json").write_text(json.dumps({"tower": f"emohd_jax/assets/bundle {modality} tower",
                                                  "splits": results}, indent=1))
    return results


def main(argv: list[str]) -> int:
    """`--config SPEC [--fusion-npz SPLIT=PATH ...]`: a trained run on its report splits; with
    `--bundle MODALITY --out DIR --splits a,b`: the shipped bundle's tower on those splits of the config's data."""
    from emohd_jax.run_config import load_config

    options = {}
    for flag in ("--fusion-npz", "--bundle", "--out", "--splits"):
        while flag in argv:
            i = argv.index(flag)
            options.setdefault(flag, []).append(argv[i + 1])
            del argv[i:i + 2]
    config = load_config(argv)
    if "--bundle" in options:
        splits = options.get("--splits", [",".join(config.data.report_splits)])[0].split(",")
        result = evaluate_bundle_tower(config, options["--bundle"][0], splits, options["--out"][0])
    else:
        fusion = dict(spec.partition("=")[::2] for spec in options.get("--fusion-npz", []))
        result = evaluate_run(config, fusion_npz=fusion)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
