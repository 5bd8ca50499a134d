"""What differs between towers: how the model is built and initialised, and how a batch feeds it.

Everything else (loss, optimiser, sharding, checkpoints, evaluation) is shared by the trainer.
"""

from __future__ import annotations

import json
import pathlib
from typing import Protocol

import jax
import jax.numpy as jnp
from flax import nnx

from emohd_jax.classes import NUM_CLASSES

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class Task(Protocol):
    padded: dict[str, int]          # batch fields padded to a bucketed length, with their pad value
    model_fields: tuple[str, ...]   # batch fields the model reads (besides label/valid)

    def build_model(self, rngs: nnx.Rngs) -> nnx.Module: ...

    def load_pretrained(self, model: nnx.Module) -> None: ...

    def logits(self, model: nnx.Module, batch: dict, *, train: bool) -> jax.Array: ...


class TextTask:
    """Transformer encoder (DistilBERT or BERT layout) → CLS/mean pooling → MLP head (SPEC §4.4)."""

    padded = {"input_ids": 0, "token_type_ids": 0}
    model_fields = ("input_ids", "token_type_ids")

    def __init__(self, model_config):
        self.config = model_config

    def _source_dir(self) -> pathlib.Path:
        from emohd_jax.convert.hf_text import minilm_dir

        init = self.config.init
        return minilm_dir() if init == "minilm" else pathlib.Path(init)

    def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
        from emohd_jax.models.text_encoder import TextClassifier, TextEncoderConfig

        hf_config = json.loads((self._source_dir() / "config.json").read_text())
        encoder_config = TextEncoderConfig.from_hf_config(hf_config)
        return TextClassifier(encoder_config, NUM_CLASSES, pooling=self.config.pooling,
                              head_hidden_size=self.config.head_hidden, head_dropout=self.config.head_dropout,
                              dtype=DTYPES[self.config.dtype], rngs=rngs)

    def load_pretrained(self, model: nnx.Module) -> None:
        from emohd_jax.convert.hf_text import load_hf_text_encoder

        if self.config.pretrained:
            nnx.update(model.encoder, nnx.state(load_hf_text_encoder(self._source_dir()), nnx.Param))

    def logits(self, model: nnx.Module, batch: dict, *, train: bool) -> jax.Array:
        ids = batch["input_ids"]
        return model(ids, ids != 0, batch["token_type_ids"], deterministic=not train)


def make_task(config) -> Task:
    tasks = {"text": TextTask}
    if config.task not in tasks:
        raise ValueError(f"unknown task {config.task!r}; known: {sorted(tasks)}")
    return tasks[config.task](config.model)
