"""`emohd_jax.predict`: many inputs (files, folders, globs) through one `Predictor`, each written as soon as it
is done, resumable: inputs whose result an earlier run wrote are read back, not predicted again."""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import pathlib
from typing import Iterable, Sequence

from emohd_jax.bundle import Bundle, load_bundle
from emohd_jax.errors import EXIT_NONE, EXIT_OK, EXIT_PARTIAL, BadInputError

MEDIA_SUFFIXES = (".mp4", ".flv", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg",
                  ".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus", ".aac")


@dataclasses.dataclass
class PredictRun:
    results: list[dict]                  # one "emohd.predict/1" dict per predicted input
    failures: list[tuple[str, str]]      # (input, why it could not be predicted)
    resumed: list[str] = dataclasses.field(default_factory=list)  # inputs whose earlier result was read back

    @property
    def exit_code(self) -> int:
        if not self.failures:
            return EXIT_OK
        return EXIT_PARTIAL if self.results else EXIT_NONE


def resolve_inputs(paths: Iterable[str | os.PathLike]) -> tuple[list[pathlib.Path], list[tuple[str, str]]]:
    """Files as given, folders searched recursively for media, globs expanded; (inputs, not found)."""
    inputs, missing = [], []
    for raw in paths:
        text = str(raw)
        path = pathlib.Path(text)
        if path.is_dir():
            inputs += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES)
        elif path.is_file():
            inputs.append(path)
        elif glob.has_magic(text) and (matches := sorted(glob.glob(text, recursive=True))):
            inputs += [pathlib.Path(m) for m in matches if pathlib.Path(m).is_file()]
        else:
            missing.append((text, "no such file, folder or matching glob"))
    unique: dict[pathlib.Path, pathlib.Path] = {}
    for p in inputs:  # one input per file, kept as the user named it (a relative path stays relative)
        unique.setdefault(p.resolve(), p)
    return list(unique.values()), missing


def predict(paths: Sequence[str | os.PathLike], bundle: Bundle | str | os.PathLike | None = None, *,
            out_dir: str | os.PathLike | None = None, progress: bool = True, overwrite: bool = False,
            **options) -> PredictRun:
    """Predicts every input (files, folders, globs); writes JSON + CSV + timeline PNG per input to `out_dir`.

    Bad inputs are listed in `failures` with their reason and the others go on. Each input's files are
    written as soon as it is done, atomically; run again, inputs whose result is already in `out_dir` (for
    the same requested modalities) are read back instead of predicted (`overwrite=True` redoes them), so an
    interrupted run loses nothing finished. `options`: `modalities` ('face,voice,words' or a list; default
    all), `max_utterance_s`, `window_s`, `block_s`, `frame_chunk` (see `Predictor`).
    """
    from tqdm import tqdm

    from emohd_jax.serve.outputs import result_json, write_result
    from emohd_jax.serve.predictor import Predictor

    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle)
    predictor = Predictor(bundle, **options)
    inputs, failures = resolve_inputs(paths)
    results, resumed, stems = [], [], set()
    for path in tqdm(inputs, desc="predict", unit="input", disable=not progress):
        stem = _unique_stem(path, stems)
        if out_dir is not None and not overwrite and (
                done := _finished(pathlib.Path(out_dir) / f"{stem}.json", path, predictor.requested)):
            results.append(done)
            resumed.append(str(path))
            continue
        try:
            result = result_json(predictor.predict_file(path))
        except BadInputError as error:
            failures.append((str(path), error.reason))
            continue
        except FileNotFoundError as error:
            failures.append((str(path), str(error)))
            continue
        results.append(result)
        if out_dir is not None:
            write_result(result, out_dir, stem=stem)
    return PredictRun(results, failures, resumed)


def _unique_stem(path: pathlib.Path, taken: set[str]) -> str:
    """`clip`, or `clip-2`, `clip-3`… when inputs from several folders share a name."""
    stem, n = path.stem, 1
    while stem in taken:
        n += 1
        stem = f"{path.stem}-{n}"
    taken.add(stem)
    return stem


def _finished(json_path: pathlib.Path, path: pathlib.Path, requested: tuple[str, ...]) -> dict | None:
    """The result an earlier run wrote for `path` with the same requested modalities, or None (absent,
    unreadable, another input's, or other modalities)."""
    from emohd_jax.serve.outputs import SCHEMA, requested_in

    try:
        result = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if result.get("schema") != SCHEMA or result.get("input") != str(path):
        return None
    return result if requested_in(result) == requested else None
