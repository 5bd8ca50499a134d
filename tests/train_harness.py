"""Helpers for the trainer tests: a tiny MELD root, a tiny BERT-layout model and the CLI arguments for both."""

import csv
import json
import os
import pathlib
import subprocess
import sys

from tests.data_paths import REPO

TINY_BERT = {
    "model_type": "bert", "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2,
    "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 128, "type_vocab_size": 2,
    "layer_norm_eps": 1e-12, "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
}


def make_tiny_setup(root: pathlib.Path, n_train: int = 64, n_dev: int = 24) -> pathlib.Path:
    """A MELD-layout root with the first rows of the shipped sample, and a tiny random BERT config."""
    (root / "meld").mkdir(parents=True)
    for split, n in (("train", n_train), ("dev", n_dev)):
        with open(REPO / "examples" / "meld" / f"{split}_sent_emo.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))[: n + 1]
        with open(root / "meld" / f"{split}_sent_emo.csv", "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(rows)
    (root / "tiny_bert").mkdir()
    (root / "tiny_bert" / "config.json").write_text(json.dumps(TINY_BERT))
    return root


def config_args(root: pathlib.Path, run: str = "run", **overrides) -> list[str]:
    settings = {
        "data.root": root, "data.shards": root / "shards", "workdir": root / run, "report_dir": root / f"{run}_report",
        "model.init": root / "tiny_bert", "model.pretrained": False, "model.head_hidden": 16,
        "text.max_length": 32, "train.batch_size": 8, "train.num_steps": 12, "train.checkpoint_every": 2,
        "train.eval_every": 6, "train.log_every": 2, "eval.batch_size": 8, "optim.warmup_steps": 2,
        **overrides,
    }
    return config_flags("meld_text.py", settings)


def config_flags(config_file: str, settings: dict) -> list[str]:
    """`--config=configs/<config_file> --config.key=value …`, for `load_config` or the CLI."""
    return [f"--config={REPO / 'configs' / config_file}", *(f"--config.{k}={v}" for k, v in settings.items())]


def emohd(args: list[str], env: dict | None = None, **popen) -> subprocess.Popen:
    """`emohd ARGS` in a fresh CPU-only process."""
    full_env = {**os.environ, "JAX_PLATFORMS": "cpu", "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "emohd_jax.cli", *args], cwd=REPO, env=full_env, **popen)
