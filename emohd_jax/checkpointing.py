"""orbax checkpoints: `latest/` (state + data-iterator position, for resume) and `best/` (selected on dev)."""

from __future__ import annotations

import json
import os

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath


def absolute(path: str | os.PathLike) -> epath.Path:
    """`path` made absolute, as orbax wants it; a URI (gs://…) already is, and epath's resolve() would mangle it."""
    path = epath.Path(path)
    return path if path.is_absolute() else path.resolve()


def latest_manager(workdir: str | os.PathLike, every: int) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=2, save_interval_steps=every, create=True)
    return ocp.CheckpointManager(absolute(workdir) / "checkpoints" / "latest", options=options,
                                 item_names=("state", "data"))


def best_manager(workdir: str | os.PathLike) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(absolute(workdir) / "checkpoints" / "best",
                                 options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))


def save_latest(manager: ocp.CheckpointManager, step: int, state, data_iterator, *, force: bool = False) -> None:
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                               data=grain.checkpoint.CheckpointSave(data_iterator)), force=force)


def restore_latest(manager: ocp.CheckpointManager, abstract_state, data_iterator):
    """(state, step) from the newest complete checkpoint, or (None, 0) when there is none.

    The state lands in `abstract_state`'s shardings (this run's mesh and partition rules), whatever the saving
    run's were: orbax reads each device's slice of the stored arrays.
    """
    step = manager.latest_step()
    if step is None:
        return None, 0
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=grain.checkpoint.CheckpointRestore(data_iterator)))
    return restored.state, step


def save_best(manager: ocp.CheckpointManager, step: int, weights: dict, metrics: dict) -> None:
    """`weights`: {'params', 'other'}; the metrics that made it best are kept beside it."""
    manager.save(step, args=ocp.args.StandardSave(weights), force=True)
    manager.wait_until_finished()
    if jax.process_index() == 0:
        (epath.Path(manager.directory) / "best_metrics.json").write_text(json.dumps({"step": step, **metrics}))


def best_score(manager: ocp.CheckpointManager, metric: str = "weighted_f1") -> float:
    path = epath.Path(manager.directory) / "best_metrics.json"
    return json.loads(path.read_text())[metric] if path.exists() else -1.0


def restore_soup(checkpoint_dirs: list[str | os.PathLike], abstract_weights: dict) -> dict:
    """The uniform "model soup" (Wortsman et al., 2022) of several runs: their weights averaged leaf by leaf.

    For runs fine-tuned from one pretrained start, which stay in one basin: the average often beats each
    run, at the cost of a single model. Float leaves (parameters, BatchNorm statistics) are averaged;
    others (counters) are taken from the first run. One directory is just that run's weights.
    """
    runs = [restore_weights(d, abstract_weights) for d in checkpoint_dirs]
    if not runs:
        raise ValueError("restore_soup needs at least one checkpoint directory")

    def mean(*leaves):
        if not jax.numpy.issubdtype(leaves[0].dtype, jax.numpy.floating):
            return leaves[0]
        return sum(leaves[1:], leaves[0]) / len(leaves)

    return jax.tree.map(mean, *runs)


def restore_weights(checkpoint_dir: str | os.PathLike, abstract_weights: dict) -> dict:
    """Weights of a finished run: `<workdir>` or `<workdir>/checkpoints/best` or a `best`-layout dir.

    Placed as `abstract_weights` says (ShapeDtypeStructs with shardings): a run saved on 8 devices or by
    2 processes restores onto 1 device or another mesh (tests/test_sharding.py).
    """
    manager = ocp.CheckpointManager(best_checkpoint_dir(checkpoint_dir))
    return manager.restore(manager.latest_step(), args=ocp.args.StandardRestore(abstract_weights))


def best_checkpoint_dir(checkpoint_dir: str | os.PathLike) -> epath.Path:
    """The folder of numbered steps `restore_weights` reads (`<workdir>/checkpoints/best` or the folder itself);
    FileNotFoundError when there is none: a command checks it before doing any work."""
    path = absolute(checkpoint_dir)
    for candidate in (path / "checkpoints" / "best", path):
        if candidate.is_dir() and any(p.name.isdigit() for p in candidate.iterdir()):
            return candidate
    raise FileNotFoundError(f"{path}: no checkpoint found (expected <workdir>/checkpoints/best/<step>)")
