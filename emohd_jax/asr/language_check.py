"""Which recogniser, and when its words are used: WER, speed and language ID per model, on English and Urdu speech.

    emohd asr language --root ../shared/data --out reports/asr_language

For each model (tiny.en, base) and set — RAVDESS actors 17–20 without calm (208 clips, English, two sentences),
URDU (400 clips of Urdu talk-show speech, no transcripts) and an every-7th subset of TESS (200 clips, English,
"Say the word ___") — every clip is transcribed as the predictor does it and the records keep what the
recogniser heard: the detected language and its probability, the decode's confidence, the words, WER and
TF-cosine where there is a reference, and whether `words_missing_reason` lets the words through (a clip skipped
as silence counts as missing, "no speech recognised"). summary.json holds, per model and set: the real-time
factor, WER, the fraction heard as English, the detected languages, the present fraction and the missing
reasons, the distributions the thresholds were chosen from and a sweep of the thresholds; README.md the tables.
`--from-records` recomputes the summaries from the saved records under another policy, without ASR.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import json
import os
import pathlib
import sys
from typing import Sequence

import numpy as np

from emohd_jax.asr.evaluate import evaluate_asr
from emohd_jax.asr.transcriber import Confidence, Transcript
from emohd_jax.asr.trust import NO_SPEECH, WordsPolicy, words_missing_reason
from emohd_jax.asr.whisper import MODELS
from emohd_jax.errors import CommandLineParser, UsageError
from emohd_jax.extract import Utterance

SETS = ("ravdess", "urdu", "tess")
ENGLISH = {"ravdess": True, "urdu": False, "tess": True}  # what each set's speakers speak
_SWEEP_LANGUAGE = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
_SWEEP_LOGPROB = (-1.5, -1.0, -0.8, -0.6, -0.4)


def set_utterances(root: str | os.PathLike, name: str, *, actors: Sequence[int] = range(17, 21),
                   every: int = 1) -> list[Utterance]:
    """The clips of one set under the data root, sorted (every `every`-th of URDU and TESS), with their reference
    transcript where the corpus has one."""
    root = pathlib.Path(root)
    if name == "ravdess":
        from data_pipeline.sources.ravdess import read_ravdess

        utterances, _ = read_ravdess(root / "ravdess", actors=actors, split="asr", calm="drop")
        return utterances
    if name not in ("urdu", "tess"):
        raise UsageError("--sets", f"unknown set {name!r}", f"choose from {', '.join(SETS)}")
    manifest = root / name / "manifest.csv"
    if not manifest.is_file():
        raise UsageError(manifest, "no such manifest", f"expected ROOT/{name}/manifest.csv (see the data README)")
    with open(manifest, newline="") as f:
        paths = sorted(row["path"] for row in csv.DictReader(f))
    if name == "tess":  # <SPEAKER>_<word>_<emotion>.flac: the carrier sentence is known
        return [Utterance(uid=p, dataset=name, split="asr", label=None, audio=str(root / name / p),
                          text="Say the word " + " ".join(pathlib.Path(p).stem.split("_")[1:-1]))
                for p in paths[::every]]
    return [Utterance(uid=p, dataset=name, split="asr", label=None, audio=str(root / name / p)) for p in paths[::every]]


def make_recogniser(spec: str, **options):
    """"tiny.en", "base", or "WORDS+LANGUAGE" (e.g. "tiny.en+base": words by tiny.en, language by base's gate)."""
    from emohd_jax.asr.whisper import WhisperTranscriber

    words, _, language = spec.partition("+")
    return WhisperTranscriber(words, language_id=language or None, **options)


def _transcript(record: dict) -> Transcript:
    """What the policy needs of a saved record: the words and the recogniser's numbers."""
    confidence = (None if record["avg_logprob"] is None
                  else Confidence(record["avg_logprob"], record["no_speech_prob"], windows=1))
    return Transcript.from_text(record["hypothesis"], record["audio_seconds"], language=record["language"],
                                language_probability=record["language_probability"], confidence=confidence)


def _quantiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {f"p{q:02d}": round(float(np.percentile(values, q)), 4) for q in (0, 5, 25, 50, 75, 95, 100)}


def language_summary(records: list[dict], n_skipped: int, policy: WordsPolicy) -> dict:
    """Per set: languages heard, the fraction heard as English, the words present under `policy` and the reasons
    they are missing (a skipped clip: no speech recognised), the signal distributions, a threshold sweep."""
    n = len(records) + n_skipped
    reasons = collections.Counter(words_missing_reason(_transcript(r), policy) for r in records)
    if n_skipped:
        reasons[NO_SPEECH] += n_skipped
    present = reasons.pop(None, 0)
    languages = collections.Counter(str(r["language"]) for r in records)
    english = [r for r in records if r["language"] == "en"]

    def present_under(candidate: WordsPolicy) -> float:
        return round(sum(words_missing_reason(_transcript(r), candidate) is None for r in records) / max(n, 1), 4)

    # One threshold at a time, the others at the policy's values.
    sweep = {**{f"min_language_probability={v}": present_under(dataclasses.replace(policy, min_language_probability=v))
                for v in _SWEEP_LANGUAGE},
             **{f"min_avg_logprob={v}": present_under(dataclasses.replace(policy, min_avg_logprob=v))
                for v in _SWEEP_LOGPROB}}
    return {
        "n": n, "n_skipped": n_skipped, "present_fraction": present / max(n, 1),
        "missing_reasons": dict(reasons.most_common()),
        "english_fraction": len(english) / max(len(records), 1),
        "languages": dict(languages.most_common()),
        "distributions": {
            "language_probability_when_english": _quantiles(
                [r["language_probability"] for r in english if r["language_probability"] is not None]),
            "avg_logprob": _quantiles([r["avg_logprob"] for r in records if r["avg_logprob"] is not None]),
            "no_speech_prob": _quantiles([r["no_speech_prob"] for r in records if r["no_speech_prob"] is not None]),
        },
        "present_fraction_sweep": sweep,
    }


def _markdown(results: dict, policy: WordsPolicy, command: str) -> str:
    sweep_columns = list(next(iter(results.values()))["words"]["present_fraction_sweep"])
    lines = ["# ASR: which model, and when its words are used", "", f"`{command}`", "",
             f"Policy: {policy}. Present = the words reach the text tower; a skipped (silent) clip counts as missing.",
             "", "| model | set | clips | × real time | WER % | TF-cos | heard as English % | present % | "
             "missing reasons | languages heard |", "|---|---|---|---|---|---|---|---|---|---|"]
    for key, run in results.items():
        model, name = key.split("/")
        asr, words = run["asr"], run["words"]
        wer = f"{100 * asr['wer']['corpus']:.1f}" if "wer" in asr else "–"
        cos = f"{asr['tf_cosine']['mean']:.3f}" if "tf_cosine" in asr else "–"
        speed = f"{asr['times_real_time']:.2f}" if "times_real_time" in asr else "–"
        english = "– (no language ID)" if model == "tiny.en" else f"{100 * words['english_fraction']:.1f}"
        reasons = ", ".join(f"{k} {v}" for k, v in words["missing_reasons"].items()) or "–"
        heard = ", ".join(f"{k} {v}" for k, v in list(words["languages"].items())[:6])
        lines.append(f"| {model} | {name} | {words['n']} | {speed} | {wer} | {cos} | {english} | "
                     f"{100 * words['present_fraction']:.1f} | {reasons} | {heard} |")
    lines += ["", "Present % as one threshold changes, the others at the policy's values:",
              "", "| model | set | " + " | ".join(sweep_columns) + " |", "|---|---|" + "---|" * len(sweep_columns)]
    for key, run in results.items():
        lines.append(f"| {' | '.join(key.split('/'))} | " + " | ".join(
            f"{100 * v:.1f}" for v in run["words"]["present_fraction_sweep"].values()) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict:
    parser = CommandLineParser(prog="emohd asr language", description=__doc__.strip().splitlines()[0])
    parser.add_argument("--root", required=True, help="data root holding ravdess/, urdu/, tess/")
    parser.add_argument("--out", required=True)
    parser.add_argument("--models", default=",".join([*MODELS, "tiny.en+base"]),
                        help="comma-separated: tiny.en, base, tiny.en+base (words by tiny.en, language by base)")
    parser.add_argument("--sets", default=",".join(SETS), help="comma-separated: ravdess, urdu, tess")
    parser.add_argument("--tess-every", type=int, default=7, help="every N-th TESS clip (7: 200 of 1,398)")
    parser.add_argument("--urdu-every", type=int, default=1, help="every N-th URDU clip (1: all 400)")
    parser.add_argument("--limit", type=int, default=None, help="first N clips of each set only (smoke runs)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for CTranslate2")
    parser.add_argument("--from-records", action="store_true",
                        help="summarise the records already under --out with this policy (no ASR)")
    defaults = WordsPolicy()
    parser.add_argument("--min-language-probability", type=float, default=defaults.min_language_probability)
    parser.add_argument("--min-avg-logprob", type=float, default=defaults.min_avg_logprob)
    parser.add_argument("--max-no-speech-prob", type=float, default=defaults.max_no_speech_prob)
    args = parser.parse_args(argv)
    policy = WordsPolicy(args.min_language_probability, args.min_avg_logprob, args.max_no_speech_prob)
    out = pathlib.Path(args.out)
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    from emohd_jax.measurement import machine_info

    results = {}
    transcribers = {}
    for name in args.sets.split(","):  # the models take turns on each set: both meet about the same machine load
        for model in args.models.split(","):
            saved = runs / f"{model}_{name}.json"
            if args.from_records:
                if not saved.is_file():  # a model left out of a set on purpose (e.g. a slow one on a subset)
                    continue
                run = json.loads(saved.read_text())
            else:
                if model not in transcribers:
                    transcribers[model] = make_recogniser(model, batch_size=args.batch_size, cpu_threads=args.threads)
                transcriber = transcribers[model]
                every = {"tess": args.tess_every, "urdu": args.urdu_every}.get(name, 1)
                utterances = set_utterances(args.root, name, every=every)[:args.limit]
                load_before = os.getloadavg()[0]
                records, asr = evaluate_asr(utterances, transcriber, batch_size=args.batch_size,
                                            need_reference=ENGLISH[name], policy=policy)
                asr["load_average_1m"] = {"start": load_before, "end": os.getloadavg()[0]}
                run = {"asr": asr, "records": records}
                saved.write_text(json.dumps(run, indent=0))
            run["words"] = language_summary(run["records"], run["asr"]["skips"]["n_skipped"], policy)
            results[f"{model}/{name}"] = {"asr": run["asr"], "words": run["words"]}
            print(json.dumps({f"{model}/{name}": {k: run["words"][k] for k in (
                "n", "present_fraction", "english_fraction", "missing_reasons")}}), flush=True)
    command = " ".join(["emohd asr language", *(argv if argv is not None else sys.argv[1:])])
    summary = {"command": command, "options": vars(args), "policy": dataclasses.asdict(policy), "results": results,
               "machine": machine_info()}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "README.md").write_text(_markdown(results, policy, command))
    return summary


if __name__ == "__main__":
    main()
