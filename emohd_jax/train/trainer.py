"""The generic trainer: `train_and_evaluate(config)` for every tower.

State is built with `jax.eval_shape` and materialised straight into its sharded layout; the
train step is a pure function jitted over the mesh with the state buffers donated; dropout keys
derive from (seed, step), so a run resumed from a checkpoint replays exactly what an
uninterrupted run does. I/O, logging and checkpoints stay in the loop, outside the step.
"""

from __future__ import annotations

import collections
import functools
import json
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from etils import epath
from flax import nnx
from jax.experimental import multihost_utils

from data_pipeline import shards
from emohd_jax import checkpointing, input_pipeline, metrics as metrics_lib
from emohd_jax.classes import EMOTIONS, NUM_CLASSES
from emohd_jax.clip_decision import group_by_clip
from emohd_jax.towers import TOWERS, Task, split_model
from emohd_jax.train import sharding
from emohd_jax.train.optim import global_norm, make_optimizer, trainable_labels
from emohd_jax.xla_cpu import inference_jit


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: nnx.State
    other: nnx.State          # non-trainable variables that change in training (BatchNorm statistics)
    opt_state: optax.OptState


@flax.struct.dataclass
class Model:
    """The static half of a model: its graph and the RNG-stream template (reseeded every step)."""

    graphdef: Any = flax.struct.field(pytree_node=False)
    rng_state: nnx.State


def make_task(config) -> Task:
    """What `config.task` trains: a tower, or the text encoder's masked-LM stage."""
    from emohd_jax.train.feature_head import FeatureHeadTask

    tasks = {**TOWERS, "feature_head": FeatureHeadTask}
    if config.task not in tasks:
        raise ValueError(f"unknown task {config.task!r}; known: {sorted(tasks)}")
    return tasks[config.task](config)


def shuffle_seed(config) -> int:
    """The seed of the training data order: `train.shuffle_seed` when set (a sweep's trials vary `seed`, the
    initialisation and dropout, over one shared data stream), else `seed`."""
    return config.train.get("shuffle_seed", config.seed)


def class_weights(counts: dict[str, int], mode: str) -> np.ndarray:
    """Per-class loss weights [classes] from training counts: 'none', 'balanced' (1/n) or 'sqrt' (1/√n)."""
    n = np.asarray([counts.get(name, 0) for name in EMOTIONS], np.float64)
    if mode == "none":
        return np.ones(NUM_CLASSES, np.float32)
    power = {"balanced": 1.0, "sqrt": 0.5}[mode]
    w = np.where(n > 0, 1.0 / np.maximum(n, 1) ** power, 0.0)
    return (w * n.sum() / (w * n).sum()).astype(np.float32)  # mean weight over samples = 1


def loss_and_grads(state: TrainState, batch: dict, model: Model, *, task: Task, weights: jax.Array,
                   label_smoothing: float, seed: int):
    """(loss, accuracy, grads, updated non-trainable state) for one global batch; dropout keyed by (seed, step)."""
    module = nnx.merge(model.graphdef, state.params, model.rng_state, state.other)
    nnx.reseed(module, dropout=jax.random.fold_in(jax.random.key(seed), state.step))

    # A value XLA cannot fold: a constant (one run) and a traced value (a sweep's trial) then compile to the same
    # loss, whose multiply-adds XLA:CPU contracts into the same FMAs, so both round alike.
    label_smoothing = jax.lax.optimization_barrier(jnp.asarray(label_smoothing, jnp.float32))

    def loss_fn(module):
        return task.loss(module, batch, weights=weights, label_smoothing=label_smoothing)

    # nnx.value_and_grad differentiates the Params and lets BatchNorm/RNG state update in place.
    (loss, accuracy), grads = nnx.value_and_grad(loss_fn, has_aux=True)(module)
    return loss, accuracy, grads, split_model(module)[3]


def train_step(state: TrainState, batch: dict, model: Model, *, task: Task, tx: optax.GradientTransformation,
               weights: jax.Array, label_smoothing: float, seed: int, trains: Any = None) -> tuple[TrainState, dict]:
    """One optimiser update on a global batch: pure, jitted by the caller with the state donated.

    `trains`: a tree of Python bools like `params`; frozen leaves' gradients are replaced by zeros here,
    so XLA drops their computation (a frozen MiniLM under LoRA costs no weight gradients).
    """
    loss, accuracy, grads, other = loss_and_grads(state, batch, model, task=task, weights=weights,
                                                  label_smoothing=label_smoothing, seed=seed)
    if trains is not None:
        grads = jax.tree.map(lambda g, t: g if t else jnp.zeros_like(g), grads, trains)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                              other=other, opt_state=opt_state)
    return new_state, {"loss": loss, "accuracy": accuracy, "grad_norm": global_norm(grads)}


def predict_step(params: nnx.State, other: nnx.State, batch: dict, model: Model, *, task: Task) -> jax.Array:
    """probs: [batch, classes] in fp32."""
    return task.predict_probs(nnx.merge(model.graphdef, params, model.rng_state, other), batch)


def build_module(task: Task, seed: int) -> nnx.Module:
    """The task's model with parameter and dropout streams derived from the run's seed."""
    return task.build_model(nnx.Rngs(seed, dropout=seed + 1))


def create_train_state(task: Task, config, mesh, total_steps: int):
    """(Model, TrainState sharded over `mesh`, its shardings, optimiser); pretrained weights loaded if asked."""
    graphdef, abstract_params, _, _ = split_model(nnx.eval_shape(lambda: build_module(task, config.seed)))
    tx = make_optimizer(config.optim, abstract_params, total_steps)

    def init():
        _, params, rngs, other = split_model(build_module(task, config.seed))
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, other=other, opt_state=tx.init(params)), rngs

    abstract_state, abstract_rngs = jax.eval_shape(init)
    rules = sharding.partition_rules(config.mesh.get("rules", "default"))
    state_shardings = sharding.state_shardings(abstract_state, mesh, rules)
    rng_shardings = sharding.state_shardings(abstract_rngs, mesh, rules)
    state, rng_state = jax.jit(init, out_shardings=(state_shardings, rng_shardings))()
    if config.model.pretrained:
        host = build_module(task, config.seed)
        task.load_pretrained(host)
        _, params, _, other = split_model(host)
        # Loaded weights come as stored (fp32); the state keeps the model's param_dtype.
        params, other = jax.tree.map(lambda x, a: x.astype(a.dtype), (params, other),
                                     (abstract_state.params, abstract_state.other))
        state = state.replace(params=jax.device_put(params, state_shardings.params),
                              other=jax.device_put(other, state_shardings.other))
    return Model(graphdef=graphdef, rng_state=rng_state), state, state_shardings, tx


def make_train_step(task: Task, config, tx, state: TrainState, state_shardings, mesh, weights: np.ndarray):
    """(state, batch, model) → (state, metrics): `train_step` jitted once over `mesh`, the state donated."""
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    trains = jax.tree.map(lambda label: label == "train", trainable_labels(state.params, list(config.optim.trainable)))
    return jax.jit(
        functools.partial(train_step, task=task, tx=tx, weights=jnp.asarray(weights),
                          label_smoothing=config.train.label_smoothing, seed=config.seed, trains=trains),
        in_shardings=(state_shardings, sharding.batch_sharding(mesh), None),
        out_shardings=(state_shardings, replicated), donate_argnums=0)


def _model_inputs(batch: dict, task: Task, extra: tuple[str, ...] = ()) -> dict:
    return {k: batch[k] for k in (*task.model_fields, *extra)}


def make_predict_fn(task: Task, model: Model, weights: dict, mesh):
    """probs = fn(params, other, batch): `predict_step` jitted once over `mesh` for the weights' layout."""
    weights_sharding = jax.tree.map(lambda x: x.sharding, (weights["params"], weights["other"]))
    step = inference_jit(functools.partial(predict_step, task=task),
                         in_shardings=(*weights_sharding, sharding.batch_sharding(mesh), None))
    return lambda params, other, batch: step(params, other, batch, model)


def predict_split(source, predict_fn, *, task: Task, params, other, mesh, global_batch_size: int):
    """(indices [n], probs [n, classes]) for every record of `source`, gathered on every process."""
    collate = input_pipeline.Collate(task.padded)
    indices, probs = [], []
    for batch in input_pipeline.eval_batches(source, global_batch_size=global_batch_size, collate_fn=collate):
        batch = input_pipeline.agree_on_lengths(batch, task.padded)
        out = predict_fn(params, other, sharding.global_batch(_model_inputs(batch, task), mesh))
        probs.append(multihost_utils.process_allgather(out, tiled=True))
        indices.append(multihost_utils.process_allgather(batch["index"], tiled=True))
    indices, probs = np.concatenate(indices), np.concatenate(probs)
    keep = indices >= 0
    order = np.argsort(indices[keep])
    return indices[keep][order], probs[keep][order]


def evaluate_source(source, indices: np.ndarray, probs: np.ndarray, clip_rule: str) -> tuple[dict, dict]:
    """Clip-level metrics (records of one uid are one clip) and the per-clip predictions."""
    uids, labels = [], []
    for i in indices:
        record = source[int(i)]
        uids.append(record["uid"].decode() if isinstance(record["uid"], bytes) else str(record["uid"]))
        labels.append(int(record["label"]))
    clip_uids, clip_labels, decisions, clip_probs = group_by_clip(uids, np.asarray(labels), probs, clip_rule)
    results = metrics_lib.classification_metrics(clip_labels, decisions)
    predictions = {"uid": clip_uids, "label": clip_labels.tolist(), "pred": decisions.tolist(),
                   "probs": np.round(clip_probs, 5).tolist()}
    return results, predictions


def train_and_evaluate(config) -> dict:
    """Trains `config.task` on the shards in `config.data.shards`, resuming from `config.workdir` if it can."""
    from tensorboardX import SummaryWriter
    from tqdm import tqdm

    workdir = checkpointing.absolute(config.workdir)  # orbax needs absolute paths; gs:// stays as it is
    task = make_task(config)
    mesh = sharding.make_mesh(config.mesh.model)
    train_source = shards.open_split(config.data.shards, config.data.train_split)
    dev_source = shards.open_split(config.data.shards, config.data.eval_split)
    manifest = json.loads((epath.Path(config.data.shards) / "manifest.json").read_text())
    global_bs = config.train.batch_size
    steps_per_epoch = len(train_source) // global_bs
    total_steps = config.train.num_steps or config.train.num_epochs * steps_per_epoch
    eval_every = config.train.eval_every or steps_per_epoch

    model, state, state_shardings, tx = create_train_state(task, config, mesh, total_steps)
    train_counts = collections.Counter()
    for part in config.data.train_split.split("+"):  # a tfds union of splits ("a+b") counts each part
        train_counts.update(manifest["counts"][part]["records_per_class"])
    weights = class_weights(dict(train_counts), config.train.class_weights)
    data_iter = iter(input_pipeline.train_loader(
        train_source, global_batch_size=global_bs, seed=shuffle_seed(config),
        collate_fn=input_pipeline.Collate(task.padded), augment=task.augment))
    latest = checkpointing.latest_manager(workdir, config.train.checkpoint_every)
    best = checkpointing.best_manager(workdir)
    restored, start = checkpointing.restore_latest(latest, state, data_iter)
    state = restored if restored is not None else state

    step_fn = make_train_step(task, config, tx, state, state_shardings, mesh, weights)

    # Read once: every process must take the same save decisions (orbax saves are collective), and
    # only process 0 writes the file, so reading it again mid-run could diverge between processes.
    select_on = config.train.select_on  # the dev metric that picks the best checkpoint
    best_so_far = checkpointing.best_score(best, select_on)
    lead = jax.process_index() == 0
    writer = SummaryWriter(str(workdir / "tensorboard")) if lead else None
    progress = tqdm(range(start, total_steps), initial=start, total=total_steps, desc="train", disable=not lead)
    predict_fn = make_predict_fn(task, model, {"params": state.params, "other": state.other}, mesh) \
        if task.evaluates else None
    history = []
    for step in progress:
        local = input_pipeline.agree_on_lengths(next(data_iter), task.padded)
        batch = sharding.global_batch(_model_inputs(local, task, task.target_fields), mesh)
        state, step_metrics = step_fn(state, batch, model)
        done = step + 1
        if done % config.train.log_every == 0 and lead:
            scalars = jax.device_get(step_metrics)
            progress.set_postfix(loss=f"{scalars['loss']:.4f}")
            for name, value in scalars.items():
                writer.add_scalar(f"train/{name}", float(value), done)
        if task.evaluates and (done % eval_every == 0 or done == total_steps):
            indices, probs = predict_split(dev_source, predict_fn, task=task, params=state.params, other=state.other,
                                           mesh=mesh, global_batch_size=config.eval.batch_size)
            dev_metrics, _ = evaluate_source(dev_source, indices, probs, config.eval.clip_rule)
            summary = {k: dev_metrics[k] for k in ("accuracy", "weighted_f1", "macro_f1")}
            history.append({"step": done, **summary})
            if lead:
                for name, value in summary.items():
                    writer.add_scalar(f"{config.data.eval_split}/{name}", value, done)
                progress.write(f"step {done}: {config.data.eval_split} " +
                               " ".join(f"{k}={v:.2f}" for k, v in summary.items()))
            if summary[select_on] > best_so_far:
                best_so_far = summary[select_on]
                checkpointing.save_best(best, done, {"params": state.params, "other": state.other}, summary)
        checkpointing.save_latest(latest, done, state, data_iter, force=done == total_steps)
    latest.wait_until_finished()
    if lead:
        task.finish(nnx.merge(model.graphdef, state.params, model.rng_state, state.other), workdir)
    if writer:
        writer.close()
    return {"steps": total_steps, "history": history, "final_state": state}


def restore_for_eval(config, task: Task, mesh) -> tuple[Model, dict]:
    """(Model, {'params', 'other'} sharded over `mesh`) of `config.checkpoint` or the run's best.

    `checkpoint`: a run dir, several joined by commas (their weights averaged: a model soup), or
    'pretrained' for the tower's own starting weights (e.g. the converted mini-Xception, untrained here).
    """
    abstract_module = nnx.eval_shape(lambda: build_module(task, config.seed))
    graphdef, abstract_params, _, abstract_other = split_model(abstract_module)
    abstract = {"params": abstract_params, "other": abstract_other}
    shardings = sharding.state_shardings(abstract, mesh, sharding.partition_rules(config.mesh.get("rules", "default")))
    if config.checkpoint == "pretrained":
        host = build_module(task, config.seed)
        task.load_pretrained(host)
        _, params, _, other = split_model(host)
        weights = jax.device_put({"params": params, "other": other}, shardings)
    else:
        target = jax.tree.map(lambda leaf, s: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=s),
                              abstract, shardings)
        weights = checkpointing.restore_soup((config.checkpoint or config.workdir).split(","), target)
    # Only the RNG-stream template is needed: jit lets XLA drop the parameter initialisation.
    rng_state = jax.jit(lambda: split_model(build_module(task, config.seed))[2])()
    return Model(graphdef=graphdef, rng_state=rng_state), weights


def evaluate_shards(config, shards_dir: str, split: str) -> tuple[dict, dict]:
    """Clip-level metrics and predictions of the restored weights (`restore_for_eval`) on `split` of `shards_dir`."""
    task = make_task(config)
    mesh = sharding.make_mesh(config.mesh.model)
    model, weights = restore_for_eval(config, task, mesh)
    source = shards.open_split(shards_dir, split)
    indices, probs = predict_split(source, make_predict_fn(task, model, weights, mesh), task=task,
                                   params=weights["params"], other=weights["other"], mesh=mesh,
                                   global_batch_size=config.eval.batch_size)
    return evaluate_source(source, indices, probs, config.eval.clip_rule)
