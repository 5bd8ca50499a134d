"""Feature shards: `tf.train.Example` records in ArrayRecord (default) or TFRecord files, via tfds.

One tfds `GeneratorBasedBuilder` writes every kind of shard; the record schema is the tfds `FeaturesDict`
made from the fields the extractor declares (`features_dict`, stored beside the shards in `features.json`), the files
are readable by grain (ArrayRecord, random access) and by `tf.data` (both containers), and
TensorFlow is needed only for `file_format='tfrecord'` (the `[tfrecord]` extra).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable, Iterable, Mapping

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from emohd_jax.classes import EMOTIONS
from emohd_jax.extract import CLASS, TEXT, Field

if TYPE_CHECKING:
    import apache_beam as beam  # the optional [beam] extra

BUILDER_NAME = "feature_shards"
FILE_FORMATS = ("array_record", "tfrecord")


class FeatureShards(tfds.core.GeneratorBasedBuilder):
    """Writes `(key, example)` streams, one per split, as shards with the given feature schema."""

    VERSION = tfds.core.Version("1.0.0")

    def __init__(self, *, features: tfds.features.FeaturesDict,
                 splits: Mapping[str, Callable[[], Iterable[tuple[str, dict]]]] | None = None,
                 description: str = "", **kwargs):
        self._features, self._splits, self._description = features, splits or {}, description
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, description=self._description, features=self._features)

    def _split_generators(self, dl_manager):
        # A callable streams in this process; anything else is a Beam PTransform, which tfds runs as a pipeline.
        return {name: self._generate_examples(stream) if callable(stream) else stream
                for name, stream in self._splits.items()}

    def _generate_examples(self, stream):
        yield from stream()

    # tfds announces "Downloading and preparing dataset Unknown size (download: Unknown size, …)" and then
    # "downloaded and prepared": nothing is downloaded here (the tool works offline); prepare reports itself.
    def _log_download_bytes(self) -> None:
        pass

    def _log_download_done(self) -> None:
        pass


def features_dict(fields: Mapping[str, Field]) -> tfds.features.FeaturesDict:
    """An extractor's plain field specs → the tfds schema its records are stored with."""

    def feature(field: Field) -> tfds.features.FeatureConnector:
        if field.dtype == TEXT:
            return tfds.features.Text()
        if field.dtype == CLASS:
            return tfds.features.ClassLabel(names=list(EMOTIONS))
        if field.shape == ():
            return tfds.features.Scalar(dtype=np.dtype(field.dtype))
        # float16 (frozen-encoder features) as raw bytes: a float list costs 4 bytes a value and 0.25 s a record
        encoding = tfds.features.Encoding.BYTES if field.dtype == "float16" else tfds.features.Encoding.NONE
        return tfds.features.Tensor(shape=field.shape, dtype=np.dtype(field.dtype), encoding=encoding)

    return tfds.features.FeaturesDict({name: feature(field) for name, field in fields.items()})


def write_shards(out_dir: str | os.PathLike, fields: Mapping[str, Field],
                 splits: Mapping[str, Callable[[], Iterable[tuple[str, dict]]] | beam.PTransform], *,
                 file_format: str = "array_record", description: str = "",
                 beam_options: beam.options.pipeline_options.PipelineOptions | None = None) -> epath.Path:
    """Writes all splits under `out_dir`; returns the directory holding the shard files.

    A split is a callable giving `(key, example)` pairs, or (with `beam_options`) a Beam PTransform that yields
    them; tfds' Beam writer then shuffles and shards them as its single-process writer does.
    """
    if file_format not in FILE_FORMATS:
        raise ValueError(f"file_format must be one of {FILE_FORMATS}, not {file_format!r}")
    if file_format == "tfrecord":
        try:
            import tensorflow  # noqa: F401  (tfds writes TFRecord through TensorFlow)
        except ImportError as error:
            raise ImportError("TFRecord shards need TensorFlow: pip install 'emohd-jax[tfrecord]'") from error
    builder = FeatureShards(features=features_dict(fields), splits=splits, description=description, data_dir=str(out_dir),
                            file_format=file_format)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS, beam_options=beam_options))
    return epath.Path(builder.data_dir)


def shard_dir(out_dir: str | os.PathLike) -> epath.Path:
    """Where the shard files of `out_dir` live; local or remote (`gs://…`, through etils.epath)."""
    return epath.Path(out_dir) / BUILDER_NAME / str(FeatureShards.VERSION)


def open_split(out_dir: str | os.PathLike, split: str):
    """A random-access source (len, __getitem__ → dict of NumPy arrays) over one split's ArrayRecord shards."""
    directory = shard_dir(out_dir)
    if not (directory / "dataset_info.json").exists():
        raise FileNotFoundError(f"{directory}: no feature shards here; run `emohd prepare` first")
    return tfds.builder_from_directory(str(directory)).as_data_source(split=split)
