"""Fusion checks: the tower-output files, the half split, the label pairing, and calibration / stacking on the
shipped towers' real dev outputs (the committed reports' predictions, which `fusion_checks inputs` reproduces
from the bundle to 6e-6)."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from emohd_jax import fusion
from emohd_jax.classes import NUM_CLASSES
from emohd_jax.errors import MalformedTableError
from emohd_jax.checks.fusion import TowerOutputs, half_split, label_pairs, paired_rows, subset
from emohd_jax.metrics import classification_metrics
from tests.data_paths import REPO


def _group(uid: str) -> str:
    """The group a committed uid belongs to: RAVDESS actor, MELD dialogue, else the item itself (FER2013)."""
    if uid.startswith("ravdess/"):
        return "Actor_" + uid.rsplit("-", 1)[1]
    if uid.startswith("meld/"):
        split, name = uid.split("/")[1:]
        return f"{split}/{name.split('_')[0][3:]}"
    return uid


@pytest.fixture(scope="module")
def dev_sets() -> list[TowerOutputs]:
    """The shipped face, voice and words towers on their own dev sets (fusion.MODALITIES order)."""
    out = []
    for report in ("fer_face_mlp", "ravdess_audio", "meld_text_lora"):
        predictions = json.loads((REPO / "reports" / report / "predictions.json").read_text())
        out.append(TowerOutputs(np.asarray(predictions["probs"], np.float32), np.asarray(predictions["label"]),
                                np.asarray([_group(u) for u in predictions["uid"]]), np.asarray(predictions["uid"])))
    return out


def test_tower_outputs_round_trip_and_a_malformed_file_is_named(tmp_path, dev_sets):
    words = subset(dev_sets[2], np.arange(50))
    words = TowerOutputs(words.probs / words.probs.sum(1, keepdims=True), words.labels, words.groups, words.uids,
                         np.asarray([f"sentence {i}" for i in range(50)]))
    words.save(tmp_path / "w.npz")
    again = TowerOutputs.load(tmp_path / "w.npz")
    np.testing.assert_array_equal(again.probs, words.probs)
    np.testing.assert_array_equal(again.labels, words.labels)
    assert again.groups.tolist() == words.groups.tolist() and again.transcripts.tolist() == words.transcripts.tolist()
    np.savez(tmp_path / "bad.npz", probs=words.probs[:, :5], labels=words.labels, groups=words.groups, uids=words.uids)
    with pytest.raises(MalformedTableError, match=r"bad\.npz.*probs has shape"):
        TowerOutputs.load(tmp_path / "bad.npz")


def test_half_split_never_puts_one_group_in_both_halves(dev_sets):
    for outputs in dev_sets:
        halves = half_split(outputs.groups, seed=0)
        for group in np.unique(outputs.groups):
            assert len(set(halves[outputs.groups == group])) == 1, group
        assert abs(int(halves.sum()) - len(halves) / 2) <= 0.1 * len(halves)   # balanced by rows
    ravdess = half_split(dev_sets[1].groups, seed=0)
    assert sorted(len(set(dev_sets[1].groups[ravdess == h])) for h in (0, 1)) == [2, 2]   # 2 actors each
    np.testing.assert_array_equal(half_split(dev_sets[2].groups, seed=0), half_split(dev_sets[2].groups, seed=0))


def test_label_paired_rows_share_the_label(dev_sets):
    labels = [d.labels for d in dev_sets]
    for anchor in range(3):
        rows = label_pairs(labels, anchor, np.random.default_rng(anchor))
        assert (rows >= 0).all()                   # every class exists in every dev set
        np.testing.assert_array_equal(rows[:, anchor], np.arange(len(labels[anchor])))
        for tower in range(3):
            np.testing.assert_array_equal(labels[tower][rows[:, tower]], labels[anchor])
    probs, paired = paired_rows(dev_sets, np.random.default_rng(0))
    assert probs.shape == (sum(len(d.labels) for d in dev_sets), 3, NUM_CLASSES)
    np.testing.assert_array_equal(paired[:len(labels[0])], labels[0])


def _nll(log_probs: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.mean(log_probs[np.arange(len(labels)), labels]))


def test_vector_scaling_lowers_the_words_towers_held_out_nll(dev_sets):
    words = dev_sets[2]                                       # shipped words tower, MELD dev
    halves = half_split(words.groups, seed=0)                 # by dialogue
    fit, held = subset(words, halves == 0), subset(words, halves == 1)
    params = fusion.fit_fusion(jnp.asarray(fit.probs[:, None]), jnp.ones((len(fit.labels), 1), bool),
                               jnp.asarray(fit.labels), calibrated="vector")
    raw = _nll(np.log(np.clip(held.probs, 1e-7, 1)), held.labels)
    calibrated = np.asarray(fusion.calibrated_log_probs(jnp.asarray(held.probs[:, None]), params.temperatures,
                                                        params.scale, params.shift))[:, 0]
    assert _nll(calibrated, held.labels) < raw - 0.03, (raw, _nll(calibrated, held.labels))
    # corrected, not only softened: the per-class shift moves some decisions (a temperature never does)
    assert (calibrated.argmax(-1) != held.probs.argmax(-1)).sum() > 0


def test_stacker_fitted_on_one_half_beats_the_best_tower_on_the_other(dev_sets):
    fit = [subset(d, half_split(d.groups, 0) == 0) for d in dev_sets]
    held = [subset(d, half_split(d.groups, 0) == 1) for d in dev_sets]
    modality = np.concatenate([np.full(len(d.labels), m) for m, d in enumerate(fit)])
    stacked = np.full((len(modality), 3, NUM_CLASSES), 1 / NUM_CLASSES, np.float32)
    stacked[np.arange(len(modality)), modality] = np.concatenate([d.probs for d in fit])
    params = fusion.fit_fusion(jnp.asarray(stacked), jnp.eye(3, dtype=bool)[modality],
                               jnp.asarray(np.concatenate([d.labels for d in fit])), calibrated="vector")
    probs, labels = paired_rows(fit, np.random.default_rng(1))
    params = fusion.with_stack(params, probs, np.ones(probs.shape[:2], bool), labels)
    probs, labels = paired_rows(held, np.random.default_rng(2))
    decision, _ = fusion.fuse_with(params, jnp.asarray(probs), jnp.ones(probs.shape[:2], bool))
    fused = classification_metrics(labels, np.asarray(decision))["weighted_f1"]
    best = max(classification_metrics(labels, probs[:, m].argmax(-1))["weighted_f1"] for m in range(3))
    assert fused >= best + 5, (fused, best)


def test_words_capped_so_they_overturn_no_right_voice_decision(dev_sets):
    """Words that carry nothing (another clip's words-like output: the voice dev rows shuffled) but are believed
    fully flip right voice decisions; `capped_words` believes them only as far as they flip none."""
    from emohd_jax.checks.fusion import capped_words, decisions

    modality = np.concatenate([np.full(len(d.labels), m) for m, d in enumerate(dev_sets)])
    stacked = np.full((len(modality), 3, NUM_CLASSES), 1 / NUM_CLASSES, np.float32)
    stacked[np.arange(len(modality)), modality] = np.concatenate([d.probs for d in dev_sets])
    present = np.eye(3, dtype=bool)[modality]
    labels = np.concatenate([d.labels for d in dev_sets])
    params = fusion.fit_fusion(jnp.asarray(stacked), jnp.asarray(present), jnp.asarray(labels), calibrated=True)
    probs, paired_labels = paired_rows(dev_sets, np.random.default_rng(0))
    params = fusion.with_stack(params, probs, np.ones(probs.shape[:2], bool), paired_labels, weighting="evidence",
                               dev_probs=stacked, dev_present=present, joint=False)
    voice = dev_sets[1]
    real = np.full((len(voice.labels), 3, NUM_CLASSES), 1 / NUM_CLASSES, np.float32)
    real[:, 1] = voice.probs
    real[:, 2] = dev_sets[2].probs[np.random.default_rng(0).choice(len(dev_sets[2].labels), len(voice.labels))]
    real_present = np.repeat([[False, True, True]], len(voice.labels), axis=0)
    rows = (real, real_present, voice.labels)
    voice_right = voice.probs.argmax(-1) == voice.labels
    assert np.any(voice_right & (decisions(params, *rows[:2]) != voice.labels))     # believed fully: flips some
    capped = capped_words(params, [rows], (1.0, 0.5, 0.1, 0.01, 0.001))
    assert float(capped.stack_weights[2, 0]) < float(params.stack_weights[2, 0])
    assert not np.any(voice_right & (decisions(capped, *rows[:2]) != voice.labels))
