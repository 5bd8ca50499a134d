"""Weighted late fusion: detection ratios from confusion counts, the three rules, missing modalities."""

import jax.numpy as jnp
import numpy as np
import pytest

from emohd_jax.fusion import (confusion_counts, detection_ratio_weights, fit_and_fuse, fuse, modality_subsets)


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


def test_fit_and_fuse_equals_fuse_with_hand_computed_weights():
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
    for rule in ("paper", "max", "sum"):
        got, _ = fit_and_fuse(dev, present, labels, test, test_present, rule=rule, num_classes=3)
        want, _ = fuse(test, test_present, jnp.asarray(weights, jnp.float32), rule)
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="fusion rule"):
        fuse(test, test_present, jnp.ones((2, 3)), "vote")


def test_modality_subsets_are_the_paper_columns():
    assert list(modality_subsets()) == ["V", "A", "T", "V+A", "V+T", "A+T", "V+A+T"]
