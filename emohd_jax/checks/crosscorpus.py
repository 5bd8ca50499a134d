"""A trained tower on every set it reports: its selection split and the corpora it never trained on.

    python -m emohd_jax.checks.crosscorpus --config voice_whisper:loco_tess [--fusion-npz tess=work/fusion_inputs/x.npz]
    python -m emohd_jax.checks.crosscorpus --config voice_whisper --bundle audio --splits ravdess_dev,tess,urdu \
        --out reports/voice_whisper_vggish_bundle     # today's shipped tower on the same sets
    python -m emohd_jax.checks.crosscorpus --photos ROOT/faces_wild/test --out reports/faces_wild  # the face column
    python -m emohd_jax.checks.crosscorpus --table reports/crosscorpus      # every tower × set in one table

Each split gets `report_dir/<split>/metrics.json` (accuracy, weighted F1, macro F1, per-class recall) and a
confusion PNG, and `report_dir/metrics.json` collects them. A corpus with fewer classes than the tower
(URDU: 4) is scored by the argmax over its own classes (`RESTRICTED_CLASSES`). `--fusion-npz` writes a split's
probabilities for fusion work: probs [n, 7] (EMOTIONS order), labels [n], groups [n] (speaker), uids [n].
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
from typing import Mapping, Sequence

import numpy as np
from etils import epath

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


def write_fusion_npz(path: str | os.PathLike, predictions: Mapping, speakers: Mapping[str, str]) -> None:
    """probs [n, 7] float32, labels [n], groups [n] (speaker ids), uids [n]: a tower's outputs for fusion work."""
    path = epath.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    uids = list(predictions["uid"])
    with path.open("wb") as f:
        np.savez(f, probs=np.asarray(predictions["probs"], np.float32), labels=np.asarray(predictions["label"]),
                 groups=np.asarray([speakers[u] for u in uids]), uids=np.asarray(uids))


def evaluate_run(config, splits: Sequence[str] | None = None, fusion_npz: Mapping[str, str] | None = None) -> dict:
    """The run's best checkpoint on each split of `config.data.report_splits` (or `splits`); writes the reports."""
    from data_pipeline.prepare import read_source
    from emohd_jax.reports import write_report
    from emohd_jax.train.trainer import evaluate_shards

    out = epath.Path(config.report_dir)
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


def evaluate_bundle_tower(config, modality: str, splits: Sequence[str], out_dir: str | os.PathLike) -> dict:
    """The shipped bundle's `modality` tower (its own extractor, online) on `splits` of the config's data; writes
    `out_dir/<split>/metrics.json` + confusion and `out_dir/metrics.json`."""
    from data_pipeline.prepare import read_source
    from emohd_jax.bundle import load_bundle
    from emohd_jax.checks.tower_outputs import score_utterances
    from emohd_jax.errors import SkipReport
    from emohd_jax.reports import write_report

    tower, out, results = load_bundle().towers[modality], epath.Path(out_dir), {}
    for split in splits:
        utterances, _ = read_source(config.data, split)
        outputs = score_utterances(tower, utterances, skips=SkipReport())   # bad input skipped
        dataset = config.data.get("split_sources", {}).get(split, config.data.dataset)
        result = score(outputs.labels, outputs.probs, dataset)
        write_report(out / split, result, dataset=dataset, split=split, extra={"tower": f"shipped bundle {modality}"})
        results[split] = {"dataset": dataset, "n": len(outputs.uids), **summary(result)}
    (out / "metrics.json").write_text(json.dumps({"tower": f"emohd_jax/assets/bundle {modality} tower",
                                                  "splits": results}, indent=1))
    return results


def score_photos(root: str | pathlib.Path, out_dir: str | pathlib.Path, *, every: int = 1) -> dict:
    """Class-folder photos (`root/<fer2013 class name>/*.jpg`, e.g. faces_wild/test) through the predictor, face
    only (MTCNN first, as on video; `emohd predict` without the per-photo files) → the face tower's metrics.

    A photo where no face was found counts as wrong in `all_photos` (what a user gets) and is left out of the
    main metrics (the tower on the faces it was given). `every`: score every n-th photo (sorted per class).
    """
    from tqdm import tqdm

    from emohd_jax.classes import FER2013_LABELS
    from emohd_jax.errors import BadInputError
    from emohd_jax.reports import write_report
    from emohd_jax.serve.predictor import Predictor

    photos = [p for c in sorted(FER2013_LABELS) for p in sorted((pathlib.Path(root) / c).glob("*.jpg"))[::every]]
    labels = np.asarray([CLASS_INDEX[FER2013_LABELS[p.parent.name]] for p in photos])
    predictor, decided, probs = Predictor(modalities="face"), [], []
    for prediction in tqdm(predictor.predict_many((p, None) for p in photos), total=len(photos), desc="photos"):
        face = None if isinstance(prediction, BadInputError) or not prediction.present[0, 0] else prediction.probs[0, 0]
        decided.append(face is not None)
        probs.append(face if face is not None else np.zeros(len(EMOTIONS), np.float32))
    decided, probs = np.asarray(decided), np.stack(probs)
    result = score(labels[decided], probs[decided], "faces_wild")
    all_decisions = np.where(decided, probs.argmax(axis=1), -1)
    result["all_photos"] = {"n": len(photos), "no_face": int((~decided).sum()),
                            "accuracy": 100.0 * float(np.mean(all_decisions == labels))}
    write_report(out_dir, result, dataset="faces_wild", split="test",
                 extra={"tower": "shipped bundle visual, through the predictor (MTCNN face first)", "every": every,
                        "all_photos": result["all_photos"]})
    return result


# (title, report folder, split) of every tower × set the README's cross-corpus columns read.
TABLE_ROWS: tuple[tuple[str, str, str], ...] = (
    ("voice, Whisper head (RAVDESS 1–16), per-corpus stats", "voice_whisper_ravdess_corpus_clean", "ravdess_dev"),
    ("voice, Whisper head (RAVDESS 1–16), per-corpus stats", "voice_whisper_ravdess_corpus_clean", "tess"),
    ("voice, Whisper head (RAVDESS 1–16), per-corpus stats", "voice_whisper_ravdess_corpus_clean", "urdu"),
    ("voice, Whisper head (RAVDESS 1–16), training stats", "voice_whisper_ravdess_global_clean", "ravdess_dev"),
    ("voice, Whisper head (RAVDESS 1–16), training stats", "voice_whisper_ravdess_global_clean", "tess"),
    ("voice, Whisper head (RAVDESS 1–16), training stats", "voice_whisper_ravdess_global_clean", "urdu"),
    ("voice, Whisper head LOCO (RAVDESS 1–16 + URDU), per-corpus stats", "voice_whisper_loco_tess_corpus_clean", "tess"),
    ("voice, Whisper head LOCO (RAVDESS 1–16 + URDU), training stats", "voice_whisper_loco_tess_global_clean", "tess"),
    ("voice, Whisper head LOCO (RAVDESS 1–16 + TESS), per-corpus stats", "voice_whisper_loco_urdu_corpus_clean", "urdu"),
    ("voice, Whisper head LOCO (RAVDESS 1–16 + TESS), training stats", "voice_whisper_loco_urdu_global_clean", "urdu"),
    ("voice, Whisper head LOCO (RAVDESS 1–16 + URDU, aug), per-corpus stats", "voice_whisper_loco_tess_corpus", "tess"),
    ("voice, Whisper head LOCO (RAVDESS 1–16 + URDU, aug), training stats", "voice_whisper_loco_tess_global", "tess"),
    ("voice, Whisper head LOCO (RAVDESS 1–16 + TESS, aug), per-corpus stats", "voice_whisper_loco_urdu_corpus", "urdu"),
    ("voice, Whisper head LOCO (RAVDESS 1–16 + TESS, aug), training stats", "voice_whisper_loco_urdu_global", "urdu"),
    ("voice, Whisper head LOCO (RAVDESS 1–16 + URDU) trained with training stats, scored with per-corpus stats "
     "(`predict --normalize folder`)", "voice_whisper_loco_tess_global_clean_folder_stats", "tess"),
    ("voice, Whisper head LOCO (RAVDESS 1–16 + TESS) trained with training stats, scored with per-corpus stats "
     "(`predict --normalize folder`)", "voice_whisper_loco_urdu_global_clean_folder_stats", "urdu"),
    ("voice, small VGGish (the previous bundle)", "voice_whisper_vggish_bundle", "ravdess_dev"),
    ("voice, small VGGish (the previous bundle)", "voice_whisper_vggish_bundle", "tess"),
    ("voice, small VGGish (the previous bundle)", "voice_whisper_vggish_bundle", "urdu"),
    ("face, shipped (FER2013 mini-Xception + MLP)", "fer_face_mlp", ""),
    ("face, shipped, photos through the predictor (MTCNN first; all 1,915)", "faces_wild", ""),
    ("words, shipped (MiniLM + LoRA)", "meld_text_lora", ""),
)


def crosscorpus_table(reports: str | os.PathLike = "reports", out_dir: str | os.PathLike = "reports/crosscorpus"
                      ) -> list[dict]:
    """Every row of TABLE_ROWS that has been measured → out_dir/table.{json,md} and each row's confusion PNG."""
    reports, out = epath.Path(reports), epath.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for title, folder, split in TABLE_ROWS:
        path = reports / folder / split / "metrics.json"
        if not path.exists():
            continue
        m = json.loads(path.read_text())
        recall = m.get("per_class_recall") or {c: v["recall"] for c, v in m["per_class"].items()}
        rows.append({"tower": title, "set": " ".join(dict.fromkeys(x for x in (m.get("dataset"), m.get("split")) if x)),
                     "report": str(path.parent), "n": m["n"], "accuracy": m["accuracy"],
                     "weighted_f1": m["weighted_f1"], "macro_f1": m["macro_f1"], "per_class_recall": recall,
                     **({"all_photos": m["all_photos"]} if "all_photos" in m else {})})
        confusion = path.parent / "confusion.png"
        if confusion.exists():
            (out / f"{folder}_{split or 'dev'}.png").write_bytes(confusion.read_bytes())
    lines = ["| tower | set | n | accuracy | weighted F1 | macro F1 | recall per class (" + ", ".join(EMOTIONS) + ") |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        recall = " / ".join("–" if r["per_class_recall"].get(c) is None else f"{r['per_class_recall'][c]:.0f}"
                            for c in EMOTIONS)
        lines.append(f"| {r['tower']} | {r['set']} | {r['n']} | {r['accuracy']:.2f} | {r['weighted_f1']:.2f} | "
                     f"{r['macro_f1']:.2f} | {recall} |")
    (out / "table.json").write_text(json.dumps(rows, indent=1))
    (out / "table.md").write_text("# Every tower on its dev set and on sets it never trained on\n\n"
                                  "Written by `python -m emohd_jax.checks.crosscorpus --table reports/crosscorpus`.\n\n"
                                  + "\n".join(lines) + "\n")
    return rows


def main(argv: list[str]) -> int:
    """`--config SPEC [--fusion-npz SPLIT=PATH ...]`: a trained run on its report splits; with
    `--bundle MODALITY --out DIR --splits a,b`: the shipped bundle's tower on those splits of the config's data."""
    from emohd_jax.run_config import load_config

    from emohd_jax.errors import CommandLineParser

    parser = CommandLineParser(prog="emohd check crosscorpus", description=__doc__.splitlines()[0],
                               epilog="A run's config follows as --config SPEC [--config.x=y ...].")
    parser.add_argument("--fusion-npz", action="append", default=[], metavar="SPLIT=PATH",
                        help="also write that split's probabilities for the fusion checks")
    parser.add_argument("--bundle", metavar="MODALITY", help="score the shipped bundle's tower instead of a run")
    parser.add_argument("--splits", help="with --bundle: comma-separated splits of the config's data")
    parser.add_argument("--photos", metavar="ROOT", help="class-folder photos through the predictor, face only")
    parser.add_argument("--every", type=int, default=1, help="with --photos: every n-th photo of each class")
    parser.add_argument("--table", metavar="DIR", help="collect every measured tower x set into DIR/table.md")
    parser.add_argument("--out", help="report folder for --bundle / --photos")
    args, argv = parser.parse_known_args(argv)
    if args.photos:
        print(json.dumps(summary(score_photos(args.photos, args.out or "reports/faces_wild", every=args.every)), indent=1))
        return 0
    if args.table:
        print((epath.Path(args.table) / "table.md").read_text() if crosscorpus_table(out_dir=args.table)
              else "nothing measured yet")
        return 0
    config = load_config(argv)
    if args.bundle:
        splits = (args.splits or ",".join(config.data.report_splits)).split(",")
        result = evaluate_bundle_tower(config, args.bundle, splits, args.out or f"reports/{args.bundle}_bundle")
    else:
        result = evaluate_run(config, fusion_npz=dict(spec.partition("=")[::2] for spec in args.fusion_npz))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
