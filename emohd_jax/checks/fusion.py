"""Issue 17's two fusion checks over tower outputs (`emohd_jax.checks.tower_outputs`).

Inputs: one .npz per (set, modality), written by `inputs` from the shipped bundle's towers (or by any other
tower in the same format, `TowerOutputs`): probs [n, 7] in emohd_jax.classes.EMOTIONS order, labels [n],
groups [n] (speaker or dialogue: what the half split keeps together), uids [n], transcripts [n] for ASR words.

Checks (`run`), every rule of emohd_jax.fusion with and without calibration, and the stacking rule:
- real A+T, words carrying nothing: RAVDESS dev actors and TESS (one carrier sentence said in every
  emotion): fused A+T weighted F1 ≥ A − `margin_at`;
- label-paired trimodal: each dev example of one tower paired with random same-label dev examples of the
  other two (FER2013 val faces, RAVDESS voice, MELD dev words), several seeded draws: fused weighted F1 ≥
  the best single modality + `margin_paired`.
Whatever fusion learns (DR weights, temperatures, vector scaling, the stacker) is fitted on one half of each
dev set (split by group, seeded) and scored on the other half; the halves then swap, so every example is
scored once by parameters that never saw it (two-fold cross-fitting).
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Sequence

import numpy as np

from emohd_jax.checks.tower_outputs import TowerOutputs, score_utterances
from emohd_jax.classes import NUM_CLASSES
from emohd_jax.errors import BadInputError, MalformedTableError, SkipReport

TRANSCRIBE_BATCH = 8  # clips per Whisper call


def transcribe_utterances(utterances: Sequence, transcriber, skips: SkipReport,
                          cache: pathlib.Path | None = None) -> list:
    """The same utterances with `text` replaced by the recogniser's sentence (what a live system hears);
    unreadable or silent clips go to `skips`. `cache` (JSON lines uid → sentence) is appended after every
    batch and read first, so an interrupted run resumes; clips are transcribed in a seeded shuffled order, so
    the part done at any time covers every speaker and emotion. `transcriber=None`: the cached clips only."""
    import json

    from emohd_jax.audio.io import load_audio
    from tqdm import tqdm

    said: dict[str, str] = {}
    if cache is not None and cache.is_file():
        for line in cache.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:   # a line cut by an interrupted run (or one still writing)
                continue
            said[row["uid"]] = row["sentence"]
    todo = [utterances[i] for i in np.random.default_rng(0).permutation(len(utterances))
            if utterances[i].uid not in said] if transcriber is not None else []
    for start in tqdm(range(0, len(todo), TRANSCRIBE_BATCH), desc="asr", unit="batch"):
        chunk, waves = [], []
        for utterance in todo[start:start + TRANSCRIBE_BATCH]:
            try:
                waves.append(load_audio(utterance.audio))
            except BadInputError as error:
                skips.add(utterance.uid, error)
                continue
            chunk.append(utterance)
        heard = {u.uid: t.sentence for u, t in zip(chunk, transcriber.transcribe(waves) if waves else [])}
        said.update(heard)
        if cache is not None and heard:
            cache.parent.mkdir(parents=True, exist_ok=True)
            with cache.open("a", encoding="utf-8") as handle:
                handle.writelines(json.dumps({"uid": u, "sentence": t}) + "\n" for u, t in heard.items())
    return [dataclasses.replace(u, text=said[u.uid]) for u in utterances if u.uid in said]


def write_inputs(config, *, overwrite: bool = False, cached_asr: bool = False) -> dict[str, str]:
    """`inputs`: the shipped bundle's three towers on the checks' six (set, modality) pairs → config.inputs.
    `cached_asr`: ASR words from the clips already transcribed (a long run still going), no new transcription."""
    import ml_collections

    from data_pipeline.prepare import read_source
    from emohd_jax.bundle import load_bundle

    bundle = load_bundle(config.bundle or None)
    root = config.data.root
    todo = {name: path for name, path in config.inputs.items() if overwrite or not pathlib.Path(path).is_file()}
    if not todo:
        return {}
    skips = SkipReport()
    transcriber = None

    def source(**data):
        utterances, read_skips = read_source(ml_collections.ConfigDict({"root": root, **data}), data["split"])
        skips.extend(read_skips)
        return utterances

    def heard(utterances, name):
        nonlocal transcriber
        if transcriber is None and not cached_asr:
            from emohd_jax.asr.whisper import WhisperTranscriber

            transcriber = WhisperTranscriber()
        cache = pathlib.Path(config.inputs[name]).with_suffix(".transcripts.jsonl")
        return transcribe_utterances(utterances, transcriber, skips, cache)

    ravdess = dict(dataset="ravdess", split="dev", actors={"dev": config.data.ravdess_actors}, calm="drop")
    tess = dict(dataset="tess", split="tess")  # the adapter's uids, as the voice tower's own npz files have them
    makers = {
        "fer_visual": lambda: score_utterances(bundle.towers["visual"], source(dataset="fer2013", split="val",
                                                                                label_map=""), skips=skips),
        "meld_text": lambda: score_utterances(bundle.towers["text"], source(dataset="meld", split="dev"),
                                              skips=skips),
        "ravdess_audio": lambda: score_utterances(bundle.towers["audio"], source(**ravdess), skips=skips),
        "ravdess_text": lambda: with_transcripts(bundle.towers["text"], heard(source(**ravdess), "ravdess_text"),
                                                 skips),
        "tess_audio": lambda: score_utterances(bundle.towers["audio"], source(**tess), skips=skips),
        "tess_text": lambda: with_transcripts(bundle.towers["text"], heard(source(**tess), "tess_text"), skips),
    }
    written = {}
    for name, path in todo.items():
        outputs = makers[name]()
        outputs.save(path)
        written[name] = str(path)
        print(f"{name}: {len(outputs.labels)} clips → {path}", flush=True)
    if len(skips):
        print(f"skipped {len(skips)}: {skips.to_json()['by_kind']}")
    return written


def with_transcripts(tower, utterances: Sequence, skips: SkipReport) -> TowerOutputs:
    """The words tower on transcribed utterances, keeping each clip's transcript (an empty one is a skip)."""
    outputs = score_utterances(tower, utterances, skips=skips)
    said = {u.uid: u.text for u in utterances}
    return dataclasses.replace(outputs, transcripts=np.asarray([said[u] for u in outputs.uids]))




# ---- the half split and the label pairing ---------------------------------------------------------

def half_split(groups: np.ndarray, seed: int) -> np.ndarray:
    """half [n] ∈ {0, 1}: whole groups (speakers, dialogues), in a seeded shuffled order, each to the half
    with fewer rows so far — no group is ever in both halves."""
    names, counts = np.unique(groups, return_counts=True)
    sizes = [0, 0]
    half_of = {}
    for k in np.random.default_rng(seed).permutation(len(names)):
        half = int(sizes[1] < sizes[0])
        half_of[names[k]] = half
        sizes[half] += counts[k]
    return np.asarray([half_of[g] for g in groups], np.int32)


def label_pairs(labels: Sequence[np.ndarray], anchor: int, rng: np.random.Generator) -> np.ndarray:
    """rows [n_anchor, tower]: each row of tower `anchor` (itself in its column) with a random row of the same
    label from every other tower (drawn with replacement); −1 where a tower has no row of that label."""
    rows = np.full((len(labels[anchor]), len(labels)), -1)
    rows[:, anchor] = np.arange(len(labels[anchor]))
    for tower, tower_labels in enumerate(labels):
        if tower == anchor:
            continue
        for label in np.unique(labels[anchor]):
            pool = np.flatnonzero(tower_labels == label)
            need = labels[anchor] == label
            if len(pool):
                rows[need, tower] = rng.choice(pool, need.sum())
    return rows


def paired_rows(dev: Sequence[TowerOutputs], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Every example of every dev set as an anchor, label-paired (`label_pairs`) → probs [n, tower, class] and
    labels [n]; an anchor whose label some tower lacks is left out."""
    labels = [d.labels for d in dev]
    probs, out_labels = [], []
    for anchor in range(len(dev)):
        rows = label_pairs(labels, anchor, rng)
        rows = rows[(rows >= 0).all(axis=1)]
        probs.append(np.stack([dev[t].probs[rows[:, t]] for t in range(len(dev))], axis=1))
        out_labels.append(labels[anchor][rows[:, anchor]])
    return np.concatenate(probs), np.concatenate(out_labels)


def subset(outputs: TowerOutputs, keep: np.ndarray) -> TowerOutputs:
    return TowerOutputs(outputs.probs[keep], outputs.labels[keep], outputs.groups[keep], outputs.uids[keep],
                        None if outputs.transcripts is None else outputs.transcripts[keep])


def aligned(audio: TowerOutputs, text: TowerOutputs) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Real A+T rows, the voice clips the words file also holds (matched by uid; a clip ASR heard nothing in
    is not there): probs [n, modality, class] (visual absent), present [n, modality], labels [n], voice rows [n]."""
    index = {u: i for i, u in enumerate(text.uids)}
    rows = np.asarray([i for i, u in enumerate(audio.uids) if u in index], int)
    words = np.asarray([index[u] for u in audio.uids[rows]], int)
    if np.any(text.labels[words] != audio.labels[rows]):
        bad = audio.uids[rows][text.labels[words] != audio.labels[rows]][0]
        raise MalformedTableError(bad, "its label differs between the voice and the words file")
    probs = np.full((len(rows), 3, NUM_CLASSES), 1.0 / NUM_CLASSES, np.float32)
    probs[:, 1], probs[:, 2] = audio.probs[rows], text.probs[words]
    present = np.zeros((len(rows), 3), bool)
    present[:, 1:] = True
    return probs, present, audio.labels[rows], rows


# ---- fitting on one half, scoring the other -------------------------------------------------------

CALIBRATIONS = ("raw", "temperature", "vector")


def fitted_rules(dev: Sequence[TowerOutputs], reals: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], config,
                 fold: int) -> dict:
    """Every rule × calibration fitted on `dev` (the fit halves of the face, voice and words dev sets, in
    fusion.MODALITIES order) → {"rule/calibration": FusionParams}. The stack rule is fitted on label-paired
    rows of those halves ('(paired only)'), and also on the real A+T rows reals[0] (probs, present, labels of
    the voice dev half) with the loss share `config.real_share`; '(words capped)' then believes the words
    only as far as they cost the voice nothing on those real rows (`capped_words`). The argmax-preserving
    stacks ('stack/temperature scalar', '… scalar+class', '… margin', '… evidence', `fusion.fit_scalar_stack`)
    are fitted on the paired rows and every real A+T fit half in `reals` (RAVDESS and TESS), which share
    `config.real_share` equally; their '(words capped)' forms are capped on every real fit half."""
    import jax.numpy as jnp

    from emohd_jax import fusion

    modality = np.concatenate([np.full(len(d.labels), m) for m, d in enumerate(dev)])
    stacked = np.full((len(modality), len(dev), NUM_CLASSES), 1.0 / NUM_CLASSES, np.float32)
    stacked[np.arange(len(modality)), modality] = np.concatenate([d.probs for d in dev])
    present = np.eye(len(dev), dtype=bool)[modality]
    labels = np.concatenate([d.labels for d in dev])
    out = {}
    for calibration in CALIBRATIONS:
        params = fusion.fit_fusion(jnp.asarray(stacked), jnp.asarray(present), jnp.asarray(labels),
                                   calibrated=False if calibration == "raw" else calibration)
        for rule in fusion.RULES:
            out[f"{rule}/{calibration}"] = params.replace(rule=rule)
    paired = [paired_rows(dev, np.random.default_rng([config.seed, fold, 100 + d])) for d in range(config.fit_draws)]
    probs = np.concatenate([p for p, _ in paired])
    paired_labels = np.concatenate([y for _, y in paired])
    everything = np.ones(probs.shape[:2], bool)
    priors = np.stack([np.bincount(d.labels, minlength=NUM_CLASSES) / len(d.labels) for d in dev])
    fit = dict(dev_priors=priors, seed=config.seed + fold, dropout=config.dropout, l2=config.stack_l2)
    vector = out["paper/vector"]
    out["stack/vector (paired only)"] = fusion.with_stack(vector, probs, everything, paired_labels, **fit)
    real_probs, real_present, real_labels = reals[0]
    stack = fusion.with_stack(
        vector, np.concatenate([probs, real_probs]), np.concatenate([everything, real_present]),
        np.concatenate([paired_labels, real_labels]), **fit,
        sources=np.repeat([0, 1], [len(paired_labels), len(real_labels)]),
        source_shares=(1 - config.real_share, config.real_share))
    out["stack/vector"] = stack
    out["stack/vector (words capped)"] = capped_words(stack, reals[:1], config.belief_grid)
    every = [(probs, everything, paired_labels), *reals]
    both = dict(seed=config.seed + fold, dropout=config.dropout, l2=config.scalar_l2, class_l2=config.class_l2,
                sources=np.repeat(np.arange(len(every)), [len(y) for _, _, y in every]),
                source_shares=(1 - config.real_share, *[config.real_share / len(reals)] * len(reals)))
    rows = [np.concatenate(parts) for parts in zip(*every)]
    for weighting in ("scalar", "scalar+class", "margin", "evidence"):
        out[f"stack/temperature {weighting}"] = fusion.with_stack(out["paper/temperature"], *rows,
                                                                   weighting=weighting, **both,
                                                                   dev_probs=stacked, dev_present=present)
    out["stack/temperature evidence (no joint)"] = fusion.with_stack(
        out["paper/temperature"], *rows, weighting="evidence", **both, dev_probs=stacked, dev_present=present,
        joint=False)
    positive = [factor for factor in config.belief_grid if factor > 0]   # words alone keep their argmax
    for name in ("scalar", "evidence", "evidence (no joint)"):
        out[f"stack/temperature {name} (words capped)"] = capped_words(out[f"stack/temperature {name}"],
                                                                       reals, positive)
    return out


def capped_words(params, reals: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], grid: Sequence[float]):
    """The stack rule with the words believed by the largest factor of `grid` at which they overturn none of
    the voice tower's right decisions on the real A+T row sets `reals` (fit halves), else the smallest. Not
    "weighted F1 no lower": on a few hundred clips a words-driven gain on some clips hides losses on others,
    and those losses are what the real A+T check then finds on the other half (−0.96 on RAVDESS 17–20)."""
    from emohd_jax import fusion

    def costs_nothing(capped) -> bool:
        return not any(np.any((probs[:, 1].argmax(-1) == labels) & (decisions(capped, probs, present) != labels))
                       for probs, present, labels in reals)

    for factor in sorted(grid, reverse=True):
        capped = fusion.scale_belief(params, 2, factor)
        if costs_nothing(capped):
            return capped
    return fusion.scale_belief(params, 2, min(grid))


def decisions(params, probs: np.ndarray, present: np.ndarray) -> np.ndarray:
    import jax.numpy as jnp

    from emohd_jax import fusion

    return np.asarray(fusion.fuse_with(params, jnp.asarray(probs), jnp.asarray(present))[0])


def run_checks(config) -> dict:
    """`run`: both checks for every rule (two-fold cross-fitting) → report_dir/{fusion_checks.json, .md, .png}."""
    from emohd_jax import metrics as metrics_lib

    inputs = {name: TowerOutputs.load(path) for name, path in config.inputs.items()}
    dev_names = ("fer_visual", "ravdess_audio", "meld_text")   # fusion.MODALITIES order
    halves = {name: half_split(inputs[name].groups, config.seed) for name in dev_names}
    real_sets = {"ravdess": ("ravdess_audio", "ravdess_text"), "tess": ("tess_audio", "tess_text")}
    real, real_halves, real_clips = {}, {}, {}
    for name, (audio, text) in real_sets.items():
        probs, present, labels, rows = aligned(inputs[audio], inputs[text])
        real[name] = probs, present, labels
        groups = inputs[audio].groups
        # RAVDESS: the voice dev set's own halves; TESS (no tower fitted on it): its speakers, split alike.
        real_halves[name] = (halves["ravdess_audio"] if name == "ravdess" else half_split(groups, config.seed))[rows]
        real_clips[name] = len(inputs[audio].uids)
    at_decisions: dict[str, dict[str, np.ndarray]] = {name: {} for name in real}
    paired_truth = [[] for _ in range(config.draws)]
    paired_decisions: list[dict[str, list]] = [{} for _ in range(config.draws)]
    paired_singles = [[] for _ in range(config.draws)]
    rules = None
    for fold in (0, 1):
        fit = [subset(inputs[n], halves[n] == fold) for n in dev_names]
        test = [subset(inputs[n], halves[n] != fold) for n in dev_names]
        real_fit = [tuple(a[real_halves[name] == fold] for a in real[name]) for name in real]  # RAVDESS first
        params = fitted_rules(fit, real_fit, config, fold)
        rules = rules or list(params)
        # Everything this fold scores, in one batch per rule (one compile each): real A+T, then the draws.
        blocks = [(probs[real_halves[name] != fold], present[real_halves[name] != fold])
                  for name, (probs, present, _) in real.items()]
        for draw in range(config.draws):
            probs, labels = paired_rows(test, np.random.default_rng([config.seed, fold, draw]))
            paired_truth[draw].append(labels)
            paired_singles[draw].append(probs.argmax(-1))
            blocks.append((probs, np.ones(probs.shape[:2], bool)))
        ends = np.cumsum([len(b[0]) for b in blocks])[:-1]
        all_probs, all_present = (np.concatenate(parts) for parts in zip(*blocks))
        for rule, p in params.items():
            parts = np.split(decisions(p, all_probs, all_present), ends)
            for name, part in zip(real, parts):
                at_decisions[name].setdefault(rule, np.full(len(real[name][2]), -1))[real_halves[name] != fold] = part
            for draw, part in enumerate(parts[len(real):]):
                paired_decisions[draw].setdefault(rule, []).append(part)

    def f1(labels, decided):
        return metrics_lib.classification_metrics(labels, decided)["weighted_f1"]

    from emohd_jax.run_config import shown_path

    summary = {"inputs": {name: shown_path(path) for name, path in config.inputs.items()}, "seed": config.seed, "draws": config.draws,
               "margin_at": config.margin_at, "margin_paired": config.margin_paired, "real_at": {}, "paired": {}}
    for name, (probs, present, labels) in real.items():
        alone = {"A": f1(labels, probs[:, 1].argmax(-1)), "T": f1(labels, probs[:, 2].argmax(-1)),
                 "voice_clips": real_clips[name]}
        fused = {rule: f1(labels, d) for rule, d in at_decisions[name].items()}
        summary["real_at"][name] = {
            "n": int(len(labels)), **alone, "A+T": fused,
            "pass": {rule: bool(v >= alone["A"] - config.margin_at) for rule, v in fused.items()}}
    singles = np.asarray([[f1(np.concatenate(paired_truth[d]), np.concatenate(paired_singles[d])[:, m])
                           for m in range(3)] for d in range(config.draws)])            # [draw, modality]
    best = singles.max(axis=1)                                                             # [draw]
    fused = {rule: np.asarray([f1(np.concatenate(paired_truth[d]), np.concatenate(paired_decisions[d][rule]))
                               for d in range(config.draws)]) for rule in rules}
    summary["paired"] = {
        "n": int(np.mean([len(np.concatenate(t)) for t in paired_truth])),
        "single": {m: float(singles[:, i].mean()) for i, m in enumerate(("V", "A", "T"))},
        "best_single": float(best.mean()),
        "fused": {rule: {"mean": float(v.mean()), "std": float(v.std()), "min_margin": float((v - best).min())}
                  for rule, v in fused.items()},
        "pass": {rule: bool((v - best).mean() >= config.margin_paired) for rule, v in fused.items()}}
    summary["both_pass"] = {rule: all(summary["real_at"][s]["pass"][rule] for s in real)
                            and summary["paired"]["pass"][rule] for rule in rules}
    summary["default_rule"] = config.default_rule
    write_report(summary, pathlib.Path(config.report_dir))
    return summary


def fit_for_bundle(config) -> dict:
    """`fit`: `config.default_rule` fitted on the whole of each dev set (and all real A+T rows, RAVDESS dev
    actors and TESS), as the bundle's `fusion` entry (`fusion.to_json`) → report_dir/fusion_params.json."""
    import json

    from emohd_jax import fusion

    inputs = {name: TowerOutputs.load(path) for name, path in config.inputs.items()}
    dev = [inputs[n] for n in ("fer_visual", "ravdess_audio", "meld_text")]
    reals = [aligned(inputs[f"{name}_audio"], inputs[f"{name}_text"])[:3] for name in ("ravdess", "tess")]
    entry = fusion.to_json(fitted_rules(dev, reals, config, fold=0)[config.default_rule])
    out = pathlib.Path(config.report_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fusion_params.json").write_text(json.dumps({"rule_name": config.default_rule, "fusion": entry}, indent=1))
    print(f"wrote {out / 'fusion_params.json'}")
    return entry


def markdown(summary: dict) -> str:
    """Both checks, every rule, pass/fail, as tables."""
    real, paired = summary["real_at"], summary["paired"]
    rules = list(paired["fused"])
    lines = ["# Fusion checks (issue 17)", "",
             f"Inputs: {', '.join(f'`{k}` = `{pathlib.Path(v).name}`' for k, v in summary['inputs'].items())}. "
             "Fitted on one half of each dev set (split by speaker / dialogue), scored on the other, halves "
             f"swapped (two-fold cross-fitting); seed {summary['seed']}.", "",
             f"## Real A+T, words carrying nothing: fused ≥ A − {summary['margin_at']} (weighted F1, %)", "",
             "| rule / calibration | " + " | ".join(f"{s} A+T | {s} Δ vs A" for s in real) + " | pass |",
             "|---|" + "---|---|" * len(real) + "---|"]
    lines.append("| tower alone | " + " | ".join(
        f"A {r['A']:.2f}, T {r['T']:.2f} | — " for r in real.values()) + "| |")
    for rule in rules:
        cells = " | ".join(f"{r['A+T'][rule]:.2f} | {r['A+T'][rule] - r['A']:+.2f}" for r in real.values())
        ok = all(r["pass"][rule] for r in real.values())
        lines.append(f"| {rule} | {cells} | {'pass' if ok else 'FAIL'} |")
    lines += ["", "Rows: " + ", ".join(f"{s} {r['n']} of {r['voice_clips']} voice clips" for s, r in real.items())
              + " (the clips whose words file holds a transcript)."]
    single = paired["single"]
    lines += ["", f"## Label-paired trimodal dev check: fused ≥ best single + {summary['margin_paired']} "
                  f"(weighted F1, %, mean of {summary['draws']} draws, ≈{paired['n']} rows each)", "",
              f"Towers alone: V {single['V']:.2f}, A {single['A']:.2f}, T {single['T']:.2f}; best "
              f"{paired['best_single']:.2f}.", "",
              "| rule / calibration | V+A+T | ± std | Δ vs best | worst draw Δ | pass | both checks |",
              "|---|---|---|---|---|---|---|"]
    for rule in rules:
        f = paired["fused"][rule]
        lines.append(f"| {rule} | {f['mean']:.2f} | {f['std']:.2f} | {f['mean'] - paired['best_single']:+.2f} | "
                     f"{f['min_margin']:+.2f} | {'pass' if paired['pass'][rule] else 'FAIL'} | "
                     f"{'**pass**' if summary['both_pass'][rule] else 'fail'} |")
    default = summary["default_rule"]
    passing = [rule for rule, ok in summary["both_pass"].items() if ok]
    lines += ["", f"Shipped default named by the config: `{default}` — "
                  + ("passes both checks." if summary["both_pass"].get(default) else "does NOT pass both checks.")
                  + f" Rules passing both: {', '.join(f'`{r}`' for r in passing) or 'none'}."]
    return "\n".join(lines) + "\n"


def write_report(summary: dict, out: pathlib.Path) -> None:
    """fusion_checks.json, fusion_checks.md and fusion_checks.png (each rule's margin on each check)."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "fusion_checks.json").write_text(json.dumps(summary, indent=1))
    text = markdown(summary)
    (out / "fusion_checks.md").write_text(text)
    rules = list(summary["paired"]["fused"])
    panels = [(f"{s}: A+T − A", [r["A+T"][k] - r["A"] for k in rules], -summary["margin_at"])
              for s, r in summary["real_at"].items()]
    panels.append(("label-paired: V+A+T − best single",
                   [summary["paired"]["fused"][k]["mean"] - summary["paired"]["best_single"] for k in rules],
                   summary["margin_paired"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 0.45 * len(rules) + 1.5), sharey=True)
    for ax, (title, values, threshold) in zip(axes, panels):
        ax.barh(range(len(rules)), values, color=["tab:green" if v >= threshold else "tab:red" for v in values])
        ax.axvline(threshold, color="k", linestyle="--", linewidth=1)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("weighted F1 points")
    axes[0].set_yticks(range(len(rules)), rules, fontsize=8)
    axes[0].invert_yaxis()
    fig.tight_layout()
    fig.savefig(out / "fusion_checks.png", dpi=110)
    plt.close(fig)
    print(text)
    print(f"wrote {out / 'fusion_checks.json'}")

def main(argv: Sequence[str] | None = None) -> dict:
    """`python -m emohd_jax.checks.fusion {inputs,run,fit} --config fusion_checks [--config.x=y ...]`."""
    import sys

    from emohd_jax.run_config import emohd_home, load_config

    from emohd_jax.errors import CommandLineParser

    parser = CommandLineParser(prog="emohd check fusion", description=__doc__.splitlines()[0],
                               epilog="Config fields follow as --config fusion_checks [--config.x=y ...].")
    parser.add_argument("step", choices=("inputs", "run", "fit"),
                        help="inputs: tower outputs as npz; run: both checks; fit: the bundle's fusion entry")
    parser.add_argument("--overwrite", action="store_true", help="inputs: recompute existing npz files")
    parser.add_argument("--cached-asr", action="store_true", help="inputs: only what ASR has transcribed already")
    args, rest = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    command = args.step
    config = load_config(rest)
    with config.unlocked():
        for name, path in config.inputs.items():
            config.inputs[name] = str(emohd_home() / path) if not pathlib.Path(path).is_absolute() else path
    if command == "inputs":
        return write_inputs(config, overwrite=args.overwrite, cached_asr=args.cached_asr)
    return run_checks(config) if command == "run" else fit_for_bundle(config)


if __name__ == "__main__":
    main()
