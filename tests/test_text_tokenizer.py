"""The text extractor's tokenizer (`tokenizers` alone) encodes exactly as transformers' fast tokenizer."""

import pytest

from data_pipeline.sources.meld import read_meld
from emohd_jax.convert.hf_text import minilm_dir
from emohd_jax.text.extract import TextExtractor, dialogue_context
from tests.data_paths import DATA

transformers = pytest.importorskip("transformers")


def _reference(tokenizer, text: str, context: str, max_length: int) -> tuple[list[int], list[int]]:
    """What TextExtractor.encode computed with transformers before (the ids the shipped text tower saw)."""
    if context and len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 4 > max_length:
        context = ""
    encoded = tokenizer(text, context or None, truncation="only_second" if context else True,
                        max_length=max_length, return_token_type_ids=True)
    return encoded["input_ids"], encoded["token_type_ids"]


@pytest.mark.parametrize("max_length", [128, 24])
def test_encodings_equal_transformers_on_meld_dev(max_length):
    """Every MELD dev utterance alone, with its speaker and with three turns of context (truncated to fit)."""
    utterances, _ = read_meld(DATA, "dev")
    reference = transformers.AutoTokenizer.from_pretrained(str(minilm_dir()), use_fast=True)
    extractor = TextExtractor(minilm_dir(), max_length=max_length)
    context = dialogue_context(utterances, 3)
    truncated = with_context = 0
    for utt in utterances:
        for text, ctx in ((utt.text, ""), (f"{utt.speaker}: {utt.text}", context.get(utt.uid, ""))):
            ours = extractor.encode(text, context=ctx)
            ids, types = _reference(reference, text, ctx, max_length)
            assert (ours["input_ids"].tolist(), ours["token_type_ids"].tolist()) == (ids, types), (text, ctx)
            truncated += len(ids) == max_length
            with_context += 1 in types
    assert with_context > 500 and (max_length == 128 or truncated > 500)  # both paths were exercised


def test_folder_without_tokenizer_json_is_converted(tmp_path):
    """A slow tokenizer's folder (vocab.txt + config only) encodes as the fast one does."""
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (tmp_path / name).write_bytes((minilm_dir() / name).read_bytes())
    text = "Oh my God, you're not gonna believe this!"
    slow_folder, fast_folder = TextExtractor(tmp_path, max_length=16), TextExtractor(minilm_dir(), max_length=16)
    assert slow_folder.encode(text, context="Ross: hi").keys() == {"input_ids", "token_type_ids"}
    for key in ("input_ids", "token_type_ids"):
        assert slow_folder.encode(text, context="Ross: hi")[key].tolist() == \
            fast_folder.encode(text, context="Ross: hi")[key].tolist()
