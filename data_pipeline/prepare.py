"""Raw media → feature shards, resumable: every utterance is extracted once into a cache, then packed.

Extraction is the slow part (faces, log-mel, ASR), so each utterance's records are written
atomically to `cache/` as soon as they exist; an interrupted run picks up where it stopped,
with no duplicates and no loss. Packing the cache into shards is cheap and deterministic.
The extraction runs in this process (the default) or, with `runner`, as an Apache Beam pipeline
(`data_pipeline.beam_prepare`) whose workers call the same `record_cache.extract_one` into the same cache.
Every path goes through `etils.epath`: shards, cache and manifest may live on `gs://`.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import json
import os
import pathlib
from typing import Mapping, Sequence

from etils import epath
from tqdm import tqdm

from data_pipeline import shards
from data_pipeline.sources.base import CLASS_FOLDER_SETS
from data_pipeline.record_cache import cache_path, extract_one, load_labels, load_records, record_key
from emohd_jax.classes import EMOTIONS
from emohd_jax.errors import Skip, SkipReport, UsageError
from emohd_jax.extract import Extractor, Utterance

MANIFEST = "manifest.json"


def extract_split(utterances: Sequence[Utterance], extractor: Extractor, cache_dir: str | os.PathLike,
                  desc: str = "") -> None:
    """Fills the cache for every utterance not already there, in this process."""
    cache_dir = epath.Path(cache_dir)
    todo = [u for u in utterances if not cache_path(cache_dir, u.uid).exists()]
    for utterance in tqdm(todo, desc=desc or "extract", unit="utt", initial=len(utterances) - len(todo),
                          total=len(utterances)):
        extract_one(utterance, extractor, cache_dir)


def prepare(splits: Mapping[str, Sequence[Utterance]], extractor: Extractor, out_dir: str | os.PathLike, *,
            file_format: str = "array_record", source_skips: SkipReport | None = None,
            source: Mapping | None = None, runner: str | None = None, beam_options: Sequence[str] = ()) -> dict:
    """Extracts, packs and writes `out_dir/manifest.json` (counts per class and split, skips with reasons).

    `runner` (direct | dataflow | flink | spark): extract on Apache Beam, `beam_options` its pipeline flags
    (`--direct_num_workers=2`, `--project=…`); None: in this process. Both write the same cache and shards.
    """
    out = epath.Path(out_dir)
    options = {"extractor": extractor.name, **extractor.options(), "source": dict(source or {})}
    manifest_path = out / MANIFEST
    if manifest_path.exists():
        previous = json.loads(manifest_path.read_text())["options"]
        if previous != options:
            raise ValueError(f"{out} holds shards prepared with other options {previous}; use a new directory")
    pipeline_options, generators = None, {}
    if runner is not None:
        from data_pipeline import beam_prepare

        pipeline_options = beam_prepare.pipeline_options(runner, beam_options)
    out.mkdir(parents=True, exist_ok=True)
    for split, utterances in splits.items():
        if hasattr(extractor, "set_dialogues"):
            extractor.set_dialogues(utterances)  # this split's dialogue context (a Beam split copies it)
        cache_dir = out / "cache" / split
        if runner is None:
            extract_split(utterances, extractor, cache_dir, desc=f"{extractor.name}/{split}")
            generators[split] = functools.partial(_stream, cache_dir, utterances)
        else:
            generators[split] = beam_prepare.ExtractSplit(utterances, extractor, cache_dir)
    shards.write_shards(out, extractor.fields, generators, file_format=file_format,
                        description=f"emohd {extractor.name} features", beam_options=pipeline_options)

    skips = SkipReport(source_skips.skips if source_skips else ())
    counts, n_utterances = {}, {}
    for split, utterances in splits.items():
        per_class = collections.Counter()
        kept = 0
        for utterance in utterances:
            labels, skip = load_labels(cache_path(out / "cache" / split, utterance.uid))
            if skip is not None:
                skips.skips.append(Skip(item=utterance.uid, split=split, **skip))
                continue
            kept += 1
            per_class.update(EMOTIONS[label] for label in labels)
        counts[split] = {"records_per_class": dict(per_class), "records": sum(per_class.values()), "utterances": kept}
        n_utterances[split] = len(utterances)
    manifest = {"options": options, "file_format": file_format, "counts": counts, "input_utterances": n_utterances,
                "classes": list(EMOTIONS), "skips": skips.one_per_item().to_json()}
    manifest_path.write_text(json.dumps(manifest, indent=1))
    return manifest


def _stream(cache_dir: epath.Path, utterances: Sequence[Utterance]):
    """(key, record) of every cached record of `utterances`, for the shard writer."""
    for utterance in utterances:
        records, _ = load_records(cache_path(cache_dir, utterance.uid))
        for i, record in enumerate(records):
            yield record_key(utterance.uid, i), record


def read_source(data, split: str) -> tuple[list[Utterance], SkipReport]:
    """Dispatches to the dataset adapter named by `data.split_sources[split]` (shards holding several corpora, one
    per split) or else `data.dataset`, with its root from `data.root`."""
    dataset = data.get("split_sources", {}).get(split, data.dataset)
    if dataset == "meld":
        from data_pipeline.sources.meld import read_meld

        return read_meld(data.root, split)
    if dataset == "iemocap":
        from data_pipeline.sources.iemocap import read_iemocap

        return read_iemocap(data.root, split, excitement=data.get("excitement", "happiness"))
    if dataset in CLASS_FOLDER_SETS:
        from data_pipeline.sources.image_folders import FER2013_LABELS, parse_label_map, read_class_folders

        label_map = parse_label_map(data.label_map) if data.get("label_map") else FER2013_LABELS
        return read_class_folders(pathlib.Path(data.root) / dataset, split, label_map=label_map,
                                  dataset=dataset)
    if dataset == "ravdess":
        from data_pipeline.sources.ravdess import read_ravdess

        return read_ravdess(pathlib.Path(data.root) / "ravdess", actors=_split_actors(data, split), split=split,
                            calm=data.get("calm", "drop"))
    if dataset == "cremad":
        from data_pipeline.sources.cremad import read_cremad

        # No actors configured: every clip (the samples); configured: the split must be one of them.
        actors = _split_actors(data, split) if data.get("actors") else None
        return read_cremad(pathlib.Path(data.root) / "cremad", split=split, actors=actors)
    if dataset in ("tess", "urdu"):
        from data_pipeline.sources.tess import read_tess
        from data_pipeline.sources.urdu import read_urdu

        return {"tess": read_tess, "urdu": read_urdu}[dataset](pathlib.Path(data.root) / dataset, split=split)
    raise UsageError("config.data.dataset", f"unknown dataset {dataset!r}",
                     f"one of: meld, iemocap, ravdess, cremad, tess, urdu, {', '.join(CLASS_FOLDER_SETS)}")


def parse_actors(spec: str | int, setting: str = "--actors") -> list[int]:
    """Actor spec of a split: '1-16', '17,18,21-24' or a single number → actor numbers.

    UsageError for anything else, its fix naming `setting` (the flag or config key the spec came from).
    """
    actors: list[int] = []
    for part in str(spec).split(","):
        low, _, high = part.strip().partition("-")
        high = high or low
        if not (low.isascii() and low.isdigit() and high.isascii() and high.isdigit() and int(low) <= int(high)):
            raise UsageError(f"actors {spec!r}", f"{part.strip()!r} is not an actor number or range",
                             f"write e.g. 1-16 or 17,18,21-24 in {setting}")
        actors.extend(range(int(low), int(high) + 1))
    return actors


def _split_actors(data, split: str) -> list[int]:
    """The actors of `data.actors[split]`; datasets split by actor need one entry per split they read."""
    actors = data.get("actors", {})
    if split not in actors:
        raise UsageError("config.data.split", f"no actors for split {split!r} in config.data.actors {dict(actors)}",
                         "use a split named there, or add one: --config.data.split=heldout "
                         "--config.data.actors.heldout=21-24")
    return parse_actors(actors[split], setting=f"config.data.actors.{split}")


def prepare_from_config(config, extractor: Extractor, splits: Sequence[str] | None = None,
                        out_dir: str | None = None, *, runner: str | None = None,
                        beam_options: Sequence[str] = ()) -> dict:
    """`emohd prepare [--runner R]`: read the dataset's splits, extract with the tower's `extractor` (here, or on the
    Beam `runner`), write shards + manifest."""
    splits = tuple(splits or config.data.prepare_splits)
    utterances, skips = {}, SkipReport()
    for split in splits:
        utterances[split], split_skips = read_source(config.data, split)
        skips.extend(SkipReport(dataclasses.replace(s, split=split) for s in split_skips.skips))
    return prepare(utterances, extractor, out_dir or config.data.shards,
                   file_format=config.data.file_format, source_skips=skips.one_per_item(),
                   source={"dataset": config.data.dataset, "splits": list(splits)}, runner=runner,
                   beam_options=beam_options)


def shards_for_split(config, split: str, extractor: Extractor) -> str:
    """Shards holding `split`: the training shards, or a separate set prepared on demand (held-out splits)."""
    from emohd_jax.checkpointing import absolute

    manifest = epath.Path(config.data.shards) / MANIFEST
    if manifest.exists() and split in json.loads(manifest.read_text())["counts"]:
        return config.data.shards
    # Keyed by everything that decides the held-out set's contents (root, actors, label map, ...), so a
    # second held-out set never reuses the first one's shards.
    data = {k: v for k, v in config.data.to_dict().items() if k not in ("shards", "split")}
    data["root"] = str(absolute(config.data.root))
    key = hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:10]
    out = f"{config.data.shards.rstrip('/')}-{split}-{key}"
    if not (epath.Path(out) / MANIFEST).exists():
        prepare_from_config(config, extractor, [split], out)
    return out
