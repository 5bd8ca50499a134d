"""What `emohd predict` writes per input (`<name>.json`, `<name>.csv`, `<name>.png`) and the terminal table.

`result_json` turns the predictor's `Prediction` (arrays) into the JSON form below; the CSV, the PNG and
the table are drawn from that form, so a result read back from disk renders as a fresh one does.
Schema "emohd.predict/1" (`<name>.json`); times are seconds from the start of the input, every probability
vector has seven entries in the order of `classes`:
    schema         "emohd.predict/1"; a change that breaks readers bumps the number
    input          the input's path as given (relative stays relative), or its file name (`--store-paths name`)
    duration_s     length of the recording (the longer of its audio and video streams)
    classes        ["neutral", "happiness", "anger", "sadness", "fear", "disgust", "surprise"]
    fusion         {rule: "paper" | "max" | "sum", calibrated: per-modality temperatures applied,
                    modalities: the towers fused, of "visual", "audio", "text"}
    requested      the modalities computed (`--modalities`); the other fused ones are missing, reason
                   "not requested" (absent in results of older versions: all of them)
    warnings       what makes the result less than it should be, e.g. "truncated: decoded 1.00 s of 2.24 s" (the
                   container declares more than decodes); empty when none (absent in older results)
    utterances     in time order, tiling [0, duration_s), each:
        index          position in this list, from 0
        start_s, end_s the span [start_s, end_s)
        source         "clip" (the whole short input) | "asr" (a speech segment) | "vad" (speech found by the voice
                       activity detector, words not requested or not trusted) | "window" (no speech heard)
        transcript     what the recogniser heard, or null
        modalities     per fused modality, either
                         {present: true, probs, label, frames (visual) | patches (audio): how many were used}
                         {present: false, reason: why it is missing, e.g. "no speech recognised"}
        fused          {label: the decision, or null when no modality is present (then reason: "no evidence"),
                        scores: the fused class scores (null likewise), modalities_used: the present ones}
    per_second     [{t, probs, label}]: the face tower on each 1 fps frame that has a face (t: the frame's time)
    per_patch      [{start_s, end_s, probs, label}]: the voice tower on each 0.96 s log-mel patch (VGGish), or on
                   each utterance with speech (the Whisper voice tower: one decision per utterance)
    frames         (optional) [{t, face_probs}]: every sampled frame with the detector probability of each face
                   found in it; the MELD-sub filter of `emohd system-eval` reads it
    computed_with  what `emohd predict` resumes on (absent in older results): {input: {id: a hash of the input's
                   path relative to the output folder, size, mtime_ns, sha256_first_last_mib}, bundle: the
                   bundle manifest's sha256, options: the modalities and every Predictor option that changes
                   results}; a rerun whose key differs predicts the input again

`<name>.csv` has one row per second k = [k, k+1) of the input (`CSV_COLUMNS`); `<name>.png` is a timeline of
the face, voice, words and fused decisions with the transcripts under it. `<name>` is the input's file name without
its suffix, shortened with a hash of it when long (`fitting_stem`), so every name fits any filesystem.
"""

from __future__ import annotations

import bisect
import csv
import hashlib
import json
import math
import os
import pathlib
import textwrap
import uuid
from typing import Callable, Sequence

import numpy as np
from rich.table import Table
from rich.text import Text

from emohd_jax.classes import CLASS_INDEX, EMOTIONS
from emohd_jax.serve.prediction import Prediction

SCHEMA = "emohd.predict/1"
MODALITIES: tuple[str, ...] = ("visual", "audio", "text")
# One colour per class in every plot (tab10 picks, neutral grey).
CLASS_COLOURS: dict[str, str] = {"neutral": "#9e9e9e", "happiness": "#f2c12e", "anger": "#d62728",
                                 "sadness": "#1f77b4", "fear": "#9467bd", "disgust": "#2ca02c",
                                 "surprise": "#ff7f0e"}
# Each modality's label, probabilities and, where they are empty, why (`<modality>_reason`).
CSV_COLUMNS: tuple[str, ...] = ("second", "utterance", "transcript",
                                "face_label", *(f"face_{c}" for c in EMOTIONS), "face_reason",
                                "audio_label", *(f"audio_{c}" for c in EMOTIONS), "audio_reason",
                                "words_label", *(f"words_{c}" for c in EMOTIONS), "words_reason",
                                "fused_label", "fused_reason")
DPI = 100
# Width grows with the input so seconds stay apart, up to a cap that keeps a 2-hour timeline one viewable image.
MIN_WIDTH_IN, MAX_WIDTH_IN, SECONDS_PER_INCH = 10.0, 60.0, 6.0
MAX_TRANSCRIPT_LABELS = 40
_FONT_PT = 7.0
_CHAR_PT = 0.6 * _FONT_PT  # mean glyph width of the default sans font: decides what text fits where
_MIN_ALPHA = 0.25          # a cell of a very unsure decision stays visible
NO_EVIDENCE = "no evidence"  # an utterance with no modality present: neither speech nor face
COUNT_KEYS = {"visual": "frames", "audio": "patches"}  # what a present modality says it used
# UTF-8 bytes of an output stem: with ".json" and the temporary name's 18 more (`_write_atomically`) every file
# name stays under 143 bytes, the smallest common limit (eCryptfs; ext4, XFS, NTFS, APFS allow 255).
MAX_STEM_BYTES = 100


def result_json(prediction: Prediction) -> dict:
    """A Prediction → its "emohd.predict/1" dict (probabilities to 5 decimals, times to the millisecond)."""
    p = prediction
    utterances = []
    for i, (start, end) in enumerate(p.spans):
        entries, used = {}, []
        for j, modality in enumerate(p.modalities):
            if not p.present[i, j]:
                entries[modality] = {"present": False, "reason": p.reasons[i][j]}
                continue
            used.append(modality)
            entries[modality] = {"present": True, "probs": _rounded(p.probs[i, j]),
                                 "label": EMOTIONS[p.decisions[i, j]],
                                 **({COUNT_KEYS[modality]: int(p.counts[i, j])} if modality in COUNT_KEYS else {})}
        fused = {"label": EMOTIONS[p.fused[i]] if p.fused[i] >= 0 else None,
                 **({} if used else {"reason": NO_EVIDENCE}),
                 "scores": _rounded(p.fused_scores[i]) if used else None, "modalities_used": used}
        utterances.append({"index": i, "start_s": round(float(start), 3), "end_s": round(float(end), 3),
                           "source": p.sources[i], "transcript": p.transcripts[i], "modalities": entries,
                           "fused": fused})
    return {"schema": SCHEMA, "input": p.input, "duration_s": round(p.duration_s, 3), "classes": list(EMOTIONS),
            "fusion": {"rule": p.fusion_rule, "calibrated": p.calibrated, "modalities": list(p.modalities)},
            "requested": list(p.requested), "warnings": list(p.warnings), "utterances": utterances,
            "per_second": [{"t": round(float(t), 3), "probs": _rounded(q), "label": _label(q)}
                           for t, q in zip(p.face_times, p.face_probs)],
            "per_patch": [{"start_s": round(float(a), 3), "end_s": round(float(b), 3), "probs": _rounded(q),
                           "label": _label(q)} for (a, b), q in zip(p.patch_spans, p.patch_probs)],
            "frames": [{"t": round(float(t), 3), "face_probs": [round(float(x), 4) for x in probs]}
                       for t, probs in zip(p.frame_times, p.frame_face_probs)]}


def requested_in(result: dict) -> tuple[str, ...]:
    """The modalities a result was computed with (all fused ones for results written before `requested`)."""
    return tuple(result.get("requested", result["fusion"]["modalities"]))


def _rounded(probs) -> list[float]:
    return [round(float(p), 5) for p in probs]


def _label(probs) -> str:
    return EMOTIONS[int(np.argmax(probs))]


def write_result(result: dict, out_dir: str | os.PathLike, *, stem: str) -> dict[str, pathlib.Path]:
    """`<stem>.json`, `<stem>.csv` and `<stem>.png` in `out_dir`; each appears whole or not at all.

    The JSON comes last: its presence says the input is done (`emohd predict` resumes on it).
    """
    if result.get("schema") != SCHEMA or list(result.get("classes", ())) != list(EMOTIONS):
        raise ValueError(f"{result.get('input')}: not an {SCHEMA} result with classes {list(EMOTIONS)}")
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = fitting_stem(stem)
    paths = {"json": out / f"{stem}.json", "csv": out / f"{stem}.csv", "png": out / f"{stem}.png"}
    _write_atomically(paths["csv"], lambda tmp: _write_csv(per_second_rows(result), tmp))
    _write_atomically(paths["png"], lambda tmp: _plot_timeline(result, tmp))
    write_json(paths["json"], result)
    return paths


def fitting_stem(stem: str) -> str:
    """`stem`, or when over `MAX_STEM_BYTES` its start and a hash of the whole (`<start>~<10 hex>`): the same
    long name always gives the same short one, and two long names sharing a start still differ."""
    data = stem.encode("utf-8", "surrogateescape")
    if len(data) <= MAX_STEM_BYTES:
        return stem
    start = data[:MAX_STEM_BYTES - 11].decode("utf-8", "ignore")  # a character cut in two is dropped
    return f"{start}~{hashlib.sha256(data).hexdigest()[:10]}"


def write_json(path: pathlib.Path, data) -> None:
    """`data` as indented UTF-8 JSON at `path`, atomically."""
    text = json.dumps(data, indent=1, ensure_ascii=False)
    _write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _write_atomically(path: pathlib.Path, write: Callable[[pathlib.Path], None]) -> None:
    """`write(temp)` in the same folder, then one rename: readers never see half a file, a crash keeps the old one."""
    # Not mkstemp: its 0600 mode would survive the rename, and the outputs are meant to be shared.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ---- CSV ------------------------------------------------------------------------------------------------


def per_second_rows(result: dict) -> list[dict]:
    """The CSV rows: second k = [k, k+1) with the face frame inside it, and the voice patch and the utterance
    at its middle (for a last, partial second the middle of its part before the end); the words and the fused
    decision are the utterance's. An empty modality says why in its `_reason` column."""
    duration = result["duration_s"]
    faces: dict[int, dict] = {}
    for frame in result["per_second"]:
        faces.setdefault(math.floor(frame["t"]), frame)
    patches = _sorted_spans(result["per_patch"])
    utterances = _sorted_spans(result["utterances"])
    rows = []
    for k in range(math.ceil(duration)):
        middle = (k + min(k + 1.0, duration)) / 2
        face, patch, utt = faces.get(k), _covering(patches, middle), _covering(utterances, middle)
        words = utt["modalities"].get("text") if utt else None
        words = words if words and words["present"] else None
        rows.append({"second": k, "utterance": "" if utt is None else utt["index"],
                     "transcript": (utt or {}).get("transcript") or "",
                     "face_label": face["label"] if face else "", **_prob_columns("face", face),
                     "face_reason": "" if face else _missing(utt, "visual", "no face in this second"),
                     "audio_label": patch["label"] if patch else "", **_prob_columns("audio", patch),
                     "audio_reason": "" if patch else _missing(utt, "audio", "no voice patch at this second"),
                     "words_label": words["label"] if words else "", **_prob_columns("words", words),
                     "words_reason": "" if words else _missing(utt, "text", ""),
                     "fused_label": (utt["fused"]["label"] or "") if utt else "",
                     "fused_reason": "" if utt and utt["fused"]["label"] else
                     (utt or {}).get("fused", {}).get("reason", NO_EVIDENCE)})
    return rows


def _missing(utterance: dict | None, modality: str, otherwise: str) -> str:
    """Why `modality` has nothing for a second of `utterance`: the utterance's own reason when the modality is
    missing there (e.g. "no speech"), else `otherwise` (present in the utterance, not in this second)."""
    entry = (utterance or {}).get("modalities", {}).get(modality)
    if entry is None:
        return "no utterance" if utterance is None else "not in this result"
    return otherwise if entry["present"] else entry.get("reason") or "missing"


def _sorted_spans(entries: Sequence[dict]) -> tuple[list[float], list[dict]]:
    """(start times, entries) by start: what `_covering` bisects, so hours of input stay linear."""
    ordered = sorted(entries, key=lambda e: e["start_s"])
    return [e["start_s"] for e in ordered], ordered


def _covering(spans: tuple[list[float], list[dict]], t: float) -> dict | None:
    """The entry whose [start_s, end_s) holds `t`, if any (entries do not overlap)."""
    starts, entries = spans
    i = bisect.bisect_right(starts, t) - 1
    return entries[i] if i >= 0 and t < entries[i]["end_s"] else None


def _prob_columns(prefix: str, entry: dict | None) -> dict[str, float | str]:
    return {f"{prefix}_{c}": entry["probs"][i] if entry else "" for i, c in enumerate(EMOTIONS)}


def _write_csv(rows: Sequence[dict], path: pathlib.Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


# ---- timeline PNG ---------------------------------------------------------------------------------------


def _plot_timeline(result: dict, path: pathlib.Path) -> None:
    """Face, voice, words and fused rows of class-coloured cells over the whole input, transcripts under them; an
    empty row says why ("no video" for an audio file, "not requested", …)."""
    # Imported here: a rerun that only reads results back never draws (matplotlib is ~0.4 s of a start).
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    duration = max(result["duration_s"], 1.0)
    width = min(MAX_WIDTH_IN, max(MIN_WIDTH_IN, duration / SECONDS_PER_INCH))
    pt_per_s = (width - 1.0) * 72 / duration  # about an inch goes to the row names and margins
    # A bare Figure on the Agg canvas: no pyplot state, so a caller's interactive backend is left alone.
    fig = Figure(figsize=(width, 4.8), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax, words = fig.subplots(2, 1, height_ratios=[3.6, 1])

    _cells(ax, 3, _row_note(result, "visual", "no face found"),
           [(math.floor(f["t"]), math.floor(f["t"]) + 1.0, f["label"], _confidence(f)) for f in result["per_second"]])
    _cells(ax, 2, _row_note(result, "audio", "no voice patch"),
           [(p["start_s"], p["end_s"], p["label"], _confidence(p)) for p in result["per_patch"]])
    said = [(u["start_s"], u["end_s"], u["modalities"]["text"]["label"], _confidence(u["modalities"]["text"]))
            for u in result["utterances"] if u["modalities"].get("text", {}).get("present")]
    _cells(ax, 1, _row_note(result, "text", "no words"), said, edgecolor="white", linewidth=0.5)
    fused = [(u["start_s"], u["end_s"], u["fused"]["label"], 1.0) for u in result["utterances"]
             if u["fused"]["label"]]
    _cells(ax, 0, "no decision", fused, edgecolor="white", linewidth=0.5)
    for y, spans in ((1, said), (0, fused)):
        for start, end, label, _ in spans:
            if (end - start) * pt_per_s > _CHAR_PT * (len(label) + 2):
                ax.text((start + end) / 2, y, label, ha="center", va="center", fontsize=_FONT_PT)
    ax.set_yticks([0, 1, 2, 3], ["fused", "words", "voice", "face"])
    ax.set_ylim(-0.6, 3.6)
    ax.set_xlim(0, duration)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=int(width), steps=[1, 2, 3, 5, 6, 10]))  # about one per inch
    ax.set_xlabel("seconds")

    words.axis("off")
    words.set_xlim(0, duration)
    words.set_ylim(0, 1)
    for start, text in _transcript_labels(result["utterances"], duration, pt_per_s):
        words.text(start, 1.0, text, ha="left", va="top", fontsize=_FONT_PT, clip_on=True)

    fig.suptitle(pathlib.Path(result["input"]).name)
    fig.legend(handles=[Patch(color=CLASS_COLOURS[c], label=c) for c in EMOTIONS], loc="outside lower center",
               ncol=len(EMOTIONS), fontsize=8, frameon=False)
    fig.savefig(path, format="png", dpi=DPI)


def _row_note(result: dict, modality: str, otherwise: str) -> str:
    """What an empty timeline row says: "no video" for an audio file, else the reason most utterances give for
    the modality ("not requested", "no speech"), else `otherwise`."""
    reasons = [u["modalities"][modality].get("reason") or "" for u in result["utterances"]
               if modality in u["modalities"] and not u["modalities"][modality]["present"]]
    if not reasons:
        return otherwise
    return _brief(max(set(reasons), key=reasons.count)) or otherwise


def _brief(reason: str) -> str:
    """A missing modality's reason as a table cell or timeline row says it: "no video" for an audio file."""
    return "no video" if reason.startswith("no video stream") else reason


def _confidence(entry: dict) -> float:
    """The probability of the entry's own label: how opaque its cell is."""
    return max(_MIN_ALPHA, entry["probs"][CLASS_INDEX[entry["label"]]])


def _cells(ax, y: float, missing: str, spans: Sequence[tuple[float, float, str, float]], **style) -> None:
    """One row of (start, end, class, alpha) cells as a single collection: thousands of them stay fast."""
    from matplotlib.colors import to_rgba

    if not spans:
        ax.text(0.5, y, missing, transform=ax.get_yaxis_transform(), ha="center", va="center",
                fontsize=_FONT_PT, color="grey")
        return
    ax.broken_barh([(start, end - start) for start, end, _, _ in spans], (y - 0.4, 0.8),
                   facecolors=[to_rgba(CLASS_COLOURS[label], alpha) for _, _, label, alpha in spans],
                   **{"linewidth": 0, **style})


def _transcript_labels(utterances: Sequence[dict], duration: float, pt_per_s: float) -> list[tuple[float, str]]:
    """(start, wrapped text) of at most MAX_TRANSCRIPT_LABELS transcripts, spread evenly in time, each wrapped
    to the room before the next one shown."""
    spacing = max(duration / MAX_TRANSCRIPT_LABELS, 12 * _CHAR_PT / pt_per_s)
    shown: list[dict] = []
    for u in utterances:
        if u.get("transcript") and (not shown or u["start_s"] >= shown[-1]["start_s"] + spacing):
            shown.append(u)
    labels = []
    for u, end in zip(shown, [u["start_s"] for u in shown[1:]] + [duration]):
        room = int((end - u["start_s"]) * pt_per_s / _CHAR_PT) - 1  # characters before the next label
        labels.append((u["start_s"], textwrap.fill(u["transcript"], width=max(8, min(80, room)), max_lines=3,
                                                   placeholder=" …")))
    return labels


# ---- terminal table -------------------------------------------------------------------------------------


def summary_table(results: Sequence[dict], failures: Sequence[tuple[str, str]]) -> "SummaryTable":
    """What a person reads after `emohd predict`: each utterance's three decisions and the fused one with their
    scores, then each input's warnings and what could not be predicted and why; laid out for the console's width."""
    return SummaryTable(list(results), list(failures))


# "hap 0.81" where "happiness 0.81" does not fit: three letters tell the seven classes apart.
CLASS_ABBREVIATIONS: dict[str, str] = {c: c[:3] for c in EMOTIONS}
_INPUT_MAX, _INPUT_MIN, _TRANSCRIPT_MIN = 24, 8, 10  # characters; a longer name ends in "…"
_TABLE_BORDERS = 3 * 7 - 3  # between 7 columns: a separator and a space each side (no outer edge)


class SummaryTable:
    """A rich renderable laid out at render time for the console's width: full class names when they fit, else
    three-letter ones with a legend; cells wrap at spaces (a word longer than its column ends in "…", never
    breaks); the file name shortens first, then the transcript. Warnings and failures follow as full lines."""

    def __init__(self, results: list[dict], failures: list[tuple[str, str]]):
        self.results, self.failures = results, failures

    def __rich_console__(self, console, options):
        utterances = [u for r in self.results for u in r["utterances"]]
        names = [len(pathlib.Path(r["input"]).name) for r in self.results] or [_INPUT_MIN]
        time_width = max([len(_span(u)) for u in utterances] + [len("time (s)")])
        for abbreviate in (False, True):
            cells = [_fused_cell(u["fused"], abbreviate) for u in utterances if u["fused"]["label"]] + [
                _modality_cell(e, abbreviate) for u in utterances for e in u["modalities"].values() if e["present"]]
            score_width = max([len(c.plain) for c in cells] + [len("A voice")])
            room = options.max_width - _TABLE_BORDERS - time_width - 4 * score_width
            input_width = max(_INPUT_MIN, min(max(names), _INPUT_MAX, room - _TRANSCRIPT_MIN))
            if room - input_width >= _TRANSCRIPT_MIN:
                break
        # Room to spare goes to the reasons of missing modalities first, so a wide console shows them on one line.
        reasons = [len(_modality_cell(e).plain) for u in utterances for e in u["modalities"].values()
                   if not e["present"]] + [len(_fused_cell(u["fused"], abbreviate).plain) for u in utterances]
        spare = max(0, room - input_width - 2 * _TRANSCRIPT_MIN) // 4
        score_width = max(score_width, min(max(reasons, default=0), score_width + spare))
        room = options.max_width - _TABLE_BORDERS - time_width - 4 * score_width
        if self.results:  # nothing predicted: the failures alone
            yield self.table(abbreviate, input_width, time_width, score_width,
                             max(_TRANSCRIPT_MIN, room - input_width))
        for result in self.results:
            for warning in result.get("warnings", ()):
                yield Text.assemble(("warning ", "bold yellow"), f"{pathlib.Path(result['input']).name}: {warning}")
        for path, reason in self.failures:
            yield Text.assemble(("failed ", "bold red"), f"{pathlib.Path(path).name}: {reason}")

    def table(self, abbreviate: bool, input_width: int, time_width: int, score_width: int,
              transcript_width: int) -> Table:
        legend = ", ".join(f"{a} = {c}" for c, a in CLASS_ABBREVIATIONS.items())
        table = Table(title="emohd predict", caption=legend if abbreviate else None, show_edge=False, pad_edge=False)
        table.add_column("input", overflow="ellipsis", no_wrap=True, width=input_width)
        table.add_column("time (s)", no_wrap=True, width=time_width)
        table.add_column("transcript", overflow="ellipsis", width=transcript_width)
        for name in ("V face", "A voice", "T words", "fused"):
            table.add_column(name, overflow="ellipsis", width=score_width)
        for result in self.results:
            name = Text(pathlib.Path(result["input"]).name)
            utterances = result["utterances"]
            if not utterances:
                table.add_row(name, "", "", "", "", "", Text("—"), end_section=True)
            for i, u in enumerate(utterances):
                # Text, not markup strings: a transcript such as "[laughs]" must print as heard.
                table.add_row(name if i == 0 else "", _span(u),
                              Text(textwrap.shorten(u.get("transcript") or "", 40, placeholder=" …")),
                              *(_modality_cell(u["modalities"].get(m), abbreviate) for m in MODALITIES),
                              _fused_cell(u["fused"], abbreviate), end_section=i == len(utterances) - 1)
        return table


def _span(utterance: dict) -> str:
    return f"{utterance['start_s']:.1f}–{utterance['end_s']:.1f}"


def _scored(label: str, score: float, abbreviate: bool) -> str:
    return f"{CLASS_ABBREVIATIONS[label] if abbreviate else label} {score:.2f}"


def _fused_cell(fused: dict, abbreviate: bool) -> Text:
    """"anger 0.62": the fused decision and its fused score; "— no evidence" when nothing was present."""
    if fused["label"] is None:
        return Text(f"— {fused.get('reason', NO_EVIDENCE)}", style="dim")
    return Text(_scored(fused["label"], fused["scores"][CLASS_INDEX[fused["label"]]], abbreviate), style="bold")


def _modality_cell(entry: dict | None, abbreviate: bool = False) -> Text:
    """"anger 0.81" (the label and its probability), or "— reason" shortened when the modality is missing."""
    if entry is None:
        return Text("")
    if entry["present"]:
        return Text(_scored(entry["label"], entry["probs"][CLASS_INDEX[entry["label"]]], abbreviate))
    return Text(f"— {textwrap.shorten(_brief(entry['reason']), 24, placeholder='…')}", style="dim")
