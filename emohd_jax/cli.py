"""`emohd`: prepare · train · eval · convert · bench · asr.

Config-driven subcommands take `--config configs/<file>.py[:variant]` and any number of
`--config.key=value` overrides (ml_collections). The others take plain flags.
"""

from __future__ import annotations

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
    from emohd_jax.train.tasks import make_task
    from emohd_jax.train.trainer import train_and_evaluate

    result = train_and_evaluate(config)
    print(json.dumps(result["history"], indent=1))
    return run_eval(config, config.data.eval_split) if make_task(config).evaluates else {}


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


# `emohd <command> <kind> ...` → `<module>.main(argv)`; each module parses its own flags.
MODULE_COMMANDS = {
    "convert": {"text": "emohd_jax.convert.hf_text", "vggish": "emohd_jax.convert.vggish",
                "mini-xception": "emohd_jax.convert.mini_xception", "mtcnn": "emohd_jax.convert.mtcnn"},
    "bench": {"text": "emohd_jax.bench.text", "audio": "emohd_jax.bench.audio_prepare",
              "faces": "emohd_jax.bench.faces"},
    "asr": {"eval": "emohd_jax.asr.evaluate"},
}


def _module_command(command: str, argv: list[str]) -> None:
    import importlib

    kinds = MODULE_COMMANDS[command]
    if not argv or argv[0] not in kinds:
        raise SystemExit(f"usage: emohd {command} {{{','.join(kinds)}}} [flags]  (--help after the kind for its flags)")
    importlib.import_module(kinds[argv[0]]).main(argv[1:])


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
    elif command in MODULE_COMMANDS:
        _module_command(command, rest)
    else:
        raise SystemExit(f"unknown command {command!r}; commands: {', '.join((*CONFIG_COMMANDS, *MODULE_COMMANDS))}")


if __name__ == "__main__":
    main()
