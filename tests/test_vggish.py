"""Flax VGGish: shapes, the classifier head, dropout, and the conv-frozen rule as parameter paths."""

import re

import jax
import numpy as np
from flax import nnx

from emohd_jax.models.vggish import (VGGISH_CONFIGS, VGGish, VGGishClassifier, VGGishConfig,
                                     trainable_patterns)

TINY = VGGishConfig(conv_blocks=((4,), (8,), (8, 8), (16, 16)), fc_widths=(32, 32), embedding_size=12)


def _path(path) -> str:
    return "/".join(str(getattr(p, "key", p)) for p in path)


def test_shapes_of_trunk_and_classifier():
    patches = np.zeros((5, 96, 64), np.float32)
    assert VGGish(TINY, rngs=nnx.Rngs(0))(patches).shape == (5, 12)
    classifier = VGGishClassifier(TINY, rngs=nnx.Rngs(0))
    assert classifier.vggish.embedding is None and classifier.head.kernel.shape == (32, 7)
    assert classifier(patches).shape == (5, 7)
    kept = VGGishClassifier(VGGishConfig(**{**TINY.__dict__, "keep_embedding": True}), rngs=nnx.Rngs(0))
    assert kept.head.kernel.shape == (12, 7)


def test_full_config_has_the_published_shapes():
    model = nnx.eval_shape(lambda: VGGish(VGGISH_CONFIGS["full"], rngs=nnx.Rngs(0)))
    assert [c.kernel.shape[-1] for c in model.conv] == [64, 128, 256, 256, 512, 512]
    assert [f.kernel.shape for f in model.fc] == [(6 * 4 * 512, 4096), (4096, 4096)]
    assert model.embedding.kernel.shape == (4096, 128)


def test_dropout_only_in_training():
    model = VGGishClassifier(VGGishConfig(**{**TINY.__dict__, "dropout": 0.5}), rngs=nnx.Rngs(0, dropout=1))
    patches = np.random.default_rng(0).standard_normal((4, 96, 64)).astype(np.float32)
    np.testing.assert_array_equal(model(patches), model(patches))
    assert not np.allclose(model(patches, train=True), model(patches))


def test_freeze_rule_selects_conv_vs_fc_paths():
    params = nnx.state(VGGishClassifier(TINY, rngs=nnx.Rngs(0)), nnx.Param)
    paths = [_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    (pattern,) = trainable_patterns(freeze_conv=True)
    trainable = {p for p in paths if re.search(pattern, p)}
    assert trainable and all("/conv/" not in p for p in trainable)
    assert {p for p in paths if p.startswith("vggish/conv/")} == set(paths) - trainable
    assert any(p.startswith("head/") for p in trainable) and any(p.startswith("vggish/fc/") for p in trainable)
    assert trainable_patterns(freeze_conv=False) == ()
