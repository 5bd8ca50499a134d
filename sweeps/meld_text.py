"""16 configurations of the MELD text head over frozen MiniLM features (`--config meld_text_head`): a grid.

    emohd prepare --config meld_text_head && emohd sweep --config meld_text_head --sweep meld_text

Learning rate × dropout × label smoothing × class weights, 2 values each, seed and width fixed: one
program of 16 trials (the benchmark against 16 `emohd train` runs: `emohd bench sweep`).
"""

from optuna.distributions import CategoricalDistribution, FloatDistribution

from emohd_jax.study.space import Sweep


def get_sweep() -> Sweep:
    grid = {"optim.lr": [5e-4, 2e-3], "model.head_dropout": [0.1, 0.3], "train.label_smoothing": [0.0, 0.1],
            "train.class_weights": ["none", "sqrt"]}
    space = {"optim.lr": FloatDistribution(1e-4, 1e-2, log=True), "model.head_dropout": FloatDistribution(0.0, 0.5),
             "train.label_smoothing": FloatDistribution(0.0, 0.2),
             "train.class_weights": CategoricalDistribution(["none", "sqrt", "balanced"])}
    return Sweep(name="meld_text", space=space, grid=grid, sampler="grid", n_trials=16, batch_trials=16,
                 prune=False)
