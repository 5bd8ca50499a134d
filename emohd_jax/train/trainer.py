"""The generic trainer: `train_and_evaluate(config)` for every tower.

State is built with `jax.eval_shape` and materialised straight into its sharded layout; the
train step is a pure function jitted over the mesh with the state buffers donated; dropout keys
derive from (seed, step), so a run resumed from a checkpoint replays exactly what an
uninterrupted run does. I/O, logging and checkpoints stay in the loop, outside the step.
"""

from __future__ import annotations

import functools
import json
import pathlib
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.experimental import multihost_utils

from data_pipeline import shards
from emohd_jax import input_pipeline, metrics as metrics_lib
from emohd_jax.classes import EMOTIONS, NUM_CLASSES
from emohd_jax.clip_decision import group_by_clip
from emohd_jax.train import checkpointing, sharding
from emohd_jax.train.optim import make_optimizer
from emohd_jax.train.tasks import Task, make_task


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


def split_model(module: nnx.Module):
    return nnx.split(module, nnx.Param, nnx.RngState, ...)


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

    def loss_fn(module):
        return task.loss(module, batch, weights=weights, label_smoothing=label_smoothing)

    # nnx.value_and_grad differentiates the Params and lets BatchNorm/RNG state update in place.
    (loss, accuracy), grads = nnx.value_and_grad(loss_fn, has_aux=True)(module)
    return loss, accuracy, grads, split_model(module)[3]


def train_step(state: TrainState, batch: dict, model: Model, *, task: Task, tx: optax.GradientTransformation,
               weights: jax.Array, label_smoothing: float, seed: int) -> tuple[TrainState, dict]:
    """One optimiser update on a global batch: pure, jitted by the caller with the state donated."""
    loss, accuracy, grads, other = loss_and_grads(state, batch, model, task=task, weights=weights,
                                                  label_smoothing=label_smoothing, seed=seed)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                              other=other, opt_state=opt_state)
    return new_state, {"loss": loss, "accuracy": accuracy, "grad_norm": optax.global_norm(grads)}


def predict_step(params: nnx.State, other: nnx.State, batch: dict, model: Model, *, task: Task) -> jax.Array:
    """probs: [batch, classes] in fp32."""
    module = nnx.merge(model.graphdef, params, model.rng_state, other)
    return jax.nn.softmax(task.logits(module, batch, train=False).astype(jnp.float32), axis=-1)


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
    state_shardings = sharding.state_shardings(abstract_state, mesh)
    rng_shardings = sharding.state_shardings(abstract_rngs, mesh)
    state, rng_state = jax.jit(init, out_shardings=(state_shardings, rng_shardings))()
    if config.model.pretrained:
        host = build_module(task, config.seed)
        task.load_pretrained(host)
        _, params, _, other = split_model(host)
        state = state.replace(params=jax.device_put(params, state_shardings.params),
                              other=jax.device_put(other, state_shardings.other))
    return Model(graphdef=graphdef, rng_state=rng_state), state, state_shardings, tx


def _model_inputs(batch: dict, task: Task, extra: tuple[str, ...] = ()) -> dict:
    return {k: batch[k] for k in (*task.model_fields, *extra)}


def predict_split(source, *, task: Task, model: Model, params, other, mesh, global_batch_size: int):
    """(indices [n], probs [n, classes]) for every record of `source`, gathered on every process."""
    weights_sharding = jax.tree.map(lambda x: x.sharding, (params, other))
    step = jax.jit(functools.partial(predict_step, task=task),
                   in_shardings=(*weights_sharding, sharding.batch_sharding(mesh), None))
    collate = input_pipeline.Collate(task.padded)
    indices, probs = [], []
    for batch in input_pipeline.eval_batches(source, global_batch_size=global_batch_size, collate_fn=collate):
        batch = input_pipeline.agree_on_lengths(batch, task.padded)
        out = step(params, other, sharding.global_batch(_model_inputs(batch, task), mesh), model)
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

    workdir = pathlib.Path(config.workdir).resolve()  # orbax needs absolute paths
    task = make_task(config)
    mesh = sharding.make_mesh(config.mesh.model)
    train_source = shards.open_split(config.data.shards, config.data.train_split)
    dev_source = shards.open_split(config.data.shards, config.data.eval_split)
    manifest = json.loads((pathlib.Path(config.data.shards) / "manifest.json").read_text())
    global_bs = config.train.batch_size
    steps_per_epoch = len(train_source) // global_bs
    total_steps = config.train.num_steps or config.train.num_epochs * steps_per_epoch
    eval_every = config.train.eval_every or steps_per_epoch

    model, state, state_shardings, tx = create_train_state(task, config, mesh, total_steps)
    weights = class_weights(manifest["counts"][config.data.train_split]["records_per_class"], config.train.class_weights)
    data_iter = iter(input_pipeline.train_loader(
        train_source, global_batch_size=global_bs, seed=config.seed,
        collate_fn=input_pipeline.Collate(task.padded), augment=task.augment))
    latest = checkpointing.latest_manager(workdir, config.train.checkpoint_every)
    best = checkpointing.best_manager(workdir)
    restored, start = checkpointing.restore_latest(latest, state, data_iter)
    state = restored if restored is not None else state

    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    step_fn = jax.jit(
        functools.partial(train_step, task=task, tx=tx, weights=jnp.asarray(weights),
                          label_smoothing=config.train.label_smoothing, seed=config.seed),
        in_shardings=(state_shardings, sharding.batch_sharding(mesh), None),
        out_shardings=(state_shardings, replicated), donate_argnums=0)

    # Read once: every process must take the same save decisions (orbax saves are collective), and
    # only process 0 writes the file, so reading it again mid-run could diverge between processes.
    select_on = config.train.select_on  # the dev metric that picks the best checkpoint
    best_so_far = checkpointing.best_score(best, select_on)
    lead = jax.process_index() == 0
    writer = SummaryWriter(str(workdir / "tensorboard")) if lead else None
    progress = tqdm(range(start, total_steps), initial=start, total=total_steps, desc="train", disable=not lead)
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
            indices, probs = predict_split(dev_source, task=task, model=model, params=state.params, other=state.other,
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


def evaluate_checkpoint(config, split: str | None = None) -> tuple[dict, dict]:
    """Metrics of `config.checkpoint` (or the run's best; "a,b": their soup) on `split` of the shards."""
    task = make_task(config)
    mesh = sharding.make_mesh(config.mesh.model)
    abstract_module = nnx.eval_shape(lambda: build_module(task, config.seed))
    graphdef, abstract_params, _, abstract_other = split_model(abstract_module)
    target = jax.tree.map(
        lambda leaf, s: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=s),
        {"params": abstract_params, "other": abstract_other},
        sharding.state_shardings({"params": abstract_params, "other": abstract_other}, mesh))
    # `checkpoint`: one run, or several separated by commas, whose weights are averaged (a model soup).
    weights = checkpointing.restore_soup((config.checkpoint or config.workdir).split(","), target)
    # Only the RNG-stream template is needed: jit lets XLA drop the parameter initialisation.
    rng_state = jax.jit(lambda: split_model(build_module(task, config.seed))[2])()
    model = Model(graphdef=graphdef, rng_state=rng_state)
    from data_pipeline.prepare import shards_for_split

    split = split or config.data.split
    source = shards.open_split(shards_for_split(config, split), split)
    indices, probs = predict_split(source, task=task, model=model, params=weights["params"], other=weights["other"],
                                   mesh=mesh, global_batch_size=config.eval.batch_size)
    return evaluate_source(source, indices, probs, config.eval.clip_rule)
