"""Text encoder behaviour: configs, bf16 compute, pooling that ignores padding, dropout, heads."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from emohd_jax.models.text_encoder import MaskedLMHead, TextClassifier, TextEncoder, TextEncoderConfig

SMALL = TextEncoderConfig(
    vocab_size=97, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_position=24, type_vocab_size=2
)


def _batch():
    """Two rows: 10 real tokens, then 4 real tokens + 6 padding."""
    ids = jnp.asarray(np.random.default_rng(0).integers(1, 97, (2, 10)), jnp.int32)
    mask = jnp.asarray([[1] * 10, [1] * 4 + [0] * 6], jnp.int32)
    return ids, mask


def test_from_hf_config_reads_both_layouts():
    minilm = TextEncoderConfig.from_hf_config(
        {"model_type": "bert", "vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6,
         "num_attention_heads": 12, "intermediate_size": 1536, "max_position_embeddings": 512,
         "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_act": "gelu"}
    )
    distil = TextEncoderConfig.from_hf_config(
        {"model_type": "distilbert", "vocab_size": 30522, "dim": 768, "n_layers": 6, "n_heads": 12,
         "hidden_dim": 3072, "max_position_embeddings": 512, "activation": "gelu", "dropout": 0.1,
         "attention_dropout": 0.1, "sinusoidal_pos_embds": False}
    )
    assert (minilm.hidden_size, minilm.num_layers, minilm.type_vocab_size) == (384, 6, 2)
    assert (distil.hidden_size, distil.intermediate_size, distil.type_vocab_size) == (768, 3072, 0)
    with pytest.raises(ValueError, match="unsupported model_type 'roberta'"):
        TextEncoderConfig.from_hf_config({"model_type": "roberta"})


def test_flops_per_sequence_counts_projections_and_attention():
    # MiniLM at 64 tokens: 6 * (2*64*(4*384^2 + 2*384*1536) + 4*64^2*384) = 1,396,703,232
    config = TextEncoderConfig(vocab_size=30522, hidden_size=384, num_layers=6, num_heads=12, intermediate_size=1536)
    assert config.flops_per_sequence(64) == 1_396_703_232
    # last layer for the CLS position only: its k, v for 64 tokens, the rest for one query
    last_full = 2 * 64 * (4 * 384**2 + 2 * 384 * 1536) + 4 * 64**2 * 384
    last_cls = 2 * 64 * 2 * 384**2 + 2 * (2 * 384**2 + 2 * 384 * 1536) + 4 * 64 * 384
    assert config.flops_per_sequence(64, last_layer_queries=1) == 1_396_703_232 - last_full + last_cls


def test_last_layer_queries_equal_the_full_encoder_at_those_positions():
    encoder = TextEncoder(SMALL, rngs=nnx.Rngs(0))
    ids, mask = _batch()
    full = encoder(ids, mask)
    first_two = encoder(ids, mask, last_layer_queries=2)
    assert first_two.shape == (2, 2, SMALL.hidden_size)
    np.testing.assert_allclose(first_two, full[:, :2], atol=1e-5)
    model = TextClassifier(SMALL, num_classes=7, pooling="cls", rngs=nnx.Rngs(0))  # CLS pooling takes this path
    np.testing.assert_allclose(model.features(ids, mask), model.encoder(ids, mask)[:, 0], atol=1e-5)


def test_padding_does_not_change_real_positions():
    encoder = TextEncoder(SMALL, rngs=nnx.Rngs(0))
    ids, mask = _batch()
    full = encoder(ids, mask)
    trimmed = encoder(ids[1:, :4], mask[1:, :4])
    np.testing.assert_allclose(full[1, :4], trimmed[0], atol=1e-5)


def test_bf16_compute_stays_close_to_fp32():
    fp32 = TextEncoder(SMALL, rngs=nnx.Rngs(0))
    bf16 = TextEncoder(SMALL, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    ids, mask = _batch()
    a, b = fp32(ids, mask), bf16(ids, mask)
    assert b.dtype == jnp.bfloat16
    assert bf16.embeddings.word.embedding[...].dtype == jnp.float32  # params stay fp32
    real = np.asarray(mask, bool)
    assert np.abs(np.asarray(b, np.float32) - np.asarray(a))[real].max() < 0.1  # post-LN: unit-scale outputs


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_classifier_logits_ignore_padding(pooling):
    model = TextClassifier(SMALL, num_classes=7, pooling=pooling, rngs=nnx.Rngs(0))
    ids, mask = _batch()
    logits = model(ids, mask)
    assert logits.shape == (2, 7) and logits.dtype == jnp.float32
    alone = model(ids[1:, :4], mask[1:, :4])
    np.testing.assert_allclose(logits[1], alone[0], atol=1e-5)
    assert model.features(ids, mask).shape == (2, SMALL.hidden_size)


def test_mean_pooling_is_the_masked_mean_of_hidden_states():
    model = TextClassifier(SMALL, num_classes=7, pooling="mean", head_hidden_size=0, rngs=nnx.Rngs(0))
    ids, mask = _batch()
    hidden = model.encoder(ids, mask)
    np.testing.assert_allclose(model.features(ids, mask)[1], hidden[1, :4].mean(axis=0), atol=1e-6)
    assert model.head_hidden is None  # head_hidden_size=0 gives a linear head


def test_dropout_only_in_training_and_gradients_flow():
    model = TextClassifier(SMALL, num_classes=7, rngs=nnx.Rngs(params=0, dropout=1))
    ids, mask = _batch()
    np.testing.assert_array_equal(model(ids, mask), model(ids, mask))
    assert not np.allclose(model(ids, mask, deterministic=False), model(ids, mask))

    def loss_fn(m):
        return -jax.nn.log_softmax(m(ids, mask, deterministic=False))[:, 0].mean()

    grads = nnx.grad(loss_fn)(model)
    assert float(jnp.abs(grads["encoder"]["layers"][0]["attention"]["query"]["kernel"][...]).sum()) > 0


def test_masked_lm_head_is_tied_to_word_embeddings():
    encoder = TextEncoder(SMALL, rngs=nnx.Rngs(0))
    head = MaskedLMHead(SMALL, rngs=nnx.Rngs(1))
    ids, mask = _batch()
    embeddings = encoder.embeddings.word.embedding[...]
    logits = head(encoder(ids, mask), embeddings)
    assert logits.shape == (2, 10, SMALL.vocab_size) and logits.dtype == jnp.float32
    doubled = head(encoder(ids, mask), 2 * embeddings)
    np.testing.assert_allclose(doubled, 2 * logits, rtol=1e-5, atol=1e-5)  # bias is zero at init


def test_jit_matches_eager():
    encoder = TextEncoder(SMALL, rngs=nnx.Rngs(0))
    ids, mask = _batch()
    np.testing.assert_allclose(nnx.jit(lambda m, i, k: m(i, k))(encoder, ids, mask), encoder(ids, mask), atol=1e-5)
