"""A trial batch trained as one program: K configurations' states stacked on a leading trial axis.

The generic trainer's `train_step` is `jax.vmap`ped over the trials inside one `jit`; what differs between
trials is data, not code: per-trial seeds (initialisation, dropout keys), learning rate and weight decay
(injected optimiser state, `optim.set_hyperparams`), dropout rate (`feature_head.DropoutRate`), label
smoothing and class weights are traced arrays [trials, ...], so one compilation serves every batch whose
trials share the rest of the config. The training stream is read once per step for all K. The trial axis
is split over the devices (8 trials on 8 devices: one trial each); devices left over split the batch.
Every trial's evaluation, best checkpoint and TensorBoard scalars are those `emohd train` writes for one
run (its steps bit for bit on XLA:CPU: `TrialProgram.train_step`); the batch's stacked state and data position
are checkpointed together, so a killed batch resumes.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from data_pipeline import shards
from emohd_jax import checkpointing, input_pipeline
from emohd_jax.run_config import flatten
from emohd_jax.towers import split_model
from emohd_jax.train import sharding
from emohd_jax.train.optim import make_optimizer, set_hyperparams, trainable_labels
from emohd_jax.train.trainer import (Model, TrainState, class_weights, evaluate_source, make_task, predict_split,
                                     predict_step, shuffle_seed, train_step)
from emohd_jax.xla_cpu import inference_jit

TRIAL = "trial"
# Config fields that become per-trial arrays; any other field must be equal across a batch (`batch_groups`).
TRACED_FIELDS = ("seed", "optim.lr", "optim.weight_decay", "model.head_dropout", "train.label_smoothing",
                 "train.class_weights")
PER_TRIAL_FIELDS = ("workdir", "report_dir")  # where each trial writes: not part of the program


def batch_groups(configs: list[ml_collections.ConfigDict]) -> list[list[int]]:
    """Indices of `configs` grouped by everything but `TRACED_FIELDS` (e.g. head width): one program per group."""
    groups: dict[str, list[int]] = {}
    for i, config in enumerate(configs):
        rest = {k: v for k, v in flatten(config).items() if k not in (*TRACED_FIELDS, *PER_TRIAL_FIELDS)}
        groups.setdefault(json.dumps(rest, sort_keys=True, default=str), []).append(i)
    return list(groups.values())


@dataclasses.dataclass
class TrialValues:
    """The traced hyper-parameters of K trials, each with a leading [trials] axis."""

    seed: np.ndarray            # [trials] int32
    lr: np.ndarray              # [trials]
    weight_decay: np.ndarray    # [trials]
    dropout: np.ndarray         # [trials]
    label_smoothing: np.ndarray  # [trials]
    class_weights: np.ndarray   # [trials, classes]

    @classmethod
    def of(cls, configs: list[ml_collections.ConfigDict], train_counts: dict[str, int]) -> "TrialValues":
        f32 = lambda values: np.asarray(values, np.float32)  # noqa: E731
        return cls(seed=np.asarray([c.seed for c in configs], np.int32), lr=f32([c.optim.lr for c in configs]),
                   weight_decay=f32([c.optim.weight_decay for c in configs]),
                   dropout=f32([c.model.get("head_dropout", 0.0) for c in configs]),
                   label_smoothing=f32([c.train.label_smoothing for c in configs]),
                   class_weights=np.stack([class_weights(train_counts, c.train.class_weights) for c in configs]))


def trial_mesh(num_trials: int, devices=None) -> jax.sharding.Mesh:
    """(trial, data) mesh: the trial axis over as many devices as divide it, the batch over the rest."""
    devices = jax.devices() if devices is None else list(devices)
    trials = math.gcd(num_trials, len(devices))
    return jax.make_mesh((trials, len(devices) // trials), (TRIAL, sharding.DATA),
                         axis_types=(jax.sharding.AxisType.Auto,) * 2, devices=devices)


def _set_dropout(module: nnx.Module, rate: jax.Array) -> None:
    from emohd_jax.train.feature_head import DropoutRate

    nnx.update(module, jax.tree.map(lambda r: jnp.full_like(r, rate), nnx.state(module, DropoutRate)))


@dataclasses.dataclass
class TrialProgram:
    """The compiled pieces of one group of trials: init, train step, predict, and the shardings they use."""

    task: object
    config: ml_collections.ConfigDict
    mesh: jax.sharding.Mesh
    total_steps: int
    train_counts: dict

    def __post_init__(self):
        task, config = self.task, self.config
        graphdef, abstract_params, _, _ = split_model(nnx.eval_shape(lambda: task.build_model(nnx.Rngs(0))))
        self.graphdef = graphdef
        self.tx = make_optimizer(config.optim, abstract_params, self.total_steps)
        self.trains = jax.tree.map(lambda label: label == "train",
                                   trainable_labels(abstract_params, list(config.optim.trainable)))
        stacked = NamedSharding(self.mesh, P(TRIAL))
        self.stacked = lambda tree: jax.tree.map(lambda _: stacked, tree)  # noqa: E731
        self.batch_sharding = NamedSharding(self.mesh, P(sharding.DATA))

    def init(self, values: TrialValues) -> tuple[TrainState, Model]:
        """Stacked states [trials, ...]: each trial's as `trainer.create_train_state` builds it for its own config."""
        tx, graphdef = self.tx, self.graphdef

        def one(seed, lr, weight_decay, dropout):
            # trainer.build_module's streams (seed, dropout=seed + 1), from a traced seed.
            module = self.task.build_model(nnx.Rngs(jax.random.key(seed), dropout=jax.random.key(seed + 1)))
            _set_dropout(module, dropout)
            _, params, rngs, other = split_model(module)
            opt_state = set_hyperparams(tx.init(params), learning_rate=lr, weight_decay=weight_decay)
            return TrainState(step=jnp.zeros((), jnp.int32), params=params, other=other, opt_state=opt_state), rngs

        args = (values.seed, values.lr, values.weight_decay, values.dropout)
        abstract = jax.eval_shape(jax.vmap(one), *args)
        state, rngs = jax.jit(jax.vmap(one), out_shardings=self.stacked(abstract))(*args)
        return state, Model(graphdef=graphdef, rng_state=rngs)

    def train_step(self, state: TrainState, model: Model, values: TrialValues):
        """(states, batch, model) → (states, metrics [trials]): `trainer.train_step` vmapped over trials, jitted once.

        Each trial computes the numbers its run alone computes (`emohd train`, same seed: bitwise on XLA:CPU).
        Two things make that so: the batch is broadcast to [trials, ...], so every dot has the trial axis as a
        batch dimension (one matmul per trial, of one run's shape; a batch shared across trials would fold them
        into the matmul's free dimension, which XLA:CPU blocks, and so sums, otherwise), and the step counters,
        equal in every trial, go in unbatched, so what derives from them alone (Adam's bias corrections,
        the schedule) is one scalar shared by every parameter, as in one run (see `optim.divide_by_scalar`).
        """
        task, tx, trains = self.task, self.tx, self.trains

        def one(state, batch, model, weights, label_smoothing, seed):
            return train_step(state, batch, model, task=task, tx=tx, weights=weights, label_smoothing=label_smoothing,
                              seed=seed, trains=trains)

        def step(state, batch, model, weights, label_smoothing, seed):
            trials = seed.shape[0]
            batch = jax.tree.map(lambda x: jnp.broadcast_to(x, (trials, *x.shape)), batch)
            counters = jax.tree_util.tree_map_with_path(lambda path, _: _is_step_counter(path), state)
            state = jax.tree.map(lambda x, shared: x[0] if shared else x, state, counters)
            state_axes = jax.tree.map(lambda shared: None if shared else 0, counters)
            return jax.vmap(one, in_axes=(state_axes, 0, 0, 0, 0, 0))(state, batch, model, weights, label_smoothing,
                                                                      seed)

        traced = (values.class_weights, values.label_smoothing, values.seed)
        in_shardings = (self.stacked(state), self.batch_sharding, self.stacked(model), *self.stacked(traced))
        fn = jax.jit(step, in_shardings=in_shardings, out_shardings=(self.stacked(state), None), donate_argnums=0)
        traced = jax.device_put(traced, self.stacked(traced))
        return lambda state, batch, model: fn(state, batch, model, *traced)

    def predict_fn(self, model: Model) -> Callable:
        """probs [batch, trials, classes] = fn(params, other, batch), every trial's `trainer.predict_step` at once."""
        task = self.task

        def predict(params, other, batch, model):
            probs = jax.vmap(lambda p, o, m: predict_step(p, o, batch, m, task=task))(params, other, model)
            return probs.transpose(1, 0, 2)  # batch first: `predict_split` gathers and orders along it

        fn = inference_jit(predict)
        return lambda params, other, batch: fn(params, other, batch, model)


def _is_step_counter(path: tuple) -> bool:
    """`TrainState.step` and the optimiser states' `count`s: the same in every trial of a batch."""
    return getattr(path[-1], "name", None) in ("step", "count")


def unstack(tree, k: int):
    """Trial `k`'s slice of a stacked tree (on the host, for its checkpoint)."""
    return jax.tree.map(lambda x: np.asarray(x[k]), tree)


@dataclasses.dataclass
class TrialOutcome:
    history: list[dict]          # dev metrics at each evaluation: {"step", "accuracy", "weighted_f1", "macro_f1"}
    best: dict                   # the evaluation that selected the best checkpoint
    checkpoint: str              # the trial's run directory (its checkpoints/best, as `emohd train` writes)
    pruned: bool


def train_trial_batch(configs: list[ml_collections.ConfigDict], batch_dir: str, trial_dirs: list[str], *,
                      on_evaluation: Callable[[int, int, dict], bool] | None = None,
                      devices=None) -> list[TrialOutcome]:
    """Trains `configs` (one group of `batch_groups`) together; resumes from `batch_dir` after a kill.

    `on_evaluation(k, step, summary)` → True prunes trial k (an Optuna report); a pruned trial's slice keeps
    computing with the others but stops selecting checkpoints.
    """
    from tensorboardX import SummaryWriter
    from tqdm import tqdm

    base = configs[0]
    task = make_task(base)
    train_source = shards.open_split(base.data.shards, base.data.train_split)
    dev_source = shards.open_split(base.data.shards, base.data.eval_split)
    manifest = json.loads((epath.Path(base.data.shards) / "manifest.json").read_text())
    counts = manifest["counts"][base.data.train_split]["records_per_class"]
    steps_per_epoch = len(train_source) // base.train.batch_size
    total_steps = base.train.num_steps or base.train.num_epochs * steps_per_epoch
    eval_every = base.train.eval_every or steps_per_epoch
    select_on = base.train.select_on
    # uid and label of every dev record, read once: each evaluation scores K trials on them.
    dev_labels = [{"uid": r["uid"], "label": r["label"]} for r in (dev_source[i] for i in range(len(dev_source)))]

    values = TrialValues.of(configs, counts)
    program = TrialProgram(task, base, trial_mesh(len(configs), devices), total_steps, counts)
    state, model = program.init(values)
    data_iter = iter(input_pipeline.train_loader(
        train_source, global_batch_size=base.train.batch_size, seed=shuffle_seed(base),
        collate_fn=input_pipeline.Collate(task.padded), augment=task.augment))
    latest = checkpointing.latest_manager(batch_dir, base.train.checkpoint_every)
    restored, start = checkpointing.restore_latest(latest, state, data_iter)
    state = restored if restored is not None else state
    step_fn = program.train_step(state, model, values)
    predict_fn = program.predict_fn(model)

    k_trials = len(configs)
    bests = [checkpointing.best_manager(d) for d in trial_dirs]
    best_so_far = [checkpointing.best_score(m, select_on) for m in bests]
    histories = [_read_history(d, start) for d in trial_dirs]
    pruned = [bool(h and h[-1].get("pruned")) for h in histories]
    lead = jax.process_index() == 0
    writers = [SummaryWriter(str(checkpointing.absolute(d) / "tensorboard")) for d in trial_dirs] if lead else []
    progress = tqdm(range(start, total_steps), initial=start, total=total_steps, disable=not lead,
                    desc=f"{k_trials} trials")
    for step in progress:
        local = input_pipeline.agree_on_lengths(next(data_iter), task.padded)
        batch = {k: jax.make_array_from_process_local_data(program.batch_sharding, local[k])
                 for k in (*task.model_fields, *task.target_fields)}
        state, step_metrics = step_fn(state, batch, model)
        done = step + 1
        if done % base.train.log_every == 0 and lead:
            scalars = jax.device_get(step_metrics)  # each [trials]
            for k, writer in enumerate(writers):
                for name, value in scalars.items():
                    writer.add_scalar(f"train/{name}", float(value[k]), done)
        evaluate = done % eval_every == 0 or done == total_steps
        if evaluate:
            indices, probs = predict_split(dev_source, predict_fn, task=task, params=state.params, other=state.other,
                                           mesh=program.mesh, global_batch_size=base.eval.batch_size)
            for k in range(k_trials):
                metrics, _ = evaluate_source(dev_labels, indices, probs[:, k], base.eval.clip_rule)
                summary = {name: metrics[name] for name in ("accuracy", "weighted_f1", "macro_f1")}
                if lead:
                    for name, value in summary.items():
                        writers[k].add_scalar(f"{base.data.eval_split}/{name}", value, done)
                if pruned[k]:
                    continue
                if summary[select_on] > best_so_far[k]:
                    best_so_far[k] = summary[select_on]
                    checkpointing.save_best(bests[k], done, {"params": unstack(state.params, k),
                                                             "other": unstack(state.other, k)}, summary)
                pruned[k] = bool(on_evaluation(k, done, summary)) if on_evaluation else False
                histories[k].append({"step": done, **summary, **({"pruned": True} if pruned[k] else {})})
                _write_history(trial_dirs[k], histories[k])
        checkpointing.save_latest(latest, done, state, data_iter, force=evaluate or done == total_steps)
    latest.wait_until_finished()
    for writer in writers:
        writer.close()
    outcomes = []
    for k, trial_dir in enumerate(trial_dirs):
        best = max(histories[k], key=lambda h: h[select_on]) if histories[k] else {}
        outcomes.append(TrialOutcome(history=histories[k], best=best, checkpoint=str(trial_dir), pruned=pruned[k]))
    return outcomes


def _history_path(trial_dir: str) -> epath.Path:
    return checkpointing.absolute(trial_dir) / "history.json"


def _read_history(trial_dir: str, up_to_step: int) -> list[dict]:
    """The evaluations a resumed batch already made (those after its restored step are made again)."""
    path = _history_path(trial_dir)
    if not path.exists():
        return []
    return [h for h in json.loads(path.read_text()) if h["step"] <= up_to_step]


def _write_history(trial_dir: str, history: list[dict]) -> None:
    if jax.process_index() == 0:
        path = _history_path(trial_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / (path.name + ".tmp")
        tmp.write_text(json.dumps(history))
        tmp.replace(path)
