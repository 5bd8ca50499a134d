"""The face stage-2 head over the frozen FER2013 mini-Xception map (`--config fer_face_head`): 64 TPE trials.

    emohd prepare --config fer_face_head && emohd sweep --config fer_face_head --sweep fer_face

Log-uniform lr and weight decay, dropout, label smoothing, class weights, hidden width (trials of one
width train as one program) and seed; 4 epochs each, evaluated after 2 and 4; selected on FER2013 val accuracy (the config's `select_on`).
"""

from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from emohd_jax.study.space import Sweep


def get_sweep() -> Sweep:
    space = {"optim.lr": FloatDistribution(1e-4, 3e-3, log=True),
             "optim.weight_decay": FloatDistribution(1e-6, 1e-2, log=True),
             "model.head_dropout": FloatDistribution(0.2, 0.7),
             "train.label_smoothing": FloatDistribution(0.0, 0.2),
             "train.class_weights": CategoricalDistribution(["none", "sqrt"]),
             "model.head_hidden": CategoricalDistribution([256, 512]),
             "seed": IntDistribution(0, 3)}
    # 4 epochs (the shipped head: 15; a 2-core CPU shared by many), evaluated after 2 and 4 (224 steps of 256 faces).
    fixed = {"train.num_epochs": 4, "train.eval_every": 224}
    return Sweep(name="fer_face", space=space, sampler="tpe", n_trials=64, batch_trials=16, fixed=fixed)
