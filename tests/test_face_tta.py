"""Test-time views of faces: exact pixel moves, and the average equals the mean of the per-view softmaxes."""

import jax
import jax.numpy as jnp
import numpy as np

from emohd_jax.vision import tta as face_tta


def test_views_shift_and_mirror_exactly():
    faces = jnp.arange(2 * 6 * 7, dtype=jnp.float32).reshape(2, 6, 7, 1)
    assert len(face_tta.views(faces)) == 1
    assert len(face_tta.views(faces, flip=True)) == 2
    views = face_tta.views(faces, flip=True, shift=2)
    assert len(views) == 10 and all(v.shape == faces.shape for v in views)
    up = views[1]  # (+2, 0): row r shows row r+2, the last row repeats
    np.testing.assert_array_equal(up[:, :-2], faces[:, 2:])
    np.testing.assert_array_equal(up[:, -1], faces[:, -1])
    right = views[4]  # (0, -2): column c shows column c-2, the first column repeats
    np.testing.assert_array_equal(right[:, :, 2:], faces[:, :, :-2])
    np.testing.assert_array_equal(right[:, :, 0], faces[:, :, 0])
    np.testing.assert_array_equal(views[5], faces[:, :, ::-1])
    np.testing.assert_array_equal(views[9], right[:, :, ::-1])


def test_mean_probabilities_averages_softmax_over_views():
    faces = jax.random.uniform(jax.random.key(0), (3, 8, 8, 1))
    weights = jax.random.normal(jax.random.key(1), (64, 7))

    def logits_fn(x):
        return x.reshape(len(x), -1) @ weights

    probs = face_tta.mean_probabilities(logits_fn, faces, flip=True, shift=1)
    expected = np.mean([jax.nn.softmax(logits_fn(v)) for v in face_tta.views(faces, flip=True, shift=1)], axis=0)
    np.testing.assert_allclose(probs, expected, atol=1e-6)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-6)
    assert not np.allclose(probs, jax.nn.softmax(logits_fn(faces)), atol=1e-3)
