"""Words → model input: word-piece tokens of an utterance and, optionally, its dialogue context."""

from __future__ import annotations

import collections
import os
from typing import TYPE_CHECKING, Sequence

import numpy as np

from emohd_jax.errors import EmptyTranscriptError
from emohd_jax.extract import BASE_FIELDS, TEXT, Field, Record, Utterance

if TYPE_CHECKING:
    import tokenizers


def dialogue_context(utterances: Sequence[Utterance], turns: int) -> dict[str, str]:
    """uid → the previous `turns` utterances of its dialogue as "Speaker: text" lines, oldest first."""
    if turns <= 0:
        return {}
    by_dialogue = collections.defaultdict(list)
    for utt in utterances:
        if utt.dialogue is not None:
            by_dialogue[utt.dialogue].append(utt)
    context = {}
    for dialogue in by_dialogue.values():
        dialogue.sort(key=lambda u: u.turn or 0)
        for i, utt in enumerate(dialogue):
            previous = dialogue[max(0, i - turns):i]
            context[utt.uid] = " ".join(f"{p.speaker}: {p.text}" for p in previous)
    return context


def load_tokenizer(tokenizer_dir: str | os.PathLike) -> "tokenizers.Tokenizer":
    """The folder's fast tokenizer (`tokenizer.json`), read by `tokenizers` alone, padding off.

    Importing transformers (and with it torch) costs about 3 s of every `emohd predict` start; its fast
    tokenizers wrap this same object and encode identically (checked on every MELD train and dev utterance,
    alone and with context, in tests/test_text_tokenizer.py). A folder without `tokenizer.json` (a slow
    tokenizer's vocab only) is converted by transformers once per process."""
    from tokenizers import Tokenizer

    path = os.path.join(os.fspath(tokenizer_dir), "tokenizer.json")
    if os.path.isfile(path):
        tokenizer = Tokenizer.from_file(path)
    else:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(os.fspath(tokenizer_dir), use_fast=True).backend_tokenizer
    tokenizer.no_padding()  # a saved tokenizer.json may pad every encoding to its length (MiniLM's: 128)
    return tokenizer


class TextExtractor:
    """Word-piece tokens of the utterance (segment A) and, optionally, its dialogue context (segment B).

    The current utterance is never truncated; only the context is (`truncation='only_second'`), and
    the context holds at most `context_turns` previous turns, as a live system would have heard them.
    """

    name = "text"

    def __init__(self, tokenizer_dir: str | os.PathLike, *, max_length: int = 128, context_turns: int = 0):
        self.tokenizer_dir = str(tokenizer_dir)
        self.tokenizer = load_tokenizer(self.tokenizer_dir)
        self.max_length, self.context_turns = max_length, context_turns
        self.fields = {**BASE_FIELDS, "input_ids": Field((None,), "int32"), "token_type_ids": Field((None,), "int32"),
                       "text": Field((), TEXT)}
        self._context: dict[str, str] = {}

    def options(self) -> dict:
        return {"tokenizer": os.path.basename(self.tokenizer_dir.rstrip("/")), "max_length": self.max_length,
                "context_turns": self.context_turns}

    def set_dialogues(self, utterances: Sequence[Utterance]) -> None:
        """Give the extractor the whole split so it can look up each utterance's preceding turns."""
        self._context = dialogue_context(utterances, self.context_turns)

    def encode(self, text: str, speaker: str | None = None, context: str = "") -> dict[str, np.ndarray]:
        """Token ids for one utterance: the same call at prepare time and at predict time."""
        if speaker:
            text = f"{speaker}: {text}"
        tokenizer = self.tokenizer
        tokenizer.no_truncation()
        if context and len(tokenizer.encode(text, add_special_tokens=False).ids) + 4 > self.max_length:
            context = ""  # the utterance alone fills the window: it keeps priority over its context
        tokenizer.enable_truncation(self.max_length, strategy="only_second" if context else "longest_first")
        encoded = tokenizer.encode(text, context or None)
        return {"input_ids": np.asarray(encoded.ids, np.int32), "token_type_ids": np.asarray(encoded.type_ids, np.int32)}

    def records(self, utterance: Utterance) -> list[Record]:
        if not utterance.text or not utterance.text.strip():
            raise EmptyTranscriptError(utterance.uid, "empty transcript")
        speaker = utterance.speaker if self.context_turns else None  # speakers matter only beside context
        tokens = self.encode(utterance.text, speaker, self._context.get(utterance.uid, ""))
        return [{"uid": utterance.uid, "label": utterance.label, "text": utterance.text, **tokens}]
