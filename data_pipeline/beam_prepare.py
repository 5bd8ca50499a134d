"""Prepare on Apache Beam: the raw-media extraction of `data_pipeline.prepare` as a pipeline, for corpora too big
for one machine (`emohd prepare --runner direct|dataflow|flink|spark`).

Each split is a `PTransform` that tfds' Beam support runs and writes: utterances are spread over the workers,
each worker calls the same `record_cache.extract_one` as the single-process path (same extractor, same cache, so a
stopped run resumes on either path), and tfds' Beam writer shuffles by the same record keys, so the shards hold
the same records. `direct` runs on this machine's cores; dataflow, flink and spark take their own pipeline flags
(`--project`, `--region`, `--temp_location=gs://…`, `--flink_master`, …), and then the output directory (and with
it the cache) belongs on storage every worker reaches (`gs://…`).
"""

from __future__ import annotations

import copy
from typing import Iterator, Sequence

from etils import epath

from data_pipeline.record_cache import extract_one, record_key
from emohd_jax.errors import UsageError
from emohd_jax.extract import Extractor, Record, Utterance

try:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
except ImportError as error:
    raise UsageError("--runner", "prepare on a Beam runner needs Apache Beam, which is not installed",
                     "pip install 'emohd-jax[beam]', or leave out --runner to prepare in this process") from error

RUNNERS = {"direct": "DirectRunner", "dataflow": "DataflowRunner", "flink": "FlinkRunner", "spark": "SparkRunner"}


def pipeline_options(runner: str, flags: Sequence[str] = ()) -> PipelineOptions:
    """Beam options for `runner` (a name of RUNNERS) and the user's own pipeline `flags`, which win.

    The direct runner defaults to one process per core: extraction is CPU-bound Python, which threads do not
    spread (`--direct_num_workers=N` chooses).
    """
    if runner not in RUNNERS:
        raise UsageError("--runner", f"unknown runner {runner!r}", f"one of: {', '.join(RUNNERS)}")
    defaults = ["--direct_running_mode=multi_processing", "--direct_num_workers=0"] if runner == "direct" else []
    return PipelineOptions([f"--runner={RUNNERS[runner]}", *defaults, *flags])


class _ExtractRecords(beam.DoFn):
    """utterance → (key, record) for each of its records, through the cache (bad input: cached as a skip, no record)."""

    def __init__(self, extractor: Extractor, cache_dir: str):
        self._extractor, self._cache_dir = extractor, cache_dir

    def process(self, utterance: Utterance) -> Iterator[tuple[str, Record]]:
        records, _ = extract_one(utterance, self._extractor, epath.Path(self._cache_dir))
        for i, record in enumerate(records):
            yield record_key(utterance.uid, i), record


class ExtractSplit(beam.PTransform):
    """One split's utterances → its `(key, record)` pairs, extracted on the workers."""

    def __init__(self, utterances: Sequence[Utterance], extractor: Extractor, cache_dir: str | epath.Path):
        super().__init__()
        self._utterances = list(utterances)
        # A copy: the pipeline runs after every split is built, and the caller's extractor then holds the last
        # split's state (`set_dialogues`), while this split's workers need this one's.
        self._extract = beam.ParDo(_ExtractRecords(copy.deepcopy(extractor), str(cache_dir)))

    def expand(self, pipeline: beam.pvalue.PBegin) -> beam.PCollection:
        return (pipeline
                | "Utterances" >> beam.Create(self._utterances)
                | "Spread" >> beam.Reshuffle()  # Create's items would otherwise stay on one worker
                | "Extract" >> self._extract)
