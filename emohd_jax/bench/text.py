"""`emohd bench text`: MiniLM encoder throughput, Flax (jit, fp32/bf16) against transformers PyTorch.

Both sides encode the same token batch, built from real MELD utterances with the MiniLM tokenizer,
in one process, so the numbers compare on the same machine and load. Output: reports/bench/text.json.
"""

from __future__ import annotations

import csv
import os
import pathlib
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from emohd_jax.measurement import save, time_call
from emohd_jax.convert.hf_text import load_hf_text_encoder, minilm_dir
from emohd_jax.errors import CommandLineParser
from emohd_jax.xla_cpu import inference_jit

DEFAULT_DATA_ROOT = "../shared/data"


def meld_token_batch(data_root: str | os.PathLike, batch_size: int, seq_len: int) -> dict[str, np.ndarray]:
    """MiniLM tokens of the first `batch_size` MELD dev utterances, padded/truncated to `seq_len`."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    csv_path = pathlib.Path(data_root) / "meld" / "dev_sent_emo.csv"
    with csv_path.open(encoding="utf-8", newline="") as f:
        utterances = [row["Utterance"] for row in csv.DictReader(f)]
    sentences = [utterances[i % len(utterances)] for i in range(batch_size)]
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    return dict(tokenizer(sentences, padding="max_length", truncation=True, max_length=seq_len, return_tensors="np"))


def _flax_forward(encoder) -> Callable[..., jax.Array]:
    """One jitted function of (params, tokens), compiled as the towers' inference is (`inference_jit`): no
    per-call NNX graph traversal in the timed path."""
    graphdef, state = nnx.split(encoder)

    def forward(state, input_ids, attention_mask, token_type_ids):
        return nnx.merge(graphdef, state)(input_ids, attention_mask, token_type_ids)

    jitted = inference_jit(forward)
    return lambda *tokens: jitted(state, *tokens)


def _throughput(timing: dict, batch_size: int, flops_per_seq: int) -> dict:
    seconds = timing["median_s"]
    return {
        **timing,
        "sequences_per_s": batch_size / seconds,
        "gflop_per_s": batch_size * flops_per_seq / seconds / 1e9,
    }


def run(
    batch_size: int = 32,
    seq_len: int = 64,
    repeats: int = 5,
    out_dir: str | os.PathLike = "reports/bench",
    data_root: str | os.PathLike = DEFAULT_DATA_ROOT,
) -> dict:
    """Time all backends on one batch, check their outputs agree, and save reports/bench/text.json."""
    import torch
    from transformers import BertModel

    tokens = meld_token_batch(data_root, batch_size, seq_len)
    real = tokens["attention_mask"].astype(bool)  # [batch, time]
    jax_tokens = [jnp.asarray(tokens[k], jnp.int32) for k in ("input_ids", "attention_mask", "token_type_ids")]
    torch_tokens = {k: torch.from_numpy(v.astype(np.int64)) for k, v in tokens.items()}

    fp32 = load_hf_text_encoder(minilm_dir())
    flops = fp32.config.flops_per_sequence(seq_len)
    results: dict[str, dict] = {}
    outputs: dict[str, np.ndarray] = {}
    for name, dtype in (("flax_jit_fp32", jnp.float32), ("flax_jit_bf16", jnp.bfloat16)):
        encoder = fp32 if dtype == jnp.float32 else load_hf_text_encoder(minilm_dir(), dtype=dtype)
        forward = _flax_forward(encoder)
        outputs[name] = np.asarray(forward(*jax_tokens), np.float32)
        timing = time_call(lambda: forward(*jax_tokens).block_until_ready(), repeats=repeats)
        results[name] = _throughput(timing, batch_size, flops)

    reference = BertModel.from_pretrained(minilm_dir()).eval()

    def torch_forward(model):
        with torch.inference_mode():
            return model(**torch_tokens).last_hidden_state

    outputs["torch_eager_fp32"] = torch_forward(reference).numpy()
    eager_timing = time_call(lambda: torch_forward(reference), repeats=repeats)
    results["torch_eager_fp32"] = _throughput(eager_timing, batch_size, flops)
    try:
        compiled = torch.compile(reference)
        outputs["torch_compile_fp32"] = torch_forward(compiled).numpy()  # the first call compiles
        results["torch_compile_fp32"] = _throughput(
            time_call(lambda: torch_forward(compiled), repeats=repeats), batch_size, flops
        )
    except Exception as error:  # inductor needs a working C++ toolchain; report rather than abort the run
        results["torch_compile_fp32"] = {"error": f"{type(error).__name__}: {str(error)[:500]}"}

    torch_out = outputs["torch_eager_fp32"]
    summary = {
        "model": "all-MiniLM-L6-v2",
        "batch_size": batch_size,
        "seq_len": seq_len,
        "real_token_fraction": float(real.mean()),
        "flops_per_sequence": flops,
        "torch_threads": torch.get_num_threads(),
        "results": results,
        "max_abs_diff_vs_torch_eager": {  # over real (unpadded) tokens
            name: float(np.abs(out - torch_out)[real].max())
            for name, out in outputs.items()
            if name != "torch_eager_fp32"
        },
    }
    save("text", summary, out_dir)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = CommandLineParser(prog="emohd bench text", description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out-dir", default="reports/bench")
    parser.add_argument("--data-root", default=DEFAULT_DATA_ROOT, help="folder holding meld/dev_sent_emo.csv")
    args = parser.parse_args(argv)
    run(args.batch_size, args.seq_len, args.repeats, args.out_dir, args.data_root)


if __name__ == "__main__":
    main()
