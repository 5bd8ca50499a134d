"""Placement as a table, and checkpoints that move: partition rules over parameter paths, and a run saved on
8 devices (FSDP: weights split over `data`) or by 2 processes restored onto 1 device and onto a 4 × 2 mesh."""

import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AbstractMesh, PartitionSpec as P

from emohd_jax.cli import run_prepare
from emohd_jax.models.vggish import VGGISH_CONFIGS, VGGishClassifier
from emohd_jax.run_config import load_config
from emohd_jax.towers import split_model
from emohd_jax.train import sharding
from emohd_jax.train.trainer import make_task, restore_for_eval
from tests.train_harness import REPO, config_args, make_tiny_setup


def _specs(abstract, axis_sizes: tuple[int, int], rules: str) -> dict[str, P]:
    mesh = AbstractMesh(axis_sizes, (sharding.DATA, sharding.MODEL))
    table = sharding.partition_rules(rules)
    return {sharding.leaf_path(path): sharding.param_spec(sharding.leaf_path(path), tuple(leaf.shape), mesh, table)
            for path, leaf in jax.tree_util.tree_leaves_with_path(abstract)}


@pytest.fixture(scope="module")
def vggish_state():
    _, params, _, other = split_model(nnx.eval_shape(lambda: VGGishClassifier(VGGISH_CONFIGS["small"],
                                                                              rngs=nnx.Rngs(0))))
    return {"params": params, "other": other}


def test_default_rules_split_the_last_dim_over_model_or_replicate(vggish_state):
    specs = _specs(vggish_state, (4, 2), "default")
    assert specs["params/vggish/conv/0/kernel"] == P(None, None, None, sharding.MODEL)  # [3, 3, 1, 16]
    assert specs["params/vggish/fc/0/kernel"] == P(None, sharding.MODEL)                 # [3072, 512]
    assert specs["params/head/kernel"] == P()          # [512, 7]: 7 does not split in 2
    assert specs["params/vggish/conv/0/bias"] == P()   # 1-D: the rule's rank does not fit
    assert set(_specs(vggish_state, (8, 1), "default").values()) == {P()}  # model = 1: plain data parallelism


def test_fsdp_rules_split_kernels_over_data_where_they_divide(vggish_state):
    specs = _specs(vggish_state, (4, 2), "fsdp")
    assert specs["params/vggish/conv/1/kernel"] == P(None, None, sharding.DATA, sharding.MODEL)  # [3, 3, 16, 32]
    assert specs["params/vggish/conv/0/kernel"] == P(None, None, None, sharding.MODEL)  # in = 1: not over data
    assert specs["params/head/kernel"] == P(sharding.DATA)                              # [512, 7]
    assert specs["params/vggish/fc/0/bias"] == P()
    on_8 = _specs(vggish_state, (8, 1), "fsdp")
    assert on_8["params/vggish/fc/1/kernel"] == P(sharding.DATA)


def test_a_config_table_is_regexes_to_axes():
    table = sharding.partition_rules([(r"^params/head/", ("data", None)), (r"kernel$", (None, "model"))])
    mesh = AbstractMesh((2, 2), (sharding.DATA, sharding.MODEL))
    assert sharding.param_spec("params/head/kernel", (8, 8), mesh, table) == P(sharding.DATA)
    assert sharding.param_spec("params/fc/kernel", (8, 8), mesh, table) == P(None, sharding.MODEL)
    assert sharding.param_spec("params/fc/bias", (8,), mesh, table) == P()
    with pytest.raises(ValueError, match="unknown partition rules 'zero3'"):
        sharding.partition_rules("zero3")


# ---- checkpoints that move -----------------------------------------------------------------------------------

# Trains a short FSDP run on this process's mesh (8 forced devices, or 2 processes), checks that the state was
# really split over `data`, writes the final parameters (gathered) to argv[1]; on 8 devices it then restores the
# run's checkpoint onto a 4 × 2 mesh and compares.
SAVE_AND_REMESH = r"""
import sys, jax, numpy as np
from jax.experimental import multihost_utils
from emohd_jax.distributed import initialize_from_env
initialize_from_env()
from emohd_jax.run_config import load_config
from emohd_jax.train import sharding
from emohd_jax.train.trainer import make_task, restore_for_eval, train_and_evaluate

def flat(tree):
    return {sharding.leaf_path(p): x for p, x in jax.tree_util.tree_leaves_with_path(tree)}

out, args = sys.argv[1], sys.argv[2:]
params = train_and_evaluate(load_config(args))["final_state"].params
assert any(sharding.DATA in tuple(x.sharding.spec) for x in flat(params).values()), "nothing was split over data"
saved = {k: np.asarray(v) for k, v in flat(multihost_utils.process_allgather(params, tiled=True)).items()}
if jax.process_index() == 0:
    np.savez(out, **saved)
if jax.process_count() == 1:
    config = load_config([*args, "--config.mesh.model=2"])
    mesh = sharding.make_mesh(2)
    _, weights = restore_for_eval(config, make_task(config), mesh)
    restored = flat(weights["params"])
    assert dict(mesh.shape) == {"data": 4, "model": 2}
    assert any(x.sharding.spec == jax.sharding.PartitionSpec("data", "model") for x in restored.values())
    assert restored.keys() == saved.keys()
    for k, v in restored.items():
        np.testing.assert_array_equal(np.asarray(v), saved[k], err_msg=k)
    print("REMESH-4x2-EQUAL", len(restored))
print("SAVED", jax.process_index(), jax.device_count())
"""


def _run_args(root, run: str, **overrides) -> list[str]:
    # One evaluation, at the last step: the best checkpoint is the final state.
    return config_args(root, run, **{"train.num_steps": 2, "train.eval_every": 2, "mesh.rules": "fsdp", **overrides})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = make_tiny_setup(tmp_path_factory.mktemp("tiny"), n_train=32, n_dev=8)
    run_prepare(load_config(config_args(root)))
    return root


def _assert_restores_on_one_device(root, run: str, saved_file) -> None:
    config = load_config(config_args(root, run))  # default rules, 1 device: everything in one place
    _, weights = restore_for_eval(config, make_task(config), sharding.make_mesh(1, jax.devices()[:1]))
    restored = {sharding.leaf_path(p): x for p, x in jax.tree_util.tree_leaves_with_path(weights["params"])}
    saved = np.load(saved_file)
    assert sorted(restored) == sorted(saved.files) and len(restored) > 10
    for k, v in restored.items():
        assert v.sharding.num_devices == 1
        np.testing.assert_array_equal(np.asarray(v), saved[k], err_msg=k)


@pytest.fixture(scope="module")
def saved_on_8(tiny):
    saved = tiny / "fsdp8_params.npz"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    out = subprocess.run([sys.executable, "-c", SAVE_AND_REMESH, saved, *_run_args(tiny, "fsdp8")], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=600)
    assert "SAVED 0 8" in out.stdout, out.stdout[-2000:] + out.stderr[-4000:]
    return saved, out.stdout


def test_eight_device_fsdp_run_restores_onto_a_4x2_mesh(saved_on_8):
    assert "REMESH-4x2-EQUAL" in saved_on_8[1]


def test_eight_device_fsdp_run_restores_onto_one_device(tiny, saved_on_8):
    _assert_restores_on_one_device(tiny, "fsdp8", saved_on_8[0])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.multiprocess
def test_two_process_fsdp_run_restores_onto_one_process(tiny):
    saved, port = tiny / "fsdp2_params.npz", _free_port()
    procs = [subprocess.Popen([sys.executable, "-c", SAVE_AND_REMESH, saved, *_run_args(tiny, "fsdp2")], cwd=REPO,
                              env={**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
                                   "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(i)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    assert "SAVED 0 2" in outputs[0] and "SAVED 1 2" in outputs[1]
    _assert_restores_on_one_device(tiny, "fsdp2", saved)
