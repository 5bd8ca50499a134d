"""The defaults every tower config shares, so each config file states only what differs (big_vision style)."""

import ml_collections


def run(task: str, name: str, *, report: str | None = None) -> ml_collections.ConfigDict:
    """A tower run: task, seed, where it lives, and the shared optim/train/eval/mesh blocks."""
    c = ml_collections.ConfigDict()
    c.task = task
    c.seed = 0
    c.workdir = f"work/runs/{name}"
    c.checkpoint = ""               # eval: a run's workdir (its best checkpoint) or a checkpoint dir; "a,b" = model soup
    c.report_dir = f"reports/{report or name}"
    c.optim = ml_collections.ConfigDict({
        "lr": 1e-3,
        "warmup_steps": 100,
        "weight_decay": 1e-4,
        "clip_norm": 1.0,
        "trainable": (),            # regexes over parameter paths; empty = everything trains
    })
    c.train = ml_collections.ConfigDict({
        "batch_size": 32,
        "num_epochs": 3,
        "num_steps": 0,             # > 0 overrides num_epochs
        "eval_every": 0,            # 0 = once per epoch
        "checkpoint_every": 100,
        "log_every": 20,
        "class_weights": "none",    # none | sqrt | balanced
        "label_smoothing": 0.0,
        "select_on": "weighted_f1",  # dev metric that picks the best checkpoint
    })
    c.eval = ml_collections.ConfigDict({
        "batch_size": 64,
        "clip_rule": "mean",        # records of one clip → its decision: mean of probabilities | vote
    })
    # model: devices per model shard; rules: partition table (emohd_jax.train.sharding.PARTITION_RULES: default | fsdp)
    c.mesh = ml_collections.ConfigDict({"model": 1, "rules": "default"})
    return c


def data(dataset: str, shards: str, *, eval_split: str = "dev", root: str = "",
         ) -> ml_collections.ConfigDict:
    """Where a tower's data comes from and which splits train, select and report."""
    return ml_collections.ConfigDict({
        "dataset": dataset,
        "root": root,               # "" = $EMOHD_DATA, else ../shared/data beside the checkout, else ./data
        "prepare_splits": ("train", eval_split),
        "train_split": "train",
        "eval_split": eval_split,   # model selection
        "split": eval_split,        # what `emohd eval` reports on
        "shards": shards,
        "file_format": "array_record",
    })
