"""The paper's transcript check (SPEC §4.2): term-frequency cosine between ASR and reference words, plus WER."""

from __future__ import annotations

import collections
import math
from typing import Iterable, Mapping, Sequence

import numpy as np

HISTOGRAM_BINS = 20
QUANTILES = (0.05, 0.10, 0.25, 0.50, 0.75, 0.90)


def tf_cosine(a_words: Sequence[str], b_words: Sequence[str]) -> float:
    """Cosine of the two term-frequency vectors; 1.0 when both are empty, 0.0 when only one is."""
    a, b = collections.Counter(a_words), collections.Counter(b_words)
    if not a and not b:
        return 1.0
    if not a or not b:
        return 0.0
    dot = sum(count * b[word] for word, count in a.items())
    norms = math.sqrt(sum(c * c for c in a.values())) * math.sqrt(sum(c * c for c in b.values()))
    return min(1.0, dot / norms)  # rounding can land a hair above 1


def word_error_rate(ref: Sequence[str] | str, hyp: Sequence[str] | str) -> float:
    """(substitutions + deletions + insertions) / reference words, on word lists or whitespace-split strings.

    An empty reference has no defined WER: 0.0 if the hypothesis is empty too, else 1.0.
    """
    import jiwer

    ref_words = ref.split() if isinstance(ref, str) else list(ref)
    hyp_words = hyp.split() if isinstance(hyp, str) else list(hyp)
    if not ref_words:
        return 0.0 if not hyp_words else 1.0
    if not hyp_words:
        return 1.0
    return float(jiwer.wer(" ".join(ref_words), " ".join(hyp_words)))


def summarize(records: Iterable[Mapping], *, asr_seconds: float | None = None) -> dict:
    """Per-dataset numbers from per-utterance records (keys audio_seconds, and tf_cosine, wer, n_ref_words where
    the utterance has a reference transcript).

    The cosine gets mean/median/std/quantiles and a 20-bin histogram over [0, 1]; WER is given as the
    mean over utterances and as the corpus rate (errors over all reference words), both over the records with a
    reference (`n_scored`); with the ASR wall time, the real-time factor over every record (processing / audio
    seconds, < 1 is faster than real time).
    """
    records = list(records)
    if not records:
        return {"n": 0}
    summary = {"n": len(records), **_scores([r for r in records if "wer" in r])}
    audio_seconds = float(sum(r["audio_seconds"] for r in records))
    summary["audio_seconds"] = audio_seconds
    if asr_seconds is not None and audio_seconds > 0:
        summary["asr_seconds"] = asr_seconds
        summary["real_time_factor"] = asr_seconds / audio_seconds
        summary["times_real_time"] = audio_seconds / asr_seconds if asr_seconds > 0 else float("inf")
    return summary


def _scores(records: list[Mapping]) -> dict:
    """TF-cosine and WER statistics of the records that have a reference."""
    if not records:
        return {"n_scored": 0}
    cosine = np.array([r["tf_cosine"] for r in records], np.float64)
    wer = np.array([r["wer"] for r in records], np.float64)
    ref_words = np.array([r["n_ref_words"] for r in records], np.float64)
    counts, edges = np.histogram(cosine, bins=HISTOGRAM_BINS, range=(0.0, 1.0))
    return {
        "n_scored": len(records),
        "tf_cosine": {
            "mean": float(cosine.mean()), "median": float(np.median(cosine)), "std": float(cosine.std()),
            "min": float(cosine.min()), "max": float(cosine.max()),
            "exact_fraction": float(np.mean(cosine >= 1.0 - 1e-9)),
            "quantiles": {f"p{round(q * 100):02d}": float(np.quantile(cosine, q)) for q in QUANTILES},
            "histogram": {"edges": [round(float(e), 4) for e in edges], "counts": counts.tolist()},
        },
        "wer": {
            "mean": float(wer.mean()), "median": float(np.median(wer)),
            "corpus": float((wer * ref_words).sum() / max(ref_words.sum(), 1.0)),
        },
    }
