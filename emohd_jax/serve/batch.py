"""`emohd_jax.predict`: many inputs (files, folders, globs) through one `Predictor`, each written as soon as it
is done, resumable: an input whose result an earlier run wrote from the same content, bundle and options is read
back, not predicted again. Inputs, `--out` and finished results are settled before the bundle loads, so a
mistake or a rerun with nothing left to do costs no model loading; JAX's compilation cache makes a rerun start
fast."""

from __future__ import annotations

import dataclasses
import datetime
import glob
import hashlib
import itertools
import json
import os
import pathlib
import platform
import uuid
import warnings
from typing import TYPE_CHECKING, Iterable, Mapping

from etils import epath

from emohd_jax.bundle_manifest import DEFAULT_BUNDLE, manifest_digest, read_manifest
from emohd_jax.errors import EXIT_NONE, EXIT_OK, EXIT_PARTIAL, BadInputError, UsageError

if TYPE_CHECKING:  # the bundle module imports JAX: a rerun with nothing to do never needs it
    from emohd_jax.bundle import Bundle

VIDEO_SUFFIXES = (".mp4", ".flv", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg")
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus", ".aac")
# A photo is a one-frame video to the decoder: the face alone is predicted (what a single .jpg given by name got).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
MEDIA_SUFFIXES = VIDEO_SUFFIXES + AUDIO_SUFFIXES + IMAGE_SUFFIXES
NO_MEDIA = "no media found (looked for " + "; ".join(
    f"{kind}: {' '.join(s.lstrip('.') for s in suffixes)}"
    for kind, suffixes in (("video", VIDEO_SUFFIXES), ("audio", AUDIO_SUFFIXES), ("images", IMAGE_SUFFIXES))) + ")"

STORE_PATHS = ("given", "name")  # how an input's path is written: as given, or its file name only
NORMALIZE = ("training", "folder")  # the voice features' statistics: the tower's training ones, or each folder's
RUN_SCHEMA, RUN_FILE, FAILURES_FILE = "emohd.predict-run/1", "run.json", "failures.json"  # per run, in out_dir
RESERVED_STEMS = ("run", "failures")  # an input `run.mp4` is written as `run-2.json`: `run.json` is the run's
HASHED_BYTES = 1 << 20  # the first and the last MiB of an input are hashed into its resume key
MEMORY_ONLY = ("frame_chunk",)  # Predictor options that bound memory and leave results alone: not in the key
CACHE_MIN_COMPILE_S = 0.1  # programs that compiled faster are not worth a cache file (JAX's default: 1 s)


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
    """Files as given, folders searched recursively and globs expanded for media (`MEDIA_SUFFIXES`);
    (inputs, failures): a name matching nothing, a folder or glob without media, a broken link (never skipped
    silently)."""
    inputs, failures = [], []
    for raw in paths:
        text = str(raw)
        path = pathlib.Path(text)
        if path.is_file():
            inputs.append(path)
            continue
        if path.is_symlink() and not path.exists():
            failures.append((text, _broken_link(path)))
            continue
        if path.is_dir():
            found = sorted(path.rglob("*"))
        elif glob.has_magic(text) and (matches := glob.glob(text, recursive=True)):
            found = sorted(pathlib.Path(m) for m in matches)
        else:
            failures.append((text, "no such file, folder or matching glob"))
            continue
        media = [p for p in found if _media_name(p) and (p.is_file() or p.is_symlink() and not p.exists())]
        inputs += [p for p in media if p.is_file()]
        failures += [(str(p), _broken_link(p)) for p in media if not p.is_file()]
        if not media:
            failures.append((text, NO_MEDIA))
    unique: dict[pathlib.Path, pathlib.Path] = {}
    for p in inputs:  # one input per file, kept as the user named it (a relative path stays relative)
        unique.setdefault(p.resolve(), p)
    return list(unique.values()), failures


def _media_name(path: pathlib.Path) -> bool:
    """A media suffix on the name, or on a link's target (`clip` → `clip.mp4`)."""
    names = [path.name] + ([os.readlink(path)] if path.is_symlink() else [])
    return any(pathlib.PurePath(name).suffix.lower() in MEDIA_SUFFIXES for name in names)


def _broken_link(path: pathlib.Path) -> str:
    return f"broken link (to {os.readlink(path)}, which does not exist)"


def predict(paths: str | os.PathLike | Iterable[str | os.PathLike], bundle: Bundle | str | os.PathLike | None = None,
            *, out_dir: str | os.PathLike | None = None, progress: bool = True, overwrite: bool = False,
            store_paths: str = "given", compilation_cache: bool | str | os.PathLike | None = None,
            normalize: str = "training", **options) -> PredictRun:
    """Predicts every input (a file, folder or glob, or several); writes JSON + CSV + timeline PNG per input to
    `out_dir`, and `run.json` + `failures.json` for the run.

    Bad inputs, and inputs whose files cannot be written, are listed in `failures` with their reason; the others
    go on. Each input's files are written as soon as it is done, atomically. Run again, an input whose result in
    `out_dir` was computed from the same content (size, mtime, first and last MiB), bundle and options is read
    back, not predicted (`overwrite=True` redoes it); another input's result is never replaced (a same-named input
    is written as `name-2`). The bundle loads only when some input needs predicting.
    `store_paths`: 'given' (each input's path as given) or 'name' (its file name only) in everything written.
    `compilation_cache`: True (`default_cache_dir()`), a folder, False (off), None (JAX's own setting).
    `normalize`: 'training' (the voice features standardised with the tower's training statistics) or 'folder'
    (with the statistics of the speech of all inputs in the same folder, a first voice-only pass per folder: what
    transfers to a voice, language or room the tower never heard; each result's key then holds the folder's
    contents, so adding a file to the folder recomputes its results).
    `options`: `modalities` ('face,voice,words' or a list; default all), `max_utterance_s`, `window_s`,
    `block_s`, `frame_chunk`, ... (see `Predictor`).
    """
    from tqdm import tqdm

    from emohd_jax.serve.outputs import result_json, write_result
    from emohd_jax.serve.options import check_numeric_options

    started = _now()
    paths = _path_list(paths)
    if store_paths not in STORE_PATHS:
        raise UsageError(f"store_paths={store_paths!r}", "unknown choice", f"one of: {', '.join(STORE_PATHS)}")
    if normalize not in NORMALIZE:
        raise UsageError(f"normalize={normalize!r}", "unknown choice", f"one of: {', '.join(NORMALIZE)}")
    check_numeric_options(options)  # a bad range is a usage error before the bundle loads
    out = _writable_folder(out_dir) if out_dir is not None else None
    # The manifest, no tower built: what the resume keys need.
    manifest = read_manifest(epath.Path(bundle) if bundle is not None else DEFAULT_BUNDLE) \
        if bundle is None or isinstance(bundle, (str, os.PathLike)) else bundle.manifest
    computed_with = _computed_with(manifest, options)
    computed_with["options"]["normalize"] = normalize

    def stored(path: str | os.PathLike) -> str:
        return (pathlib.PurePath(path).name or str(path)) if store_paths == "name" else str(path)  # ".": "."

    inputs, missing = resolve_inputs(paths)
    failures = [(stored(path), reason) for path, reason in missing]
    outcome: dict[int, dict] = {}  # input index → its result (results keep the input order)
    resumed, done, todo, taken = [], [], [], set(RESERVED_STEMS)
    contents = {}
    for i, path in enumerate(inputs):
        try:
            contents[i] = _content_key(path, out)
        except OSError as error:
            failures.append((stored(path), f"cannot read: {error.strerror or error}"))
    folders = {i: str(pathlib.Path(inputs[i]).parent) for i in contents}  # normalize='folder': its sources
    folder_keys = {folder: hashlib.sha256(json.dumps(sorted((contents[i] for i in contents if folders[i] == folder),
                                                            key=lambda c: c["id"])).encode()).hexdigest()[:16]
                   for folder in set(folders.values())} if normalize == "folder" else {}
    for i, content in contents.items():
        path = inputs[i]
        key = {"input": content, **computed_with, **({"folder": folder_keys[folders[i]]} if folder_keys else {})}
        stem, earlier = _slot(out, path, key["input"]["id"], taken)
        if earlier is not None and not overwrite and earlier.get("computed_with") == key:
            outcome[i] = earlier
            resumed.append(stored(path))
        else:
            todo.append((i, path, stem, key))
    complete = False
    statistics: dict[str, dict] = {}  # normalize='folder': per folder, the speech it was standardised with
    try:
        if todo:
            from emohd_jax.serve.predictor import Predictor  # JAX and the towers: only when there is work

            use_compilation_cache(compilation_cache)
            predictor = Predictor(bundle, **options)  # loads the bundle (a folder) when it is not loaded
        todo.sort(key=lambda item: folders[item[0]] if folder_keys else "")  # a folder's inputs together
        for i, path, stem, key in tqdm(todo, desc="predict", unit="input", disable=not progress or not todo):
            if folder_keys and folders[i] not in statistics:
                members = [inputs[k] for k in contents if folders[k] == folders[i]]
                moments, frames = predictor.folder_statistics(members)
                predictor.use_voice_statistics(moments)  # None (no speech at all): the training statistics
                statistics[folders[i]] = {"inputs": len(members), "speech_frames": frames,
                                          "standardised_with": "folder" if moments is not None else "training"}
            try:
                result = result_json(predictor.predict_file(path))
            except BadInputError as error:
                failures.append((stored(path), error.reason))
                continue
            except OSError as error:  # unreadable, or gone since it was listed
                failures.append((stored(path), str(error)))
                continue
            result = {**result, "input": stored(path), "computed_with": key}
            if out is not None:
                try:
                    write_result(result, out, stem=stem)
                except OSError as error:  # this input's failure (a full disk, a folder in the way), not the batch's
                    failures.append((stored(path), f"its results could not be written: {error}"))
                    continue
            outcome[i] = result
            done.append(stored(path))
        complete = True
    finally:  # also when interrupted: what was finished and what failed is on disk
        if out is not None:
            _write_run_files(out, {
                "schema": RUN_SCHEMA, "complete": complete, "started": started, "finished": _now(),
                "paths": [stored(p) for p in paths], "inputs": [stored(p) for p in inputs], "done": done,
                "skipped_as_finished": resumed, "failed": [{"input": p, "reason": r} for p, r in failures],
                "versions": _versions(), "bundle_digest": computed_with["bundle"],
                "options": {**computed_with["options"], "store_paths": store_paths, "overwrite": overwrite},
                **({"voice_statistics": {stored(f): v for f, v in statistics.items()}} if folder_keys else {})})
    return PredictRun([outcome[i] for i in sorted(outcome)], failures, resumed)


def _path_list(paths) -> list[str | os.PathLike]:
    """One path or an iterable of paths → a list: a string is one path, never walked character by character."""
    if isinstance(paths, (str, os.PathLike)):
        return [paths]
    if isinstance(paths, (bytes, Mapping)) or not isinstance(paths, Iterable):
        raise TypeError(f"predict() takes a path (str or os.PathLike) or a sequence of paths, not "
                        f"{type(paths).__name__}")
    paths = list(paths)
    for path in paths:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"predict() takes paths as str or os.PathLike, not {type(path).__name__} ({path!r})")
    return paths


def _writable_folder(out_dir: str | os.PathLike) -> pathlib.Path:
    """`out_dir`, created if needed and checked writable before any work; UsageError naming it otherwise."""
    out = pathlib.Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(out, "the output folder (--out) is an existing file", "give a folder, new or existing")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".emohd-write-check-{uuid.uuid4().hex[:12]}"  # permissions say less (root, ACLs, mounts)
        probe.touch()
        probe.unlink()
    except OSError as error:
        raise UsageError(out, f"the output folder (--out) cannot be written to: {error.strerror or error}",
                         "give a folder you can write to") from error
    return out


def _computed_with(manifest: dict, options: dict) -> dict:
    """What decides a result besides its input, as stored in it: the bundle (a digest of its manifest, which
    holds each weight file's sha256) and every `Predictor` option that changes results, defaults filled in."""
    from emohd_jax.serve.options import predictor_options, requested_modalities

    defaults = predictor_options()
    if unknown := sorted(set(options) - set(defaults)):
        raise TypeError(f"predict() got unknown options {unknown} (the Predictor's are {sorted(defaults)})")
    chosen = {name: options.get(name, default) for name, default in defaults.items() if name not in MEMORY_ONLY}
    chosen["modalities"] = [m for m in requested_modalities(chosen["modalities"]) if m in manifest["towers"]]
    # Through JSON once, so a key compares equal to the same key read back from a result file.
    return json.loads(json.dumps({"bundle": manifest_digest(manifest), "options": chosen}, default=_plain))


def _plain(value) -> object:
    """An option value JSON cannot hold: a dataclass (`WordsPolicy`) as its fields, anything else (a
    transcriber) as its type's name."""
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else type(value).__qualname__


def _content_key(path: pathlib.Path, out: pathlib.Path | None) -> dict:
    """Which input a result is of and what that input held. `id`: its resolved path relative to `out` (moving
    both together keeps it), hashed, so a result names no folder; then size, mtime and the sha256 of the first
    and last MiB (a full hash reads the whole file on every rerun: see the README)."""
    resolved = path.resolve()
    where = os.path.relpath(resolved, out.resolve()) if out is not None else str(resolved)
    stat = resolved.stat()
    ends = hashlib.sha256()
    with open(resolved, "rb") as f:
        ends.update(f.read(HASHED_BYTES))
        if stat.st_size > HASHED_BYTES:
            f.seek(max(HASHED_BYTES, stat.st_size - HASHED_BYTES))
            ends.update(f.read())
    return {"id": hashlib.sha256(where.encode("utf-8", "surrogateescape")).hexdigest()[:16],
            "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256_first_last_mib": ends.hexdigest()}


def _slot(out: pathlib.Path | None, path: pathlib.Path, input_id: str, taken: set[str]) -> tuple[str, dict | None]:
    """The stem `path` is written under, and the result an earlier run wrote there for this same input (or None):
    `clip`, else `clip-2`, `clip-3`…, past the stems taken in this run and those holding another input's result
    (or any JSON that is not a result): those are never replaced. Long names are shortened (`fitting_stem`)."""
    from emohd_jax.serve.outputs import fitting_stem

    for n in itertools.count(1):
        stem = fitting_stem(path.stem if n == 1 else f"{path.stem}-{n}")
        if stem in taken:
            continue
        json_path = out / f"{stem}.json" if out is not None else None
        if json_path is None or not (json_path.exists() or json_path.is_symlink()):
            taken.add(stem)
            return stem, None
        earlier = _read_result(json_path)
        if earlier is not None and _same_input(earlier, path, input_id):
            taken.add(stem)
            return stem, earlier
    raise AssertionError("unreachable")


def _read_result(json_path: pathlib.Path) -> dict | None:
    """The "emohd.predict/1" result in `json_path`, or None (unreadable, or not a result)."""
    from emohd_jax.serve.outputs import SCHEMA

    try:
        result = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) and result.get("schema") == SCHEMA else None


def _same_input(result: dict, path: pathlib.Path, input_id: str) -> bool:
    """Whether an earlier result is of the input at `path` (one written before resume keys: by its path as given,
    and then it is recomputed, its key being absent)."""
    if "computed_with" in result:
        return result["computed_with"].get("input", {}).get("id") == input_id
    return result.get("input") == str(path)


def _write_run_files(out: pathlib.Path, run: dict) -> None:
    from emohd_jax.serve.outputs import write_json

    write_json(out / FAILURES_FILE, run["failed"])
    write_json(out / RUN_FILE, run)


def _versions() -> dict[str, str]:
    """The installed versions, from package metadata: importing JAX for its version would cost a rerun with
    nothing to do more than the rest of its work."""
    from importlib.metadata import version

    return {"emohd_jax": version("emohd-jax"), "jax": version("jax"), "jaxlib": version("jaxlib"),
            "python": platform.python_version()}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def default_cache_dir() -> pathlib.Path:
    """`$XDG_CACHE_HOME/emohd/jax`, else `~/.cache/emohd/jax`: where compiled programs are kept between runs."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "emohd" / "jax"


def use_compilation_cache(cache: bool | str | os.PathLike | None = True) -> pathlib.Path | None:
    """JAX's persistent compilation cache for this process: on (True: `default_cache_dir()`; or a folder), off
    (False), or as JAX has it (None). A second run then loads the towers' compiled programs instead of compiling
    them again, and the towers' traced programs (`emohd_jax.exported`, in its `exported/` folder) instead of
    tracing them again. Returns the folder in use (None when off, or when it cannot be created: a warning, no failure)."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    from emohd_jax import exported

    if cache is None:
        return None
    if cache is False:
        jax.config.update("jax_enable_compilation_cache", False)
        exported.enable(None)
        return None
    folder = default_cache_dir() if cache is True else pathlib.Path(cache)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        warnings.warn(f"{folder}: no compilation cache ({error.strerror or error}); every run compiles anew")
        return None
    exported.enable(folder / "exported")  # the traced programs beside the compiled ones
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", CACHE_MIN_COMPILE_S)
    compilation_cache.reset_cache()  # JAX opens its cache once per process: at the folder set now
    return folder
