"""`emohd`: prepare · train · eval · convert · bench.

Config-driven subcommands take `--config configs/<file>.py[:variant]` and any number of
`--config.key=value` overrides (ml_collections). The others take plain flags.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

CONFIG_COMMANDS = ("prepare", "train", "eval")


def _load_config(argv: list[str]):
    from absl import flags
    from ml_collections import config_flags

    flag_values = flags.FlagValues()
    # config_flags discovers `--config.x=y` overrides from sys.argv when the flag is defined.
    saved, sys.argv = sys.argv, ["emohd", *argv]
    try:
        config_flags.DEFINE_config_file("config", None, "ml_collections config file", flag_values=flag_values,
                                        lock_config=True)
        flag_values(sys.argv)
    finally:
        sys.argv = saved
    if flag_values.config is None:
        raise SystemExit("--config configs/<name>.py is required")
    return flag_values.config


def run_prepare(config) -> None:
    from data_pipeline.prepare import prepare_from_config

    manifest = prepare_from_config(config)
    print(json.dumps({"counts": manifest["counts"], "skips": manifest["skips"]["by_kind"]}, indent=1))


def run_train(config) -> dict:
    from emohd_jax.train.trainer import train_and_evaluate

    result = train_and_evaluate(config)
    print(json.dumps(result["history"], indent=1))
    return run_eval(config, config.data.eval_split)


def run_eval(config, split: str | None = None) -> dict:
    import jax

    from emohd_jax.reports import write_report
    from emohd_jax.train.trainer import evaluate_checkpoint

    split = split or config.data.split
    metrics, predictions = evaluate_checkpoint(config, split)
    if jax.process_index() == 0:
        path = write_report(config.report_dir, metrics, dataset=config.data.dataset, split=split,
                            extra={"task": config.task, "checkpoint": config.checkpoint or config.workdir})
        (pathlib.Path(config.report_dir) / "predictions.json").write_text(json.dumps(predictions))
        print((pathlib.Path(config.report_dir) / "metrics.md").read_text())
        print(f"wrote {path}")
    return metrics


def _other_commands(command: str, argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog=f"emohd {command}")
    if command == "convert":
        parser.add_argument("kind", choices=["text"])
        parser.add_argument("src", help="checkpoint directory or file as published")
        parser.add_argument("out", help="output directory (safetensors + config.json)")
        args = parser.parse_args(argv)
        from emohd_jax.convert.hf_text import convert_text_checkpoint

        print(convert_text_checkpoint(args.src, args.out))
    elif command == "bench":
        parser.add_argument("kind", choices=["text"])
        parser.add_argument("--batch-size", type=int, default=32)
        parser.add_argument("--seq-len", type=int, default=64)
        parser.add_argument("--repeats", type=int, default=5)
        parser.add_argument("--out-dir", default="reports/bench")
        args = parser.parse_args(argv)
        from emohd_jax.bench import text

        text.run(batch_size=args.batch_size, seq_len=args.seq_len, repeats=args.repeats, out_dir=args.out_dir)
    else:
        raise SystemExit(f"unknown command {command!r}; commands: {', '.join((*CONFIG_COMMANDS, 'convert', 'bench'))}")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    command, rest = argv[0], argv[1:]
    if command in CONFIG_COMMANDS:
        from emohd_jax.distributed import initialize_from_env

        initialize_from_env()
        config = _load_config(rest)
        {"prepare": run_prepare, "train": run_train, "eval": run_eval}[command](config)
    else:
        _other_commands(command, rest)


if __name__ == "__main__":
    main()
