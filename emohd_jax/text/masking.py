"""Masked-LM training input: BERT's 15 % masking (80 % [MASK], 10 % random, 10 % kept) as a per-record grain
transform, so it is seeded per record and a resumed run masks exactly as an uninterrupted one."""

from __future__ import annotations

import grain
import numpy as np

from emohd_jax.losses import IGNORE


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
