"""The paper's optional first text stage: masked-LM fine-tuning on the training transcripts (SPEC §4.4).

Masking is a per-record grain transform (BERT's 15 %: 80 % [MASK], 10 % random, 10 % kept), so it
is seeded per record and a resumed run masks exactly as an uninterrupted one. The stage ends by
writing the encoder to `<workdir>/encoder` in our converted layout; the classification stage
starts from it with `--config.model.init=<workdir>/encoder`.
"""

from __future__ import annotations

import pathlib

import grain
import jax
import numpy as np
from flax import nnx

from emohd_jax.losses import masked_lm_loss
from emohd_jax.towers import DTYPES, TextTask, resolve_text_dir

IGNORE = -1  # target of an unmasked position


class MaskTokens(grain.transforms.RandomMap):
    """input_ids → (masked input_ids, mlm_labels); special tokens are never masked."""

    def __init__(self, mask_id: int, vocab_size: int, special_ids: tuple[int, ...], rate: float = 0.15):
        self.mask_id, self.vocab_size, self.special_ids, self.rate = mask_id, vocab_size, special_ids, rate

    def random_map(self, record: dict, rng: np.random.Generator) -> dict:
        ids = np.asarray(record["input_ids"]).copy()
        maskable = ~np.isin(ids, self.special_ids)
        chosen = maskable & (rng.random(ids.shape) < self.rate)
        if maskable.any() and not chosen.any():  # every sequence teaches something
            chosen[rng.choice(np.flatnonzero(maskable))] = True
        labels = np.where(chosen, ids, IGNORE).astype(np.int32)
        roll = rng.random(ids.shape)
        ids = np.where(chosen & (roll < 0.8), self.mask_id, ids)
        ids = np.where(chosen & (roll >= 0.8) & (roll < 0.9), rng.integers(0, self.vocab_size, ids.shape), ids)
        return {**record, "input_ids": ids.astype(np.int32), "mlm_labels": labels}


class MaskedLMTask(TextTask):
    """Encoder + tied masked-LM head; starts from `model.init` (its MLM head too, when the checkpoint has one)."""

    padded = {"input_ids": 0, "token_type_ids": 0, "mlm_labels": IGNORE}
    target_fields = ("mlm_labels",)
    evaluates = False

    def __init__(self, config):
        super().__init__(config)
        from transformers import AutoTokenizer

        from emohd_jax.convert.hf_text import text_encoder_config

        tokenizer = AutoTokenizer.from_pretrained(resolve_text_dir(config.text.tokenizer or config.model.init))
        self.augment = MaskTokens(tokenizer.mask_token_id, text_encoder_config(self._source_dir()).vocab_size,
                                  tuple(tokenizer.all_special_ids), config.mlm.rate)

    def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
        from emohd_jax.convert.hf_text import text_encoder_config
        from emohd_jax.models.text_encoder import TextMaskedLM

        return TextMaskedLM(text_encoder_config(self._source_dir()), dtype=DTYPES[self.config.model.dtype], rngs=rngs)

    def load_pretrained(self, model: nnx.Module) -> None:
        from emohd_jax.convert.hf_text import CheckpointLayoutError, load_hf_mlm_head

        if not self.config.model.pretrained:
            return
        super().load_pretrained(model)
        try:
            nnx.update(model.head, nnx.state(load_hf_mlm_head(self._source_dir()), nnx.Param))
        except (CheckpointLayoutError, FileNotFoundError):
            pass  # sentence-embedding checkpoints (MiniLM) ship no MLM head: it starts fresh

    def loss(self, model: nnx.Module, batch: dict, *, weights: jax.Array,
             label_smoothing: float) -> tuple[jax.Array, jax.Array]:
        return masked_lm_loss(self.logits(model, batch, train=True), batch["mlm_labels"])

    def finish(self, model: nnx.Module, workdir: pathlib.Path) -> None:
        from emohd_jax.convert.hf_text import save_converted

        save_converted(model.encoder, workdir / "encoder")
