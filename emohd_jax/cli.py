"""`emohd`: predict · prepare · train · eval · export · system-eval · convert · bench · asr.

Config-driven subcommands take `--config configs/<file>.py[:variant]` and any number of
`--config.key=value` overrides (ml_collections). The others take plain flags.
"""

from __future__ import annotations

import json
import pathlib
import sys

CONFIG_COMMANDS = ("prepare", "train", "eval", "export", "system-eval")


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
    from emohd_jax.train.trainer import make_task

    manifest = prepare_from_config(config, make_task(config).extractor(config.data.dataset))
    print(json.dumps({"counts": manifest["counts"], "skips": manifest["skips"]["by_kind"]}, indent=1))


def run_train(config) -> dict:
    from emohd_jax.train.trainer import make_task
    from emohd_jax.train.trainer import train_and_evaluate

    result = train_and_evaluate(config)
    print(json.dumps(result["history"], indent=1))
    return run_eval(config, config.data.eval_split) if make_task(config).evaluates else {}


def run_eval(config, split: str | None = None) -> dict:
    import jax

    from data_pipeline.prepare import shards_for_split
    from emohd_jax.reports import write_report
    from emohd_jax.train.trainer import evaluate_shards, make_task

    split = split or config.data.split
    shards_dir = shards_for_split(config, split, make_task(config).extractor(config.data.dataset))
    metrics, predictions = evaluate_shards(config, shards_dir, split)
    if jax.process_index() == 0:
        checkpoint = config.checkpoint or config.workdir
        path = write_report(config.report_dir, metrics, dataset=config.data.dataset, split=split,
                            extra={"task": config.task, "checkpoint": checkpoint})
        (pathlib.Path(config.report_dir) / "predictions.json").write_text(json.dumps(predictions))
        if checkpoint == config.workdir:
            # Saved with the run: `emohd export` fits fusion from each tower's own dev confusion counts.
            run_eval_path = pathlib.Path(config.workdir) / f"eval_{split}.json"
            run_eval_path.write_text(json.dumps({"dataset": config.data.dataset, "split": split,
                                                 "metrics": metrics, "predictions": predictions}))
        print((pathlib.Path(config.report_dir) / "metrics.md").read_text())
        print(f"wrote {path}")
    return metrics


def run_export(config) -> dict:
    """`emohd export --config configs/bundle.py`: trained runs → a model bundle (see emohd_jax.bundle)."""
    from emohd_jax.bundle import export_bundle

    specs = {modality: spec for modality, spec in config.towers.items() if spec}  # "" leaves a modality out
    towers = {modality: _load_config(["--config", *spec.split()]) for modality, spec in specs.items()}
    commands = {modality: f"emohd train --config {spec}" for modality, spec in specs.items()}
    manifest = export_bundle(towers, config.out, rule=config.rule, calibrated=config.calibrated, commands=commands)
    sizes = {m: t["bytes"] for m, t in manifest["towers"].items()}
    print(json.dumps({"out": config.out, "bytes": sizes, "fusion": manifest["fusion"]}, indent=1))
    return manifest


def run_system_eval(config) -> dict:
    from emohd_jax.system_eval import evaluate_system

    return evaluate_system(config)


# `emohd <command> ...` → `<module>.main(argv)` for commands with their own flags.
PLAIN_COMMANDS = {"predict": "emohd_jax.inference"}
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
        {"prepare": run_prepare, "train": run_train, "eval": run_eval, "export": run_export,
         "system-eval": run_system_eval}[command](config)
    elif command in PLAIN_COMMANDS:
        import importlib

        sys.exit(importlib.import_module(PLAIN_COMMANDS[command]).main(rest))
    elif command in MODULE_COMMANDS:
        _module_command(command, rest)
    else:
        known = (*PLAIN_COMMANDS, *CONFIG_COMMANDS, *MODULE_COMMANDS)
        raise SystemExit(f"unknown command {command!r}; commands: {', '.join(known)}")


if __name__ == "__main__":
    main()
