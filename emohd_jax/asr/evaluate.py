"""ASR against a dataset's own transcripts (SPEC §4.2): per-utterance records, a summary, a cosine histogram.

    emohd asr eval --root ../shared/data --actors 17-20 --out reports/ravdess_asr

Silent media (digital silence, peaks below the silence threshold, or sound in which the voice activity detector
finds no speech) are skipped with kind "silence": they have no words to score, and counting them as cosine 0
would drag the mean down and inflate the real-time factor. Every skip (a badly named file, unreadable media,
silence) is counted and listed with its reason, on the console and in summary.json.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import time
from typing import Sequence

import numpy as np
from etils import epath
from tqdm import tqdm

from emohd_jax.extract import Utterance
from emohd_jax.asr.similarity import summarize, tf_cosine, word_error_rate
from emohd_jax.asr.backends import make_transcriber
from emohd_jax.asr.transcriber import Transcriber, Transcript
from emohd_jax.asr.trust import WordsPolicy, words_missing_reason
from emohd_jax.asr.whisper import DEFAULT_MODEL, speech_stretches
from emohd_jax.audio.io import check_not_silent, load_audio
from emohd_jax.errors import (BadInputError, CommandLineParser, EmptyTranscriptError, NoAudioTrackError, SilenceError,
                              Skip, SkipReport)
from emohd_jax.text.normalize import word_tokens


def evaluate_asr(utterances: Sequence[Utterance], transcriber: Transcriber, *, batch_size: int = 16,
                 need_reference: bool = True, policy: WordsPolicy = WordsPolicy()) -> tuple[list[dict], dict]:
    """Transcribe every utterance's audio and compare with its `text`; bad media become skip entries.

    Each record also carries what the recogniser heard (language, its probability, the decode's confidence) and
    `words_missing_reason` under `policy`. `need_reference=False` keeps utterances without a transcript (a corpus
    in another language): they are listened to, not scored."""
    records: list[dict] = []
    skips = SkipReport()
    asr_seconds = decode_seconds = 0.0
    with tqdm(total=len(utterances), desc="asr", unit="utt") as progress:
        for start in range(0, len(utterances), batch_size):
            batch = utterances[start:start + batch_size]
            loaded: list[tuple[Utterance, np.ndarray]] = []  # (utterance, wave: [samples])
            t0 = time.perf_counter()
            for utterance in batch:
                media = utterance.audio or utterance.video
                try:
                    if media is None:
                        raise NoAudioTrackError(utterance.uid, "the utterance has no audio or video file")
                    if need_reference and not utterance.text:
                        raise EmptyTranscriptError(media or utterance.uid, "no reference transcript to compare with")
                    wave = load_audio(media)
                    check_not_silent(wave, media)  # silence has no words to score: skipped, not cosine 0
                    if not speech_stretches(wave):  # noise or hum above the threshold: no words to score either
                        raise SilenceError(media, "no speech found by the voice activity detector")
                    loaded.append((utterance, wave))
                except BadInputError as error:
                    skips.add(utterance.uid, error)
            t1 = time.perf_counter()
            transcripts = transcriber.transcribe([wave for _, wave in loaded]) if loaded else []
            decode_seconds += t1 - t0
            asr_seconds += time.perf_counter() - t1
            for (utterance, _), transcript in zip(loaded, transcripts, strict=True):
                records.append(_compare(utterance, transcript, policy))
            progress.update(len(batch))
    summary = summarize(records, asr_seconds=asr_seconds)
    summary["decode_seconds"] = decode_seconds
    summary["skips"] = skips.to_json()
    return records, summary


def _compare(utterance: Utterance, transcript: Transcript, policy: WordsPolicy) -> dict:
    confidence = transcript.confidence
    record = {
        "uid": utterance.uid, "media": utterance.audio or utterance.video,
        "reference": utterance.text, "hypothesis": transcript.sentence, "audio_seconds": transcript.seconds,
        "language": transcript.language, "language_probability": transcript.language_probability,
        "avg_logprob": confidence.avg_logprob if confidence else None,
        "no_speech_prob": confidence.no_speech_prob if confidence else None,
        "words_missing_reason": words_missing_reason(transcript, policy),
    }
    if utterance.text:
        reference = word_tokens(utterance.text)
        record.update(tf_cosine=tf_cosine(transcript.words, reference), n_ref_words=len(reference),
                      wer=word_error_rate(reference, transcript.words))
    return record


def write_reports(out_dir: str | os.PathLike, records: list[dict], summary: dict) -> None:
    """summary.json, per_utterance.jsonl and tf_cosine_hist.png under `out_dir` (local or gs://, etils.epath)."""
    out = epath.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    with (out / "per_utterance.jsonl").open("w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    if summary.get("n_scored"):
        _plot_histogram(out / "tf_cosine_hist.png", summary)


def _plot_histogram(path: epath.Path, summary: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    histogram = summary["tf_cosine"]["histogram"]
    edges, counts = histogram["edges"], histogram["counts"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(edges[:-1], counts, width=[b - a for a, b in zip(edges[:-1], edges[1:])], align="edge",
           edgecolor="black")
    ax.set_xlabel("TF-cosine, ASR vs reference transcript")
    ax.set_ylabel("utterances")
    ax.set_title(f"{summary.get('dataset', '')} n={summary['n']}  mean={summary['tf_cosine']['mean']:.3f}  "
                 f"WER={100 * summary['wer']['corpus']:.1f}%")
    fig.tight_layout()
    with path.open("wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)


def _ravdess_utterances(root: str, actors: list[int]) -> tuple[list[Utterance], SkipReport]:
    """Every clip of the actors, calm included (merged, not dropped): ASR does not care about the emotion."""
    from data_pipeline.sources.ravdess import read_ravdess

    return read_ravdess(pathlib.Path(root) / "ravdess", actors=actors, split="asr", calm="neutral")


def main(argv: Sequence[str] | None = None) -> dict:
    parser = CommandLineParser(prog="emohd asr eval", description=__doc__.strip().splitlines()[0])
    parser.add_argument("--root", required=True, help="data root holding ravdess/ (or meld/)")
    parser.add_argument("--dataset", default="ravdess", choices=["ravdess", "meld"])
    parser.add_argument("--actors", default="17-20", help="RAVDESS actors, e.g. 17-20 or 21,22")
    parser.add_argument("--split", default="dev", help="MELD split (needs MELD.Raw clips)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--backend", default="whisper", choices=["whisper", "nemo"])
    parser.add_argument("--model", default=None,
                        help="whisper: tiny.en (default), base (multilingual) or a CTranslate2 folder; "
                             "nemo: a .nemo file")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--beam-size", type=int, default=1, help="whisper only")
    parser.add_argument("--threads", type=int, default=None, help="whisper only: CPU threads")
    parser.add_argument("--limit", type=int, default=None, help="first N utterances only (smoke runs)")
    args = parser.parse_args(argv)

    if args.dataset == "ravdess":
        from data_pipeline.prepare import parse_actors

        utterances, read_skips = _ravdess_utterances(args.root, parse_actors(args.actors))
        where = f"actors {args.actors}"
    else:
        from data_pipeline.sources.meld import read_meld

        utterances, read_skips = read_meld(args.root, args.split)
        where = f"split {args.split}"
    utterances = utterances[:args.limit] if args.limit else utterances
    if args.backend == "whisper":
        options = {"model": args.model or DEFAULT_MODEL, "beam_size": args.beam_size, "batch_size": args.batch_size,
                   "cpu_threads": args.threads}
    else:
        options = {"model": args.model, "batch_size": args.batch_size}
    transcriber = make_transcriber(args.backend, **options)
    load_before = os.getloadavg()[0]
    records, summary = evaluate_asr(utterances, transcriber, batch_size=args.batch_size)
    from emohd_jax.measurement import machine_info

    # One list of what was left out: files rejected while reading the dataset, then media that failed or were silent.
    skipped = SkipReport([*read_skips.skips, *(Skip(**s) for s in summary.pop("skips")["skipped"])])
    summary = {"dataset": f"{args.dataset} {where}", "command": " ".join(["emohd asr eval", *(argv or sys.argv[1:])]),
               "backend": args.backend, "options": options, **summary, "skips": skipped.to_json(),
               # The real-time factor depends on what else runs: record the load it was measured under.
               "load_average_1m": {"start": load_before, "end": os.getloadavg()[0]}, "machine": machine_info()}
    write_reports(args.out, records, summary)
    print(json.dumps({"dataset": summary["dataset"], "n": summary["n"],
                      "tf_cosine_mean": summary.get("tf_cosine", {}).get("mean"), "wer": summary.get("wer"),
                      "real_time_factor": summary.get("real_time_factor"), "skipped": summary["skips"]["n_skipped"],
                      "skips": [f"{s['kind']}: {s['reason']}" for s in summary["skips"]["skipped"]]}, indent=1))
    return summary


if __name__ == "__main__":
    main()
