"""Search spaces: `sweeps/<name>.py` defines `get_sweep()` → `Sweep` (Optuna distributions over config fields)."""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import pathlib

import ml_collections
import optuna

from emohd_jax.errors import UsageError
from emohd_jax.run_config import parse_override

SAMPLERS = ("tpe", "random", "grid")


@dataclasses.dataclass(frozen=True)
class Sweep:
    """What to search: `space` maps dotted config fields ("optim.lr") to Optuna distributions.

    `grid` (sampler 'grid'): the values of each field to cross, enqueued in the study in a fixed order. `fixed`: overrides every trial shares.
    `batch_trials` trials are asked and trained together (one program); `metric` (default: the config's
    `train.select_on`) is the dev value Optuna maximises and the median pruner compares at each evaluation.
    """

    name: str
    space: dict[str, optuna.distributions.BaseDistribution]
    n_trials: int = 16
    batch_trials: int = 8
    sampler: str = "tpe"
    grid: dict[str, list] | None = None
    fixed: dict[str, object] = dataclasses.field(default_factory=dict)
    seed: int = 0
    metric: str = ""
    prune: bool = True

    def make_sampler(self, n_asked: int) -> optuna.samplers.BaseSampler:
        """A sampler seeded by (seed, trials asked so far): a study resumed after a kill samples what it would have."""
        seed = self.seed + n_asked
        if self.sampler == "tpe":
            return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
        return optuna.samplers.RandomSampler(seed=seed)  # 'grid': the points are enqueued (`grid_points`)

    def grid_points(self) -> list[dict]:
        """Every combination of `grid`, in a fixed order (the first field varies slowest)."""
        names = list(self.grid or {})
        return [dict(zip(names, values)) for values in itertools.product(*(self.grid[n] for n in names))]


def sweeps_dir() -> pathlib.Path:
    """The packaged sweeps: an installed `sweeps` package, else sweeps/ beside configs/ in a source checkout."""
    from emohd_jax.run_config import CONFIG_DIR

    spec = importlib.util.find_spec("sweeps")
    return pathlib.Path(spec.origin).parent if spec and spec.origin else CONFIG_DIR.parent / "sweeps"


def load_sweep(spec: str) -> Sweep:
    """`name` (the packaged sweeps/<name>.py) or a path to a .py file defining `get_sweep()`."""
    path = pathlib.Path(spec) if spec.endswith(".py") else sweeps_dir() / f"{spec}.py"
    if not path.is_file():
        known = ", ".join(p.stem for p in sorted(sweeps_dir().glob("*.py")) if p.stem != "__init__")
        raise UsageError(spec, "no such sweep", f"give a sweep file's path or one of: {known}")
    module_spec = importlib.util.spec_from_file_location(f"emohd_sweep_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_sweep"):
        raise UsageError(path, "no get_sweep() in the sweep file", "define get_sweep() returning a Sweep")
    sweep = module.get_sweep()
    if sweep.sampler not in SAMPLERS:
        raise UsageError(path, f"unknown sampler {sweep.sampler!r}", f"one of: {', '.join(SAMPLERS)}")
    if sweep.sampler == "grid" and set(sweep.grid or {}) != set(sweep.space):
        raise UsageError(path, "a grid sweep needs grid values for exactly the fields of its space",
                         f"space: {sorted(sweep.space)}; grid: {sorted(sweep.grid or {})}")
    return sweep


def trial_config(config: ml_collections.ConfigDict, sweep: Sweep, params: dict) -> ml_collections.ConfigDict:
    """`config` with the sweep's fixed overrides and one trial's values set (each checked against the config)."""
    out = ml_collections.ConfigDict(config.to_dict())
    source = pathlib.Path(f"sweeps/{sweep.name}.py")
    for key, value in {**sweep.fixed, **params}.items():
        parse_override(out, key, str(value), source)
    return out
