"""`emohd bench fused`: the analytic FLOP counts that MFU is computed from agree with XLA's own count, and the
one jitted V+A+T function decides as the towers and the fusion do separately."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emohd_jax.bench import fused as bench
from emohd_jax.bundle import load_bundle


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    return bench.paper_towers(tmp_path_factory.mktemp("bench"))


def test_analytic_flops_match_xla_cost_analysis(paper):
    workload = bench.Workload(frames=1, patches=1, seq_len=64)
    analytic = bench.analytic_flops(paper, workload)
    _, states, tower_probs = bench.make_fused(paper, load_bundle().fusion, workload)
    batch = {k: jnp.asarray(v) for k, v in bench.host_batch(paper, workload, 1, 0).items()}
    fields = {"visual": {"face": batch["face"]}, "audio": {"patches": batch["patches"]},
              "text": {k: batch[k] for k in ("input_ids", "token_type_ids")}}
    for modality in bench.MODALITIES:
        counted = bench.xla_flops(lambda s, f, m=modality: tower_probs(m, s, f), states[modality], fields[modality])
        # convolutions and matmuls count exactly; XLA also counts the elementwise work (BatchNorm, ReLU: ~1 %)
        assert analytic[modality] == pytest.approx(counted, rel=0.02), modality


def test_one_jitted_function_equals_towers_then_fusion():
    from emohd_jax import fusion

    model_set, workload = bench.bundle_towers(), bench.Workload(frames=2, patches=3, seq_len=16)
    bundle = load_bundle()
    fused, states, tower_probs = bench.make_fused(model_set, bundle.fusion, workload)
    host = bench.host_batch(model_set, workload, 3, 0)
    decision, scores, probs = jax.jit(fused)(states, {k: jnp.asarray(v) for k, v in host.items()})
    face = bundle.towers["visual"].probs({"face": host["face"]}).reshape(3, 2, -1).mean(1)
    _, voice_task, voice_module = model_set.towers["audio"]  # the bundle's, or the VGGish standing in for it
    voice = voice_task.predict_probs(voice_module, {"patches": jnp.asarray(host["patches"])}).reshape(3, 3, -1).mean(1)
    words = bundle.towers["text"].probs({"input_ids": host["input_ids"], "token_type_ids": host["token_type_ids"]})
    expected = jnp.stack([face, voice, words], axis=1)
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    expected_decision, expected_scores = fusion.fuse_with(bundle.fusion, expected, jnp.ones((3, 3), bool))
    np.testing.assert_array_equal(decision, expected_decision)
    np.testing.assert_allclose(scores, expected_scores, atol=1e-5)


def test_gpu_check_dry_run_writes_every_result(tmp_path):
    """The accelerator script, end to end at toy sizes on CPU: fused (both sets, PyTorch beside) and train."""
    import json

    from emohd_jax.bench import gpu_check

    done = gpu_check.run(tmp_path / "out", small=True, budget_s=600, workdir=tmp_path / "work")
    assert set(done["parts"]) == {"fused", "train", "sweep"} and isinstance(done["parts"]["train"], float)
    fused = json.loads((tmp_path / "out" / "fused.json").read_text())
    (row,) = fused["sets"]["paper"]["rows"]
    assert row["jax_float32"]["utterances_per_s"] > 0 and row["torch_eager_fp32"]["utterances_per_s"] > 0
    # Shared weights give the same probabilities in both frameworks (VGGish, DistilBERT).
    assert row["max_abs_prob_diff_jax_fp32_vs_torch"]["audio"] < 1e-4
    assert row["max_abs_prob_diff_jax_fp32_vs_torch"]["text"] < 1e-4
    train = json.loads((tmp_path / "out" / "train.json").read_text())
    assert train["towers"]["text"]["jax_float32"]["sequences_per_s"] > 0
    assert (tmp_path / "out" / "fused.png").stat().st_size > 10_000


def test_parity_compares_fp32_with_fp32_and_best_with_best():
    row = {"batch": 1,
           "jax_float32": {"seconds": 2.0, "stage_seconds": {"visual": 1.0, "audio": 0.5, "text": 0.4, "fusion": 1e-5}},
           "jax_bfloat16": {"seconds": 3.0, "stage_seconds": {"visual": 2.0, "audio": 0.25, "text": 0.5}},
           "torch_eager_fp32": {"seconds": 2.2, "stage_seconds": {"visual": 1.2, "audio": 0.6, "text": 0.2}},
           "torch_compile_fp32": {"seconds": 1.8, "stage_seconds": {"visual": 0.9, "audio": 0.7, "text": 0.3}},
           "torch_compile_bf16": {"seconds": 1.0},  # no tower times: only the fused ratio uses it
           "torch_eager_bf16": {"error": "RuntimeError: no C++ compiler"}}
    ratios = bench.parity(row)
    assert ratios["fp32"] == pytest.approx({"fused": 0.9, "visual": 0.9, "audio": 1.2, "text": 0.5})
    assert ratios["any_dtype"] == pytest.approx({"fused": 0.5, "visual": 0.9, "audio": 2.4, "text": 0.5})
