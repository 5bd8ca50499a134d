"""The trainer: sharded step = single-device step, SIGKILL + restart = uninterrupted run, 2-process training."""

import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from emohd_jax.cli import run_prepare
from emohd_jax.run_config import load_config
from emohd_jax.losses import cross_entropy, masked_lm_loss
from emohd_jax.train.trainer import class_weights, train_and_evaluate
from tests.train_harness import REPO, config_args, emohd, make_tiny_setup


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = make_tiny_setup(tmp_path_factory.mktemp("tiny"))
    run_prepare(load_config(config_args(root)))
    return root


def _final_params(workdir):
    manager = ocp.CheckpointManager(workdir / "checkpoints" / "latest", item_names=("state", "data"))
    step = manager.latest_step()
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return step, restored.state["params"]


def test_class_weights_balance_the_expected_loss():
    w = class_weights({"neutral": 80, "anger": 20}, "balanced")
    assert w[0] * 80 == pytest.approx(w[2] * 20) and (w[0] * 80 + w[2] * 20) / 100 == pytest.approx(1.0)
    assert (class_weights({"neutral": 5}, "none") == 1).all()


def test_cross_entropy_ignores_invalid_rows():
    logits = jax.numpy.asarray([[2.0, 0.0], [0.0, 2.0], [9.0, -9.0]])
    labels = jax.numpy.asarray([0, 1, 1])
    ones = jax.numpy.ones(2)
    masked = cross_entropy(logits, labels, ones, jax.numpy.asarray([1.0, 1.0, 0.0]))
    assert float(masked) == pytest.approx(float(cross_entropy(logits[:2], labels[:2], ones, ones[:2])))
    assert float(masked) == pytest.approx(np.log1p(np.exp(-2.0)), rel=1e-5)


def test_masked_lm_loss_counts_masked_positions_only():
    logits = jax.numpy.log(jax.numpy.asarray([[[0.5, 0.5, 1e-9], [1e-9, 1e-9, 1.0]]]))
    loss, accuracy = masked_lm_loss(logits, jax.numpy.asarray([[0, -1]]))
    assert float(loss) == pytest.approx(np.log(2.0), rel=1e-4) and float(accuracy) == 1.0


def test_mask_tokens_is_seeded_and_spares_special_tokens():
    from emohd_jax.text.masking import IGNORE, MaskTokens

    mask = MaskTokens(mask_id=103, vocab_size=1000, special_ids=(0, 101, 102), rate=0.3)
    record = {"input_ids": np.asarray([101, *range(200, 260), 102], np.int32), "label": 3}
    a = mask.random_map(record, np.random.default_rng(5))
    b = mask.random_map(record, np.random.default_rng(5))
    np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
    chosen = a["mlm_labels"] != IGNORE
    assert 5 <= chosen.sum() <= 35 and not chosen[[0, -1]].any()
    np.testing.assert_array_equal(a["mlm_labels"][chosen], record["input_ids"][chosen])
    assert (a["input_ids"][chosen] == 103).mean() > 0.5 and (a["input_ids"][~chosen] == record["input_ids"][~chosen]).all()


def test_mlm_stage_exports_the_encoder_the_classifier_starts_from(tiny):
    from flax import nnx

    from emohd_jax.convert.hf_text import load_text_encoder
    from emohd_jax.train.trainer import make_task

    mlm = load_config(config_args(tiny, "mlm", **{"task": "mlm", "train.num_steps": 3}))
    result = train_and_evaluate(mlm)
    assert result["history"] == []  # no seven-class evaluation in the language-model stage
    exported = tiny / "mlm" / "encoder"
    trained = nnx.state(load_text_encoder(exported), nnx.Param)
    final = result["final_state"].params["encoder"]
    for a, b in zip(jax.tree.leaves(nnx.to_pure_dict(trained)), jax.tree.leaves(nnx.to_pure_dict(final))):
        np.testing.assert_allclose(a, b, atol=1e-6)
    classify = load_config(config_args(tiny, "from_mlm", **{"model.init": exported, "model.pretrained": True}))
    task = make_task(classify)
    model = task.build_model(nnx.Rngs(0))
    task.load_pretrained(model)
    np.testing.assert_allclose(model.encoder.embeddings.word.embedding[...],
                               final["embeddings"]["word"]["embedding"][...], atol=1e-6)


SHARDING_CHECK = r"""
import sys, jax, numpy as np
from emohd_jax.run_config import load_config
from emohd_jax.train import sharding
from emohd_jax.train.trainer import make_task
from emohd_jax.train.trainer import create_train_state, loss_and_grads
from emohd_jax import input_pipeline
from data_pipeline import shards
config = load_config(sys.argv[1:])
task = make_task(config)
source = shards.open_split(config.data.shards, "train")
batch = input_pipeline.collate([source[i] for i in range(8)], padded=task.padded)
batch = {k: batch[k] for k in (*task.model_fields, "label")}
results = []
for devices in (jax.devices()[:1], jax.devices()):
    mesh = sharding.make_mesh(1, devices)
    model, state, _, _ = create_train_state(task, config, mesh, 10)
    step = jax.jit(lambda s, b, m: loss_and_grads(s, b, m, task=task, weights=jax.numpy.ones(7),
                                                  label_smoothing=0.0, seed=0)[::2])
    loss, grads = step(state, sharding.global_batch(batch, mesh), model)
    results.append((float(loss), jax.tree.leaves(jax.device_get(grads))))
(l1, g1), (l8, g8) = results
assert len(jax.devices()) == 8, jax.devices()
print("loss", l1, l8)
np.testing.assert_allclose(l1, l8, atol=1e-5)
for a, b in zip(g1, g8):
    np.testing.assert_allclose(a, b, atol=1e-5)
print("SHARDED-MATCH", len(g1))
"""


def test_eight_device_step_matches_one_device(tiny):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    out = subprocess.run([sys.executable, "-c", SHARDING_CHECK, *config_args(tiny)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert "SHARDED-MATCH" in out.stdout, out.stdout[-2000:] + out.stderr[-4000:]


def test_sigkill_and_restart_ends_like_an_uninterrupted_run(tiny):
    clean = emohd(["train", *config_args(tiny, "clean")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    killed = emohd(["train", *config_args(tiny, "killed")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = tiny / "killed" / "checkpoints" / "latest"
    deadline = time.time() + 400
    while time.time() < deadline and not any(p.name.isdigit() and int(p.name) >= 4 for p in
                                              (latest.iterdir() if latest.exists() else [])):
        assert killed.poll() is None, "the run ended before it could be killed"
        time.sleep(0.2)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    step_at_kill = max(int(p.name) for p in latest.iterdir() if p.name.isdigit())
    assert step_at_kill < 12
    restarted = emohd(["train", *config_args(tiny, "killed")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert restarted.wait(timeout=600) == 0, restarted.stderr.read()[-3000:]
    assert clean.wait(timeout=600) == 0, clean.stderr.read()[-3000:]
    step_a, params_a = _final_params(tiny / "clean")
    step_b, params_b = _final_params(tiny / "killed")
    assert step_a == step_b == 12
    leaves_a, leaves_b = jax.tree.leaves(params_a), jax.tree.leaves(params_b)
    assert len(leaves_a) == len(leaves_b) > 0
    for a, b in zip(leaves_a, leaves_b):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert (tiny / "clean_report" / "metrics.json").is_file()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.multiprocess
def test_two_process_training_writes_a_checkpoint(tiny):
    port = _free_port()
    args = ["train", *config_args(tiny, "two_proc", **{"train.num_steps": 4, "train.eval_every": 4})]
    procs = [emohd(args, env={"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2",
                              "JAX_PROCESS_ID": str(i)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    latest = tiny / "two_proc" / "checkpoints" / "latest"
    assert (latest / "4").is_dir()
    assert (tiny / "two_proc_report" / "metrics.json").is_file()
    assert "process_count" not in outputs[0]  # both processes reached the end without collective errors
