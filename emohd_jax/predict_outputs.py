"""What `emohd predict` writes per input: JSON (the versioned schema below), a per-second CSV, a timeline PNG,
and the terminal table.

Schema "emohd.predict/1" (`<name>.json`):
    schema         "emohd.predict/1"
    input          absolute path of the input file
    duration_s     length of the recording (the longer of its audio and video streams)
    classes        the seven class names, in the order of every probability vector
    fusion         {rule: paper|max|sum, calibrated: bool, modalities: [visual, audio, text]}
    utterances     list, in time order, tiling [0, duration_s]:
        index, start_s, end_s
        source       'clip' (the whole short input) | 'asr' (a speech segment) | 'window' (no speech heard)
        transcript   what the recogniser heard (null when nothing)
        modalities   {visual|audio|text: {present: true, probs: [7], label, frames|patches (how many)}
                                       | {present: false, reason: why it is missing}}
        fused        {label (null if no modality), scores: [7] | null, modalities_used: [...]}
    per_second     [{t: frame time (s), probs: [7], label}] the face tower on each 1 fps frame with a face
    per_patch      [{start_s, end_s, probs: [7], label}] the voice tower on each 0.96 s log-mel patch
    frames         [{t, face_probs: [detector probability of each face found]}] every sampled frame
                   (how many people are on screen: the MELD-sub filter of `emohd system-eval` reads it)
"""

from __future__ import annotations

import csv
import json
import math
import os
import pathlib
import tempfile
import textwrap
from typing import Sequence

from emohd_jax.classes import EMOTIONS

SCHEMA = "emohd.predict/1"
# One colour per class, everywhere (tab10 picks, neutral grey).
CLASS_COLOURS = {"neutral": "#9e9e9e", "happiness": "#f2c12e", "anger": "#d62728", "sadness": "#1f77b4",
                 "fear": "#9467bd", "disgust": "#2ca02c", "surprise": "#ff7f0e"}
MAX_WIDTH_IN = 60.0
MAX_TRANSCRIPT_LABELS = 40


def _atomic_write(path: pathlib.Path, write) -> None:
    """`write(tmp_path)` then rename: a killed run never leaves half a file under the final name."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(pathlib.Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def per_second_rows(result: dict) -> list[dict]:
    """One row per second [k, k+1): face of the frame in it, voice of the patch over its middle, the utterance."""
    rows = []
    for k in range(max(1, math.ceil(result["duration_s"]))):
        middle = k + 0.5
        face = next((f for f in result["per_second"] if k <= f["t"] < k + 1), None)
        patch = next((p for p in result["per_patch"] if p["start_s"] <= middle < p["end_s"]), None)
        utt = next((u for u in result["utterances"] if u["start_s"] <= middle < u["end_s"]), None)
        row = {"second": k, "utterance": "" if utt is None else utt["index"],
               "transcript": (utt or {}).get("transcript") or "",
               "face_label": face["label"] if face else ""}
        row.update({f"face_{c}": face["probs"][i] if face else "" for i, c in enumerate(EMOTIONS)})
        row["audio_label"] = patch["label"] if patch else ""
        row.update({f"audio_{c}": patch["probs"][i] if patch else "" for i, c in enumerate(EMOTIONS)})
        row["fused_label"] = (utt["fused"]["label"] or "") if utt else ""
        rows.append(row)
    return rows


def _write_csv(result: dict, path: pathlib.Path) -> None:
    rows = per_second_rows(result)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _bars(ax, spans: Sequence[tuple[float, float, str, float]], y: float) -> None:
    """Coloured cells (start, end, class, confidence), one broken_barh call per class: fast for hours of input."""
    for name in EMOTIONS:
        mine = [(s, e - s, a) for s, e, c, a in spans if c == name]
        if mine:
            ax.broken_barh([(s, w) for s, w, _ in mine], (y - 0.4, 0.8), facecolors=CLASS_COLOURS[name],
                           alpha=[max(0.25, a) for _, _, a in mine] if len(mine) < 5000 else 0.8)


def _plot(result: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    duration = max(result["duration_s"], 1.0)
    width = min(MAX_WIDTH_IN, max(10.0, duration / 6))
    fig, ax = plt.subplots(figsize=(width, 3.6))
    _bars(ax, [(f["t"] - 0.5, f["t"] + 0.5, f["label"], max(f["probs"])) for f in result["per_second"]], 2)
    _bars(ax, [(p["start_s"], p["end_s"], p["label"], max(p["probs"])) for p in result["per_patch"]], 1)
    fused = [(u["start_s"], u["end_s"], u["fused"]["label"]) for u in result["utterances"] if u["fused"]["label"]]
    _bars(ax, [(s, e, c, 1.0) for s, e, c in fused], 0)
    ax.vlines([u["start_s"] for u in result["utterances"][1:]], -0.5, 2.5, colors="white", linewidth=0.6)
    for s, e, c in fused:
        if (e - s) / duration * width * 72 > 7 * len(c):  # the label fits inside its span
            ax.text((s + e) / 2, 0, c, ha="center", va="center", fontsize=7)
    spoken = [u for u in result["utterances"] if u.get("transcript")]
    step = max(1, math.ceil(len(spoken) / MAX_TRANSCRIPT_LABELS))
    for u in spoken[::step]:
        ax.text(u["start_s"], -0.75, textwrap.shorten(u["transcript"], 40), rotation=-20, ha="left", va="top",
                fontsize=6)
    ax.set_yticks([0, 1, 2], ["fused", "voice", "face"])
    ax.set_ylim(-2.2, 2.6)
    ax.set_xlim(0, duration)
    ax.set_xlabel("seconds")
    ax.set_title(pathlib.Path(result["input"]).name)
    ax.legend(handles=[Patch(color=CLASS_COLOURS[c], label=c) for c in EMOTIONS], ncol=7, fontsize=7,
              loc="upper center", bbox_to_anchor=(0.5, -0.3), frameon=False)
    fig.savefig(path, dpi=100, bbox_inches="tight", format="png")
    plt.close(fig)


def write_result(result: dict, out_dir: str | os.PathLike, *, stem: str) -> dict[str, pathlib.Path]:
    """`<stem>.json`, `<stem>.csv` and `<stem>.png` in `out_dir`, each written atomically."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{stem}.json", "csv": out / f"{stem}.csv", "png": out / f"{stem}.png"}
    _atomic_write(paths["json"], lambda p: p.write_text(json.dumps(result, indent=1, ensure_ascii=False),
                                                        encoding="utf-8"))
    _atomic_write(paths["csv"], lambda p: _write_csv(result, p))
    _atomic_write(paths["png"], lambda p: _plot(result, p))
    return paths


def _cell(entry: dict) -> str:
    if entry["present"]:
        return f"{entry['label']} {max(entry['probs']):.2f}"
    return f"— ({textwrap.shorten(entry['reason'], 28)})"


def summary_table(results: Sequence[dict], failures: Sequence[tuple[str, str]]):
    """A rich Table: one row per utterance of each input (V / A / T / fused), then the failed inputs."""
    from rich.table import Table

    table = Table(title="emohd predict", show_lines=False)
    for name in ("input", "time (s)", "transcript", "face", "voice", "words", "fused"):
        table.add_column(name, overflow="fold")
    for result in results:
        name = pathlib.Path(result["input"]).name
        for u in result["utterances"]:
            m = u["modalities"]
            table.add_row(name if u["index"] == 0 else "", f"{u['start_s']:.1f}–{u['end_s']:.1f}",
                          textwrap.shorten(u.get("transcript") or "", 40),
                          *(_cell(m[k]) if k in m else "" for k in ("visual", "audio", "text")),
                          f"[bold]{u['fused']['label'] or '—'}[/bold]")
    for path, reason in failures:
        table.add_row(pathlib.Path(path).name, "", "", "", "", "", f"[red]failed: {reason}[/red]")
    return table

