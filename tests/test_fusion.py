"""Weighted late fusion: detection ratios from confusion counts, the three rules, missing modalities, calibration."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from emohd_jax.classes import NUM_CLASSES
from emohd_jax.fusion import (RULES, calibrate, calibration_nll, confusion_counts, detection_ratio_weights, fit_fusion,
                              from_json, fuse, fuse_with, modality_subsets, to_json)
from tests.data_paths import REPO


def test_detection_ratio_is_true_positives_over_all_samples():
    confusion = jnp.asarray([[[8.0, 2.0], [1.0, 9.0]]])           # one modality, 20 samples
    np.testing.assert_allclose(detection_ratio_weights(confusion), [[1 - 8 / 20, 1 - 9 / 20]])


def test_confusion_counts_skip_invalid_rows():
    counts = confusion_counts(jnp.asarray([0, 1, 1, 0]), jnp.asarray([0, 1, 0, 1]), jnp.asarray([1.0, 1, 1, 0]), 2)
    np.testing.assert_array_equal(counts, [[1, 0], [1, 1]])


def test_paper_rule_lets_the_highest_scoring_modality_decide():
    weights = jnp.ones((3, 3))
    probs = jnp.asarray([[[0.1, 0.2, 0.7], [0.45, 0.45, 0.1], [0.0, 0.0, 0.0]]])   # text row sums to 0
    present = jnp.asarray([[True, True, True]])
    # both modality totals are 1.0: argmax picks the first (visual) → class 2
    assert int(fuse(probs, present, weights, "paper")[0][0]) == 2
    # max: the largest single score (0.7, visual class 2); sum: column sums 0.55, 0.65, 0.8 → class 2
    assert int(fuse(probs, present, weights, "max")[0][0]) == 2
    weights = jnp.asarray([[0.1, 0.1, 0.1], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    assert int(fuse(probs, present, weights, "paper")[0][0]) == 0   # audio's weighted total wins; tie → first class
    assert int(fuse(probs, present, weights, "sum")[0][0]) in (0, 1)


def test_missing_modality_never_wins_and_all_missing_gives_minus_one():
    weights = jnp.ones((3, 2))
    probs = jnp.asarray([[[0.0, 1.0], [0.9, 0.1], [0.8, 0.2]], [[0.3, 0.7], [0.6, 0.4], [0.5, 0.5]]])
    present = jnp.asarray([[False, True, True], [False, False, False]])
    for rule in ("paper", "max", "sum"):
        decision, _ = fuse(probs, present, weights, rule)
        assert decision.tolist() == [0, -1], rule


def test_fit_fusion_weights_equal_hand_computed_ones_and_fuse_with_matches_fuse():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 60)
    dev = rng.dirichlet(np.ones(3), (60, 2)).astype(np.float32)        # [n, modality, class]
    present = rng.random((60, 2)) > 0.2
    weights = np.empty((2, 3))
    for m in range(2):
        preds, keep = dev[:, m].argmax(-1)[present[:, m]], labels[present[:, m]]
        weights[m] = [1 - ((preds == c) & (keep == c)).sum() / len(keep) for c in range(3)]
    test = rng.dirichlet(np.ones(3), (40, 2)).astype(np.float32)
    test_present = rng.random((40, 2)) > 0.2
    for rule in RULES:
        params = fit_fusion(jnp.asarray(dev), present, jnp.asarray(labels), rule=rule)
        np.testing.assert_allclose(params.weights, weights, atol=1e-6)
        got, _ = fuse_with(params, jnp.asarray(test), jnp.asarray(test_present))
        want, _ = fuse(test, test_present, jnp.asarray(weights, jnp.float32), rule)
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="fusion rule"):
        fuse(test, test_present, jnp.ones((2, 3)), "vote")


def test_hand_computed_scores_for_each_rule():
    weights = jnp.asarray([[0.5, 1.0], [1.0, 0.25]])                   # [modality, class]
    probs = jnp.asarray([[[0.6, 0.4], [0.3, 0.7]]])                    # S = [[0.3, 0.4], [0.3, 0.175]]
    present = jnp.asarray([[True, True]])
    decision, scores = fuse(probs, present, weights, "paper")          # totals 0.7 vs 0.475 → visual decides
    assert decision.tolist() == [1] and np.allclose(scores, [[0.3, 0.4]])
    decision, scores = fuse(probs, present, weights, "max")            # per class max: 0.3, 0.4
    assert decision.tolist() == [1] and np.allclose(scores, [[0.3, 0.4]])
    decision, scores = fuse(probs, present, weights, "sum")            # 0.6 vs 0.575
    assert decision.tolist() == [0] and np.allclose(scores, [[0.6, 0.575]])


def _reference_fuse(probs, present, weights, rule):
    """Float64 NumPy restatement of SPEC §5, row by row."""
    decisions, fused = [], []
    for p, m in zip(probs.astype(np.float64), present):
        scores = weights.astype(np.float64) * p
        if not m.any():
            decisions.append(-1)
            fused.append(np.full(p.shape[-1], np.nan))
            continue
        if rule == "paper":
            totals = np.where(m, scores.sum(-1), -np.inf)
            row = scores[int(np.argmax(totals))]
        elif rule == "max":
            row = scores[m].max(axis=0)
        else:
            row = scores[m].sum(axis=0)
        decisions.append(int(np.argmax(row)))
        fused.append(row)
    return np.asarray(decisions), np.asarray(fused)


@pytest.mark.parametrize("rule", RULES)
def test_fuse_equals_a_float64_numpy_reference(rule):
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(NUM_CLASSES), (256, 3)).astype(np.float32)
    present = rng.random((256, 3)) > 0.3
    weights = rng.uniform(0.5, 1.0, (3, NUM_CLASSES)).astype(np.float32)
    decision, fused = fuse(jnp.asarray(probs), jnp.asarray(present), jnp.asarray(weights), rule)
    want_decision, want_fused = _reference_fuse(probs, present, weights, rule)
    np.testing.assert_array_equal(decision, want_decision)
    some = present.any(axis=1)
    np.testing.assert_allclose(np.asarray(fused)[some], want_fused[some], atol=1e-6)


_probs = st.integers(1, 6).flatmap(lambda n: st.tuples(
    st.lists(st.lists(st.lists(st.floats(0.01, 1.0), min_size=4, max_size=4), min_size=3, max_size=3),
             min_size=n, max_size=n),
    st.lists(st.lists(st.booleans(), min_size=3, max_size=3), min_size=n, max_size=n),
    st.permutations(list(range(n)))))


@settings(max_examples=50, deadline=None)
@given(case=_probs, noise=st.floats(0.0, 1.0), rule=st.sampled_from(RULES))
def test_a_masked_modality_never_changes_the_decision(case, noise, rule):
    raw, present, _ = case
    probs = np.asarray(raw, np.float32)
    probs /= probs.sum(-1, keepdims=True)
    present = np.asarray(present)
    weights = jnp.linspace(0.5, 1.0, 12).reshape(3, 4)
    changed = np.where(present[..., None], probs, np.roll(probs, 1, axis=-1) * noise)   # only absent rows move
    a = fuse(jnp.asarray(probs), jnp.asarray(present), weights, rule)
    b = fuse(jnp.asarray(changed), jnp.asarray(present), weights, rule)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_allclose(np.asarray(a[1])[present.any(1)], np.asarray(b[1])[present.any(1)], atol=1e-7)


@settings(max_examples=50, deadline=None)
@given(case=_probs, rule=st.sampled_from(RULES))
def test_permuting_the_batch_permutes_the_outputs(case, rule):
    raw, present, order = case
    probs, present, order = np.asarray(raw, np.float32), np.asarray(present), np.asarray(order)
    weights = jnp.linspace(0.5, 1.0, 12).reshape(3, 4)
    decision, fused = fuse(jnp.asarray(probs), jnp.asarray(present), weights, rule)
    decision_p, fused_p = fuse(jnp.asarray(probs[order]), jnp.asarray(present[order]), weights, rule)
    np.testing.assert_array_equal(np.asarray(decision)[order], decision_p)
    np.testing.assert_array_equal(np.asarray(fused)[order], fused_p)


@pytest.fixture(scope="module")
def real_dev_sets():
    """The towers' real dev predictions (committed reports), stacked: each row present for its own modality."""
    files = {"visual": "fer_visual", "audio": "ravdess_audio", "text": "meld_text"}
    probs, labels, rows = [], [], []
    for m, name in enumerate(files.values()):
        predictions = json.loads((REPO / "reports" / name / "predictions.json").read_text())
        probs.append(np.asarray(predictions["probs"], np.float32))
        labels.append(np.asarray(predictions["label"]))
        rows.append(np.full(len(predictions["label"]), m))
    rows = np.concatenate(rows)
    stacked = np.full((len(rows), 3, NUM_CLASSES), 1 / NUM_CLASSES, np.float32)
    stacked[np.arange(len(rows)), rows] = np.concatenate(probs)
    present = np.zeros((len(rows), 3), bool)
    present[np.arange(len(rows)), rows] = True
    return stacked, present, np.concatenate(labels)


def test_calibration_lowers_each_towers_dev_nll_and_keeps_its_decisions(real_dev_sets):
    probs, present, labels = real_dev_sets
    params = fit_fusion(jnp.asarray(probs), present, jnp.asarray(labels), rule="sum", calibrated=True)
    before = calibration_nll(jnp.asarray(probs), jnp.asarray(present), jnp.asarray(labels), jnp.ones(3))
    after = calibration_nll(jnp.asarray(probs), jnp.asarray(present), jnp.asarray(labels), params.temperatures)
    assert np.all(np.asarray(after) < np.asarray(before)), (before, after, params.temperatures)
    np.testing.assert_array_equal(calibrate(jnp.asarray(probs), params.temperatures).argmax(-1), probs.argmax(-1))
    # DR weights: 1 − TP_c / N of each tower's own dev set, by hand.
    for m in range(3):
        preds, truth = probs[present[:, m], m].argmax(-1), labels[present[:, m]]
        want = [1 - np.sum((preds == c) & (truth == c)) / len(truth) for c in range(NUM_CLASSES)]
        np.testing.assert_allclose(params.weights[m], want, atol=1e-6)
    again = from_json(json.loads(json.dumps(to_json(params))))
    assert again.rule == "sum" and np.allclose(again.weights, params.weights)


def test_modality_subsets_are_the_paper_columns():
    assert list(modality_subsets()) == ["V", "A", "T", "V+A", "V+T", "A+T", "V+A+T"]


# ---- vector scaling and the stack rule (issue 17) -------------------------------------------------

from emohd_jax.fusion import STACK, dropout_masks, scale_belief, stack_logits, with_stack  # noqa: E402


@pytest.fixture(scope="module")
def stacked_params(real_dev_sets):
    """Vector scaling and a stacker fitted on the towers' real dev outputs (one modality per row)."""
    probs, present, labels = real_dev_sets
    params = fit_fusion(jnp.asarray(probs), present, jnp.asarray(labels), calibrated="vector")
    return with_stack(params, probs, present, labels, dev_priors=np.full((3, NUM_CLASSES), 1 / NUM_CLASSES))


def test_vector_scaling_at_identity_changes_nothing_and_is_fitted_per_class(real_dev_sets, stacked_params):
    probs, _, _ = real_dev_sets
    ones, zeros = jnp.ones((3, NUM_CLASSES)), jnp.zeros((3, NUM_CLASSES))
    np.testing.assert_allclose(calibrate(jnp.asarray(probs), jnp.ones(3), ones, zeros),
                               np.clip(probs, 1e-7, 1) / np.clip(probs, 1e-7, 1).sum(-1, keepdims=True), atol=1e-6)
    assert stacked_params.scale.shape == (3, NUM_CLASSES) and float(jnp.abs(stacked_params.shift).max()) > 0.01


def test_stack_rule_masks_absent_modalities_exactly_and_decides_minus_one_for_none(real_dev_sets, stacked_params):
    probs, _, _ = real_dev_sets
    rng = np.random.default_rng(3)
    rows = probs[rng.choice(len(probs), (64, 3))][:, [0, 1, 2], [0, 1, 2]]      # one real row per modality
    present = rng.random((64, 3)) > 0.4
    present[:8] = False
    garbage = np.where(present[..., None], rows, np.roll(rows, 3, axis=0) * 0 + np.eye(NUM_CLASSES)[0])
    a = fuse_with(stacked_params, jnp.asarray(rows), jnp.asarray(present))
    b = fuse_with(stacked_params, jnp.asarray(garbage), jnp.asarray(present))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert (np.asarray(a[0])[:8] == -1).all() and (np.asarray(a[0])[present.any(1)] >= 0).all()
    # the stack rule by hand: Σ present · (w ⊙ ℓ + c) + b over the calibrated log-probabilities
    log_probs = np.log(np.asarray(calibrate(jnp.asarray(rows), stacked_params.temperatures, stacked_params.scale,
                                            stacked_params.shift)))
    w, c, bias = (np.asarray(x) for x in (stacked_params.stack_weights, stacked_params.stack_bias,
                                          stacked_params.bias))
    want = (present[..., None] * (w * log_probs + c)).sum(1) + bias
    some = present.any(1)
    np.testing.assert_array_equal(np.asarray(a[0])[some], want[some].argmax(-1))
    np.testing.assert_allclose(stack_logits(jnp.asarray(log_probs), jnp.asarray(present), w, c, bias), want,
                               atol=1e-4)
    ignored = scale_belief(stacked_params, 2, 0.0)                        # words not believed at all
    voice_and_words, voice = np.zeros_like(present), np.zeros_like(present)
    voice_and_words[:, 1:], voice[:, 1] = True, True
    np.testing.assert_array_equal(fuse_with(ignored, jnp.asarray(rows), jnp.asarray(voice_and_words))[0],
                                  fuse_with(ignored, jnp.asarray(rows), jnp.asarray(voice))[0])


def test_stack_params_round_trip_through_json_and_old_bundles_still_load(real_dev_sets, stacked_params):
    probs, present, _ = real_dev_sets
    again = from_json(json.loads(json.dumps(to_json(stacked_params))))
    assert again.rule == STACK
    for name in ("weights", "temperatures", "scale", "shift", "stack_weights", "stack_bias", "bias"):
        np.testing.assert_allclose(getattr(again, name), getattr(stacked_params, name), rtol=1e-6)
    np.testing.assert_array_equal(fuse_with(again, jnp.asarray(probs), jnp.asarray(present))[0],
                                  fuse_with(stacked_params, jnp.asarray(probs), jnp.asarray(present))[0])
    shipped = json.loads((REPO / "emohd_jax" / "assets" / "bundle" / "bundle.json").read_text())["fusion"]
    assert to_json(from_json(shipped)) == shipped                          # the shipped stack round-trips
    written_before = {"rule": "max", "weights": shipped["weights"], "temperatures": shipped["temperatures"]}
    old = from_json(written_before)                                        # a bundle from before the new fields
    assert old.scale is None and old.stack_weights is None and to_json(old) == written_before
    with pytest.raises(ValueError, match="stack_weights"):
        from_json({**written_before, "rule": STACK})
    with pytest.raises(ValueError, match="with_stack"):
        fit_fusion(jnp.asarray(probs), present, jnp.zeros(len(probs), int), rule=STACK)


def test_modality_dropout_never_empties_a_row_nor_adds_an_absent_modality(real_dev_sets):
    _, present, _ = real_dev_sets
    full = np.ones((500, 3), bool)
    full[:100] = present[:100]
    import jax

    masks = np.asarray(dropout_masks(jax.random.key(0), jnp.asarray(full), 0.9))
    assert masks.any(1).all() and not (masks & ~full).any()
    assert 0.05 < masks[100:].mean() < 0.6                                 # it does drop


# ---- the argmax-preserving stack (temperature only, one positive weight per modality) -----------

from emohd_jax.fusion import confidence_margin, evidence  # noqa: E402


@pytest.fixture(scope="module")
def scalar_stacks(real_dev_sets):
    """Temperature scaling, then the 'scalar', 'margin' and 'evidence' stacks fitted on label-paired rows of the
    real dev outputs (each row one real example per tower, same label) and the single-tower rows."""
    from emohd_jax.checks.fusion import TowerOutputs, paired_rows

    probs, present, labels = real_dev_sets
    towers = [TowerOutputs(probs[present[:, m], m], labels[present[:, m]], np.zeros(present[:, m].sum(), str),
                           np.zeros(present[:, m].sum(), str)) for m in range(3)]
    paired, paired_labels = paired_rows(towers, np.random.default_rng(0))
    rows = np.concatenate([paired, probs])
    rows_present = np.concatenate([np.ones(paired.shape[:2], bool), present])
    rows_labels = np.concatenate([paired_labels, labels])
    params = fit_fusion(jnp.asarray(probs), present, jnp.asarray(labels), calibrated="temperature")
    out = {w: with_stack(params, rows, rows_present, rows_labels, weighting=w, dev_probs=probs, dev_present=present)
           for w in ("scalar", "margin", "evidence")}
    out["evidence (no joint)"] = with_stack(params, rows, rows_present, rows_labels, weighting="evidence",
                                            dev_probs=probs, dev_present=present, joint=False)
    return out


def test_a_lone_modality_decides_exactly_as_its_raw_tower_under_the_scalar_stacks(real_dev_sets, scalar_stacks,
                                                                                   stacked_params):
    probs, present, _ = real_dev_sets
    for m in range(3):
        alone = np.zeros_like(present)
        alone[:, m] = True
        raw = probs[:, m].argmax(-1)
        for name, params in scalar_stacks.items():
            np.testing.assert_array_equal(np.asarray(fuse_with(params, jnp.asarray(probs), jnp.asarray(alone))[0]),
                                          raw, err_msg=f"{name}, modality {m}")
    # the per-class stack over vector scaling does move a lone tower's decisions (what 'scalar' avoids)
    voice = np.zeros_like(present)
    voice[:, 1] = True
    moved = np.asarray(fuse_with(stacked_params, jnp.asarray(probs), jnp.asarray(voice))[0]) != probs[:, 1].argmax(-1)
    assert moved.any()


def test_scalar_stack_logits_by_hand_and_round_trip(real_dev_sets, scalar_stacks):
    probs, _, _ = real_dev_sets
    params = scalar_stacks["margin"]
    w = np.asarray(params.stack_weights)
    assert np.all(w > 0) and np.allclose(w, w[:, :1])                   # one positive weight per modality
    assert float(np.abs(params.margin_slopes).max()) > 0 and params.joint_bias.shape == (NUM_CLASSES,)
    rng = np.random.default_rng(1)
    rows = probs[rng.choice(len(probs), (32, 3))][:, [0, 1, 2], [0, 1, 2]]
    present = rng.random((32, 3)) > 0.3
    log_probs = np.log(np.asarray(calibrate(jnp.asarray(rows), params.temperatures)))
    top = np.sort(np.exp(log_probs), -1)
    weights = w[None] * np.exp(np.asarray(params.margin_slopes)[None] * (top[..., -1] - top[..., -2]))[..., None]
    want = (present[..., None] * weights * log_probs).sum(1) \
        + np.maximum(present.sum(1, keepdims=True) - 1, 0) * np.asarray(params.joint_bias)
    np.testing.assert_allclose(confidence_margin(jnp.asarray(log_probs)), top[..., -1] - top[..., -2], atol=1e-6)
    some = present.any(1)
    np.testing.assert_array_equal(np.asarray(fuse_with(params, jnp.asarray(rows), jnp.asarray(present))[0])[some],
                                  want[some].argmax(-1))
    again = from_json(json.loads(json.dumps(to_json(params))))
    np.testing.assert_allclose(again.margin_slopes, params.margin_slopes, rtol=1e-6)
    np.testing.assert_array_equal(fuse_with(again, jnp.asarray(rows), jnp.asarray(present))[0],
                                  fuse_with(params, jnp.asarray(rows), jnp.asarray(present))[0])
    with pytest.raises(ValueError, match="weighting"):
        with_stack(params, rows, present, np.zeros(32, int), weighting="dirichlet")


def test_evidence_is_the_kl_from_each_towers_mean_dev_output(real_dev_sets, scalar_stacks):
    probs, present, _ = real_dev_sets
    params = scalar_stacks["evidence"]
    calibrated = np.asarray(calibrate(jnp.asarray(probs), params.temperatures))
    for m in range(3):
        np.testing.assert_allclose(params.evidence_reference[m], calibrated[present[:, m], m].mean(0), atol=1e-5)
    log_probs = np.log(calibrated[present[:, 2], 2][:50])
    reference = np.asarray(params.evidence_reference[2])
    want = (np.exp(log_probs) * (log_probs - np.log(reference))).sum(-1)
    got = np.asarray(evidence(jnp.asarray(log_probs)[:, None], reference[None]))[:, 0]
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert from_json(json.loads(json.dumps(to_json(params)))).evidence_reference.shape == (3, NUM_CLASSES)
    with pytest.raises(ValueError, match="dev_probs"):
        with_stack(params, probs[:10], present[:10], np.zeros(10, int), weighting="evidence")


def test_without_joint_bias_words_believed_by_zero_leave_the_voice_decision_exactly(real_dev_sets, scalar_stacks):
    probs, present, _ = real_dev_sets
    params = scalar_stacks["evidence (no joint)"]
    assert params.joint_bias is None
    rng = np.random.default_rng(2)
    rows = probs[rng.choice(len(probs), (64, 3))][:, [0, 1, 2], [0, 1, 2]]
    voice_and_words, voice = np.zeros((64, 3), bool), np.zeros((64, 3), bool)
    voice_and_words[:, 1:], voice[:, 1] = True, True
    ignored = scale_belief(params, 2, 0.0)
    np.testing.assert_array_equal(fuse_with(ignored, jnp.asarray(rows), jnp.asarray(voice_and_words))[0],
                                  rows[:, 1].argmax(-1))
    np.testing.assert_array_equal(fuse_with(params, jnp.asarray(rows), jnp.asarray(voice))[0], rows[:, 1].argmax(-1))
