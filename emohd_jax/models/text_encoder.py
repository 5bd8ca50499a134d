"""Transformer text encoder for the text tower: one module for the DistilBERT and BERT (MiniLM) layouts.

Both published checkpoints are post-LayerNorm encoders with learned absolute positions; they differ
only in names, in token type embeddings (BERT has them) and in their heads, so one module with a
`type_vocab_size` switch covers both. Weights come from `emohd_jax.convert.hf_text`.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Literal

import jax
import jax.numpy as jnp
from flax import nnx

_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # the erf form that both checkpoints were trained with
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


@dataclasses.dataclass(frozen=True)
class TextEncoderConfig:
    """Shape and regularisation of the encoder; `type_vocab_size=0` means no token type embeddings."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position: int = 512
    type_vocab_size: int = 0
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    dropout: float = 0.1
    attention_dropout: float = 0.1

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"hidden_act {self.hidden_act!r} is not one of {sorted(_ACTIVATIONS)}")

    @classmethod
    def from_hf_config(cls, hf: dict[str, Any]) -> "TextEncoderConfig":
        """Read a Hugging Face config.json dict of model_type 'distilbert' or 'bert'."""
        model_type = hf.get("model_type")
        if model_type == "distilbert":
            # Sinusoidal DistilBERT checkpoints still store the (frozen) table, so learned positions load them.
            return cls(
                vocab_size=hf["vocab_size"],
                hidden_size=hf["dim"],
                num_layers=hf["n_layers"],
                num_heads=hf["n_heads"],
                intermediate_size=hf["hidden_dim"],
                max_position=hf["max_position_embeddings"],
                type_vocab_size=0,
                layer_norm_eps=1e-12,  # hard-coded in the DistilBERT implementation
                hidden_act=hf.get("activation", "gelu"),
                dropout=hf.get("dropout", 0.1),
                attention_dropout=hf.get("attention_dropout", 0.1),
            )
        if model_type == "bert":
            position_type = hf.get("position_embedding_type", "absolute")
            if position_type != "absolute":
                raise ValueError(f"BERT position_embedding_type {position_type!r} is not supported (only 'absolute')")
            return cls(
                vocab_size=hf["vocab_size"],
                hidden_size=hf["hidden_size"],
                num_layers=hf["num_hidden_layers"],
                num_heads=hf["num_attention_heads"],
                intermediate_size=hf["intermediate_size"],
                max_position=hf["max_position_embeddings"],
                type_vocab_size=hf.get("type_vocab_size", 2),
                layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
                hidden_act=hf.get("hidden_act", "gelu"),
                dropout=hf.get("hidden_dropout_prob", 0.1),
                attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
            )
        raise ValueError(f"unsupported model_type {model_type!r}: expected 'distilbert' or 'bert'")

    def flops_per_sequence(self, seq_len: int, last_layer_queries: int | None = None) -> int:
        """Forward multiply-add FLOPs (2 per MAC) of the encoder for one sequence of `seq_len` tokens; the last
        layer computing only its first `last_layer_queries` positions (`TextEncoder`) when given."""
        h, i, t = self.hidden_size, self.intermediate_size, seq_len

        def layer(queries: int) -> int:
            keys_values = 2 * t * 2 * h * h
            per_query = 2 * queries * (2 * h * h + 2 * h * i)  # q, out + the two feed-forward matrices
            attention = 2 * 2 * queries * t * h  # scores and weighted sum
            return keys_values + per_query + attention

        return (self.num_layers - 1) * layer(t) + layer(t if last_layer_queries is None else last_layer_queries)


def _layer_norm(config: TextEncoderConfig, dtype, param_dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
    # Statistics in fp32 whatever the compute dtype; exact (two-pass) variance to match PyTorch in fp32.
    return nnx.LayerNorm(
        config.hidden_size,
        epsilon=config.layer_norm_eps,
        dtype=dtype,
        param_dtype=param_dtype,
        use_fast_variance=False,
        rngs=rngs,
    )


class TextEmbeddings(nnx.Module):
    """Word + learned position (+ token type) embeddings, then LayerNorm and dropout."""

    def __init__(self, config: TextEncoderConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        embed = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.word = nnx.Embed(config.vocab_size, config.hidden_size, **embed)
        self.position = nnx.Embed(config.max_position, config.hidden_size, **embed)
        self.token_type = (
            nnx.Embed(config.type_vocab_size, config.hidden_size, **embed) if config.type_vocab_size else None
        )
        self.norm = _layer_norm(config, dtype, param_dtype, rngs)
        self.dropout = nnx.Dropout(config.dropout, rngs=rngs)

    def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array | None, *, deterministic: bool) -> jax.Array:
        # input_ids, token_type_ids: [batch, time] -> [batch, time, hidden]
        x = self.word(input_ids) + self.position(jnp.arange(input_ids.shape[1]))[None]
        if self.token_type is not None:
            x = x + self.token_type(jnp.zeros_like(input_ids) if token_type_ids is None else token_type_ids)
        return self.dropout(self.norm(x), deterministic=deterministic)


class SelfAttention(nnx.Module):
    """Multi-head self-attention over unpadded keys; scores and softmax in fp32 even in bf16 compute."""

    def __init__(self, config: TextEncoderConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        h = config.hidden_size
        dense = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.num_heads = config.num_heads
        self.query = nnx.Linear(h, h, **dense)
        self.key = nnx.Linear(h, h, **dense)
        self.value = nnx.Linear(h, h, **dense)
        self.out = nnx.Linear(h, h, **dense)
        self.dropout = nnx.Dropout(config.attention_dropout, rngs=rngs)

    def __call__(self, x: jax.Array, key_mask: jax.Array, *, deterministic: bool, queries: int | None = None
                 ) -> jax.Array:
        # x: [batch, time, hidden]; key_mask: [batch, time] bool, True for real tokens
        # -> [batch, queries or time, hidden]: only the first `queries` positions attend (all are keys).
        batch, _, hidden = x.shape
        split = lambda y: y.reshape(batch, y.shape[1], self.num_heads, hidden // self.num_heads)
        q, k, v = split(self.query(x[:, :queries])), split(self.key(x)), split(self.value(x))
        if deterministic or self.dropout.rate == 0:
            # JAX's fused attention: 1.9× faster than the einsums below on a 2-core CPU at MiniLM's shapes
            # (32 × 64 tokens, 12 heads), same result to 1e-6; it has no attention dropout, hence training below.
            context = jax.nn.dot_product_attention(q, k, v, mask=key_mask[:, None, None, :])
            return self.out(context.reshape(batch, -1, hidden))
        q = q * jnp.asarray((hidden // self.num_heads) ** -0.5, q.dtype)
        scores = jnp.einsum("bqnd,bknd->bnqk", q, k, preferred_element_type=jnp.float32)
        scores = jnp.where(key_mask[:, None, None, :], scores, jnp.finfo(jnp.float32).min)
        probs = self.dropout(jax.nn.softmax(scores, axis=-1), deterministic=deterministic)
        context = jnp.einsum("bnqk,bknd->bqnd", probs.astype(v.dtype), v)
        return self.out(context.reshape(batch, -1, hidden))


class EncoderLayer(nnx.Module):
    """Post-LN transformer block: x = LN(x + attn(x)); x = LN(x + ffn(x))."""

    def __init__(self, config: TextEncoderConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        dense = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.attention = SelfAttention(config, **dense)
        self.attention_norm = _layer_norm(config, dtype, param_dtype, rngs)
        self.ffn_in = nnx.Linear(config.hidden_size, config.intermediate_size, **dense)
        self.ffn_out = nnx.Linear(config.intermediate_size, config.hidden_size, **dense)
        self.output_norm = _layer_norm(config, dtype, param_dtype, rngs)
        self.activation = _ACTIVATIONS[config.hidden_act]
        self.dropout = nnx.Dropout(config.dropout, rngs=rngs)

    def __call__(self, x: jax.Array, key_mask: jax.Array, *, deterministic: bool, queries: int | None = None
                 ) -> jax.Array:
        # x: [batch, time, hidden] -> [batch, queries or time, hidden]
        attended = self.attention(x, key_mask, deterministic=deterministic, queries=queries)
        x = self.attention_norm(x[:, :queries] + self.dropout(attended, deterministic=deterministic))
        ffn = self.ffn_out(self.activation(self.ffn_in(x)))
        return self.output_norm(x + self.dropout(ffn, deterministic=deterministic))


class TextEncoder(nnx.Module):
    """Embeddings + `num_layers` post-LN blocks; returns the last hidden states.

    `last_layer_queries=n` computes the last block for the first n positions only (keys and values still
    from every token): a CLS classifier needs position 0 alone, and the skipped queries, output projection
    and feed-forward are 1/num_layers of the work (DistilBERT: 14 % of its FLOPs at 64 tokens). Exact.
    """

    def __init__(self, config: TextEncoderConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.config = config
        self.embeddings = TextEmbeddings(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.layers = nnx.List(
            [EncoderLayer(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs) for _ in range(config.num_layers)]
        )

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        token_type_ids: jax.Array | None = None,
        *,
        deterministic: bool = True,
        last_layer_queries: int | None = None,
    ) -> jax.Array:
        # input_ids, attention_mask, token_type_ids: [batch, time] -> [batch, last_layer_queries or time, hidden]
        key_mask = attention_mask.astype(bool)
        x = self.embeddings(input_ids, token_type_ids, deterministic=deterministic)
        for index, layer in enumerate(self.layers):
            last = index == len(self.layers) - 1
            x = layer(x, key_mask, deterministic=deterministic, queries=last_layer_queries if last else None)
        return x


# The projections `add_lora` wraps, by their path inside an encoder layer.
LORA_PROJECTIONS = ("attention/query", "attention/key", "attention/value", "attention/out", "ffn_in", "ffn_out")
_LORA_BASE = re.compile(rf"^(layers/\d+/(?:{'|'.join(LORA_PROJECTIONS)}))/(kernel|bias)$")


def add_lora(encoder: TextEncoder, rank: int, *, rngs: nnx.Rngs) -> None:
    """Wraps every attention and FFN projection of `encoder` in `nnx.LoRA`, in place: y = W x + b + x A B.

    B starts at zero, so the wrapped encoder computes exactly what it did; only A and B (`nnx.LoRAParam`)
    need training and shipping, which is what makes a fine-tuned MiniLM fit in a few MB instead of 90.
    """
    for layer in encoder.layers:
        for path in LORA_PROJECTIONS:
            *parents, name = path.split("/")
            owner = getattr(layer, parents[0]) if parents else layer
            base = getattr(owner, name)
            setattr(owner, name, nnx.LoRA(base.in_features, rank, base.out_features, base_module=base,
                                          dtype=base.dtype, param_dtype=base.param_dtype, rngs=rngs))


def lora_base_path(path: str) -> str:
    """An encoder variable's '/'-joined path → where it sits once `add_lora` wrapped its projection."""
    return _LORA_BASE.sub(r"\1/base_module/\2", path)


class TextClassifier(nnx.Module):
    """Encoder → pooled vector (CLS or masked mean) → MLP head → class logits (fp32).

    `lora_rank` > 0 adds LoRA adapters to the encoder's projections (`add_lora`).
    """

    def __init__(
        self,
        config: TextEncoderConfig,
        num_classes: int,
        *,
        pooling: Literal["cls", "mean"] = "cls",
        head_hidden_size: int | None = None,
        head_dropout: float = 0.1,
        lora_rank: int = 0,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        """`head_hidden_size=None` uses the encoder width for the hidden layer; 0 makes the head linear."""
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
        dense = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.pooling = pooling
        self.encoder = TextEncoder(config, **dense)
        if lora_rank:
            add_lora(self.encoder, lora_rank, rngs=rngs)
        hidden = config.hidden_size if head_hidden_size is None else head_hidden_size
        self.head_hidden = nnx.Linear(config.hidden_size, hidden, **dense) if hidden else None
        self.head_out = nnx.Linear(hidden or config.hidden_size, num_classes, **dense)
        self.dropout = nnx.Dropout(head_dropout, rngs=rngs)

    def features(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        token_type_ids: jax.Array | None = None,
        *,
        deterministic: bool = True,
    ) -> jax.Array:
        """Pooled utterance vector [batch, hidden], the input of the head and of feature extraction."""
        if self.pooling == "cls":
            return self.encoder(input_ids, attention_mask, token_type_ids, deterministic=deterministic,
                                last_layer_queries=1)[:, 0]
        hidden = self.encoder(input_ids, attention_mask, token_type_ids, deterministic=deterministic)
        weights = attention_mask.astype(jnp.float32)[..., None]  # [batch, time, 1]
        summed = jnp.sum(hidden.astype(jnp.float32) * weights, axis=1)
        return (summed / jnp.maximum(weights.sum(axis=1), 1.0)).astype(hidden.dtype)

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        token_type_ids: jax.Array | None = None,
        *,
        deterministic: bool = True,
    ) -> jax.Array:
        # -> logits: [batch, num_classes] in fp32 so the loss is stable under bf16 compute.
        x = self.features(input_ids, attention_mask, token_type_ids, deterministic=deterministic)
        x = self.dropout(x, deterministic=deterministic)
        if self.head_hidden is not None:
            x = self.dropout(jax.nn.gelu(self.head_hidden(x), approximate=False), deterministic=deterministic)
        return self.head_out(x).astype(jnp.float32)


class MaskedLMHead(nnx.Module):
    """Masked-LM head for the language-model stage: transform, then a decoder tied to the word embeddings."""

    def __init__(self, config: TextEncoderConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.transform = nnx.Linear(
            config.hidden_size, config.hidden_size, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )
        self.activation = _ACTIVATIONS[config.hidden_act]
        self.norm = _layer_norm(config, dtype, param_dtype, rngs)
        self.bias = nnx.Param(jnp.zeros((config.vocab_size,), param_dtype))
        self.dtype = dtype

    def __call__(self, hidden: jax.Array, word_embeddings: jax.Array) -> jax.Array:
        # hidden: [batch, time, hidden]; word_embeddings: [vocab, hidden] -> logits [batch, time, vocab] fp32
        x = self.norm(self.activation(self.transform(hidden)))
        logits = jnp.einsum(
            "bth,vh->btv", x, word_embeddings.astype(self.dtype), preferred_element_type=jnp.float32
        )
        return logits + self.bias[...].astype(jnp.float32)


class TextMaskedLM(nnx.Module):
    """Encoder + masked-LM head: the paper's language-model stage on the training transcripts (SPEC §4.4)."""

    def __init__(self, config: TextEncoderConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.encoder = TextEncoder(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.head = MaskedLMHead(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array, token_type_ids: jax.Array | None = None,
                 *, deterministic: bool = True) -> jax.Array:
        # -> logits [batch, time, vocab] fp32
        hidden = self.encoder(input_ids, attention_mask, token_type_ids, deterministic=deterministic)
        return self.head(hidden, self.encoder.embeddings.word.embedding[...])
