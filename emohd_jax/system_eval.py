"""System evaluation (the paper's Tables 2/3): every utterance of a labelled set through the whole system.

Each utterance goes through the same `Predictor` as `emohd predict` (one utterance per dataset item, their
tower calls batched across items), then per-class F1, weighted F1, accuracy and macro F1 are computed for
V, A, T, V+A, A+T, V+A+T under each fusion rule, with and without temperature calibration. The DR weights
and temperatures are the bundle's, fitted on the towers' dev sets — never on the set evaluated here. `transcripts`: 'asr' (what a
live system hears), 'subtitles' (the dataset's own text), or both. A column's metrics cover the
utterances where at least one of its modalities is present (`coverage` says how many).
Scores and fusion read the Predictions' arrays (full precision), not the rounded JSON.
With `meld_sub`, every table is also computed on MELD-sub (SPEC §6): the utterances whose sampled
frames mostly show at most one confident face (`emohd_jax.vision.faces.meld_sub_keep`, thresholds in config).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Sequence

import jax.numpy as jnp
import numpy as np
from etils import epath
from tqdm import tqdm

from emohd_jax import fusion, metrics as metrics_lib
from emohd_jax.classes import EMOTIONS
from emohd_jax.errors import BadInputError, SkipReport
from emohd_jax.run_config import shown_path
from emohd_jax.serve.prediction import Prediction


def utterance_probs(predictions: list[Prediction]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predictions (one utterance each) → probs [n, modality, class], present [n, modality] and each
    tower's own decision [n, modality] (−1 when absent; the face tower's is its majority vote)."""
    for p in predictions:
        if p.num_utterances != 1:
            raise ValueError(f"{p.input}: {p.num_utterances} utterances; system-eval scores one per item")
    return (np.concatenate([p.probs for p in predictions]), np.concatenate([p.present for p in predictions]),
            np.concatenate([p.decisions for p in predictions]))


def ablation(probs: np.ndarray, present: np.ndarray, decisions: np.ndarray, labels: np.ndarray,
             params: fusion.FusionParams, modalities: tuple[str, ...]) -> dict:
    """{calibration: {rule: {column: metrics + coverage}}} for every modality subset (V, A, …, V+A+T).

    A single-modality column is that tower alone (its own decision, as in the paper's V/A/T columns);
    DR weights would otherwise re-rank one tower's classes. A column with a modality that no utterance
    of the set has (V on audio-only RAVDESS) is left out rather than shown as a copy of another.
    """
    table = {}
    for calibration in ("raw", "calibrated"):
        temperatures = params.temperatures if calibration == "calibrated" else jnp.ones_like(params.temperatures)
        table[calibration] = {}
        for rule in dict.fromkeys((*fusion.RULES, params.rule)):  # the paper's rules and the bundle's own
            chosen = dataclasses.replace(params, rule=rule, temperatures=temperatures)
            table[calibration][rule] = {}
            for column, subset in fusion.modality_subsets(modalities).items():
                if not all(present[:, m].any() for m in subset):
                    continue
                if len(subset) == 1:
                    decision = decisions[:, subset[0]]
                else:
                    mask = np.zeros(len(modalities), bool)
                    mask[list(subset)] = True
                    decision, _ = fusion.fuse_with(chosen, jnp.asarray(probs), jnp.asarray(present & mask))
                    decision = np.asarray(decision)
                decided = decision >= 0
                if not decided.any():
                    continue
                result = metrics_lib.classification_metrics(labels[decided], decision[decided])
                table[calibration][rule][column] = {**result, "coverage": int(decided.sum()), "of": int(len(labels))}
    return table


def meld_sub_mask(frame_face_probs: Sequence[Sequence[np.ndarray]], options) -> np.ndarray:
    """keep [n]: SPEC §6's one-person-on-screen filter, from each utterance's detector probabilities per
    sampled frame ([frames] each [faces], `Prediction.frame_face_probs`)."""
    from emohd_jax.vision.faces import Detections, meld_sub_keep

    def detections(face_probs: np.ndarray) -> Detections:
        n = len(face_probs)
        return Detections(np.zeros((n, 4), np.float32), np.asarray(face_probs, np.float32),
                          np.zeros((n, 5, 2), np.float32))

    return np.asarray([meld_sub_keep([detections(f) for f in frames], min_prob=options.min_prob,
                                     max_faces=options.max_faces, min_fraction=options.min_fraction)
                       for frames in frame_face_probs], bool)


def markdown(table: dict, rule: str, calibration: str, title: str) -> str:
    """The paper's layout: per-class F1 per column for one rule, then weighted F1 of every rule and calibration."""
    columns = list(table[calibration][rule])
    lines = [f"# {title}", "", f"Per-class F1 (%), rule `{rule}`, {calibration}:", "",
             "| class | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name in EMOTIONS:
        row = [table[calibration][rule][c]["per_class"][name]["f1"] for c in columns]
        lines.append(f"| {name} | " + " | ".join(f"{v:.2f}" for v in row) + " |")
    lines.append("| **weighted** | " + " | ".join(f"{table[calibration][rule][c]['weighted_f1']:.2f}"
                                                 for c in columns) + " |")
    lines.append("| coverage | " + " | ".join(f"{table[calibration][rule][c]['coverage']}/"
                                             f"{table[calibration][rule][c]['of']}" for c in columns) + " |")
    lines += ["", "Weighted F1 (%) of every rule:", "", "| rule | calibration | " + " | ".join(columns) + " |",
              "|---|---" + "|---" * len(columns) + "|"]
    for cal in table:
        for r in table[cal]:
            lines.append(f"| {r} | {cal} | " + " | ".join(
                f"{table[cal][r][c]['weighted_f1']:.2f}" if c in table[cal][r] else "—" for c in columns) + " |")
    return "\n".join(lines) + "\n"


def evaluate_system(config) -> dict:
    """`emohd system-eval --config configs/system_eval.py[:variant]` → report_dir/{system.json, system.md, PNGs}."""
    from data_pipeline.prepare import read_source
    from emohd_jax.bundle import load_bundle
    from emohd_jax.serve.predictor import Predictor
    from emohd_jax.reports import plot_confusion

    bundle = load_bundle(config.bundle or None)
    predictor = Predictor(bundle, max_utterance_s=float("inf"))
    modalities = predictor.modalities
    utterances, skips = read_source(config.data, config.data.split)
    skips = SkipReport(skips.skips)
    report_dir = epath.Path(config.report_dir)  # local or gs://
    report_dir.mkdir(parents=True, exist_ok=True)
    summary = {"dataset": config.data.dataset, "split": config.data.split, "bundle": shown_path(str(bundle.path)),
               "fusion_fitted_on": {m: t["dev"]["dataset"] + " " + t["dev"]["split"]
                                    for m, t in bundle.manifest["towers"].items()}}
    for source in config.transcripts:
        items, inputs = [], []
        for utt in utterances:
            media = utt.video or utt.audio
            media = media if media and epath.Path(media).is_file() else None
            if media is None and source == "asr":
                skips.add(utt.uid, BadInputError(utt.video or utt.uid, "no media file to transcribe"))
                continue
            items.append(utt)
            inputs.append((media, utt.text if source == "subtitles" else None))
        results, labels = [], []
        outcomes = predictor.predict_many(inputs)
        for utt, outcome in tqdm(zip(items, outcomes), total=len(items), desc=f"system-eval {source}", unit="utt"):
            if isinstance(outcome, BadInputError):
                skips.add(utt.uid, outcome)
                continue
            results.append(outcome)
            labels.append(utt.label)
        if not results:
            raise ValueError(f"{config.data.dataset} {config.data.split}: no utterance could be evaluated "
                             f"({len(skips)} skipped)")
        probs, present, decisions = utterance_probs(results)
        labels = np.asarray(labels)
        subsets = {source: np.ones(len(results), bool)}
        if config.get("meld_sub"):
            subsets[f"{source}_meld_sub"] = meld_sub_mask([r.frame_face_probs for r in results], config.meld_sub)
        for name, keep in subsets.items():
            if not keep.any():
                summary[name] = "no utterance passes the filter"
                continue
            table = ablation(probs[keep], present[keep], decisions[keep], labels[keep], bundle.fusion, modalities)
            summary[name] = table
            rule, calibration = bundle.fusion.rule, config.calibration
            (report_dir / f"system_{name}.md").write_text(markdown(
                table, rule, calibration, f"{config.data.dataset} {config.data.split}, {name.replace('_', ' ')}: "
                                          f"{int(keep.sum())} utterances"))
            for column, result in table[calibration][rule].items():
                plot_confusion(np.asarray(result["confusion"]), report_dir / f"confusion_{name}_{column}.png",
                               title=f"{column} ({rule}, {calibration}, {name})")
        (report_dir / f"transcripts_{source}.json").write_text(json.dumps(
            [{"input": r.input, "transcript": r.transcripts[0]} for r in results], indent=0))
    summary["skips"] = skips.to_json()
    (report_dir / "system.json").write_text(json.dumps(summary, indent=1))
    for markdown_path in sorted(report_dir.glob("system_*.md")):
        print(markdown_path.read_text())
    print(f"wrote {report_dir / 'system.json'} ({len(skips)} skipped)")
    return summary
