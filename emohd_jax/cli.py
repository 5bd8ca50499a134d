"""`emohd`: the command line. `emohd --help` lists the commands; `emohd <command> --help` each one's flags.

Every user mistake (a wrong flag, a missing config or file, a bad override, unreadable input that stops a
command) is one line, `emohd: error: <where>: <what is wrong> (<what to do>)`, and exit code 2; `--debug`
(anywhere on the line, or EMOHD_DEBUG=1) shows the traceback instead.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import os
import pathlib
import sys

from emohd_jax.errors import (EXIT_INTERNAL, EXIT_NONE, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, BadInputError,
                              CommandLineParser, UsageError)


def _extractor(config):
    """The extractor of the config's tower, for its dataset's media (still face images or recordings)."""
    from data_pipeline.sources.base import CLASS_FOLDER_SETS
    from emohd_jax.train.trainer import make_task

    return make_task(config).extractor(stills=config.data.dataset in CLASS_FOLDER_SETS)


def run_prepare(config, runner: str | None = None, beam_options: str = "") -> None:
    import shlex

    from data_pipeline.prepare import prepare_from_config

    manifest = prepare_from_config(config, _extractor(config), runner=runner, beam_options=shlex.split(beam_options))
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
    from emohd_jax.reports import write_report, write_run_eval
    from emohd_jax.train.trainer import evaluate_shards

    split = split or config.data.split
    _check_checkpoint(config)  # before any shard is prepared or written
    shards_dir = shards_for_split(config, split, _extractor(config))
    metrics, predictions = evaluate_shards(config, shards_dir, split)
    if jax.process_index() == 0:
        checkpoint = config.checkpoint or config.workdir
        path = write_report(config.report_dir, metrics, dataset=config.data.dataset, split=split,
                            extra={"task": config.task, "checkpoint": checkpoint})
        (path.parent / "predictions.json").write_text(json.dumps(predictions))
        if checkpoint == config.workdir:
            write_run_eval(config.workdir, metrics, predictions, dataset=config.data.dataset, split=split)
        print((path.parent / "metrics.md").read_text())
        print(f"wrote {path}")
    return metrics


def _check_checkpoint(config) -> None:
    """UsageError when the weights `emohd eval` would restore are not there (each run of a soup)."""
    from emohd_jax.checkpointing import best_checkpoint_dir

    if config.checkpoint == "pretrained":
        return
    flag = "--config.checkpoint" if config.checkpoint else "--config.workdir"
    for run in (config.checkpoint or config.workdir).split(","):
        try:
            best_checkpoint_dir(run)
        except FileNotFoundError as error:
            raise UsageError(flag, str(error), "train it first (`emohd train --config ...`), or give "
                             "--config.checkpoint=DIR[,DIR...] or --config.checkpoint=pretrained") from error


def run_export(config) -> dict:
    """`emohd export --config bundle`: trained runs → a model bundle (see emohd_jax.bundle)."""
    from emohd_jax.bundle import export_bundle
    from emohd_jax.run_config import load_config

    specs = {modality: spec for modality, spec in config.towers.items() if spec}  # "" leaves a modality out
    towers = {modality: load_config(["--config", *spec.split()]) for modality, spec in specs.items()}
    commands = {modality: f"emohd train --config {spec}" for modality, spec in specs.items()}
    manifest = export_bundle(towers, config.out, rule=config.rule, calibrated=config.calibrated, commands=commands,
                             fusion_params=config.fusion_params or None, reuse=config.reuse or None)
    sizes = {m: t["bytes"] for m, t in manifest["towers"].items()}
    print(json.dumps({"out": config.out, "bytes": sizes, "fusion": manifest["fusion"]}, indent=1))
    return manifest


def run_system_eval(config) -> dict:
    from emohd_jax.system_eval import evaluate_system

    return evaluate_system(config)


def run_predict(argv: list[str]) -> int:
    """`emohd predict PATH... [--bundle DIR] [--out DIR] [--modalities face,voice,words]`: prints a table,
    returns the documented exit code."""
    parser = CommandLineParser(prog="emohd predict", description=(
        "Emotions of the person in each video or audio file: per utterance (face, voice, words and their fusion), "
        "per second (face) and per 0.96 s (voice). Writes <name>.json, <name>.csv and <name>.png per input. "
        f"Exit code {EXIT_OK}: all inputs predicted; {EXIT_PARTIAL}: some failed (listed); "
        f"{EXIT_NONE}: none could be predicted."))
    parser.add_argument("paths", nargs="+", help="media files, folders (searched recursively) or quoted globs")
    parser.add_argument("--bundle", default=None, help="model bundle folder (default: the one shipped in the package)")
    parser.add_argument("--out", default="emohd_predictions", help="output folder (default: %(default)s)")
    parser.add_argument("--modalities", default="face,voice,words",
                        help="which modalities to compute, comma-separated (default: %(default)s); the others are "
                             "reported missing, 'not requested', and cost nothing: without face no face detection, "
                             "without words no speech recognition")
    from emohd_jax.serve.batch import FAILURES_FILE, NORMALIZE, STORE_PATHS, default_cache_dir
    from emohd_jax.serve.options import CLI_OPTIONS, NUMERIC_OPTIONS

    for option in (NUMERIC_OPTIONS[name] for name in CLI_OPTIONS):  # ranges checked while parsing: exit 2
        parser.add_argument(option.flag, type=option.parse, default=option.default, metavar=option.unit.upper() or "N",
                            help=f"{option.help} (default: %(default)s; {option.range_text()})")
    parser.add_argument("--overwrite", action="store_true",
                        help="predict inputs again even when --out holds their result from the same content, bundle "
                             "and options (default: read those back; a changed input or option is always redone)")
    parser.add_argument("--store-paths", choices=STORE_PATHS, default="given",
                        help="how each input's path is written in the outputs: as given (relative stays relative) "
                             "or its file name only (default: %(default)s)")
    parser.add_argument("--normalize", choices=NORMALIZE, default="training",
                        help="the voice features' statistics: the voice tower's training ones, or those of the speech "
                             "of all inputs in each folder (a first, voice-only pass per folder). 'folder' is what "
                             "holds for a voice, language or room the tower never heard: a folder of clips from "
                             "one source (default: %(default)s)")
    parser.add_argument("--no-cache", action="store_true",
                        help=f"do not keep traced and compiled programs between runs (default: kept in {default_cache_dir()}, "
                             "that is $XDG_CACHE_HOME/emohd/jax or ~/.cache/emohd/jax, so a second run starts fast)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar and no table; failures are still printed (stderr) and, like every "
                             "run's summary, written to <out>/failures.json and <out>/run.json")
    args = parser.parse_args(argv)
    from emohd_jax.serve.options import requested_modalities

    modalities = requested_modalities(args.modalities)  # a typo is a usage error before any model loads
    from rich.console import Console

    from emohd_jax.serve.outputs import summary_table
    from emohd_jax.serve.batch import predict

    run = predict(args.paths, args.bundle, out_dir=args.out, progress=not args.quiet, overwrite=args.overwrite,
                  store_paths=args.store_paths, compilation_cache=not args.no_cache, modalities=modalities,
                  normalize=args.normalize,
                  **{name: getattr(args, name) for name in CLI_OPTIONS})
    if args.quiet:
        for path, reason in run.failures:  # quiet hides progress, never what went wrong
            print(f"emohd predict: {path}: {reason}", file=sys.stderr)
        return run.exit_code
    Console().print(summary_table(run.results, run.failures))
    again = f" ({len(run.resumed)} done by an earlier run: --overwrite redoes them)" if run.resumed else ""
    listed = f" (listed in {pathlib.Path(args.out) / FAILURES_FILE})" if run.failures else ""
    print(f"{len(run.results)} predicted{again}, {len(run.failures)} failed{listed} → {args.out}")
    return run.exit_code


def run_sweep(argv: list[str]) -> int:
    """`emohd sweep --config X --sweep S [--storage URL] ...` (emohd_jax.study.driver)."""
    from emohd_jax.study.driver import main

    return main(argv)


@dataclasses.dataclass(frozen=True)
class ConfigCommand:
    summary: str
    run: object  # (config, **flags) → result
    flags: tuple[tuple[str, dict], ...] = ()  # the command's own flags beside --config: (name, add_argument kwargs)


PREPARE_FLAGS = (
    ("--runner", {"default": None, "help": "direct | dataflow | flink | spark: extract on Apache Beam with this "
                                           "runner (the [beam] extra); default: in this process"}),
    ("--beam-options", {"default": "", "help": "the runner's pipeline flags, after '=' and quoted: "
                                               "--beam-options='--direct_num_workers=4' or "
                                               "--beam-options='--project=P --region=R --temp_location=gs://B/tmp'"}),
)


# Config-driven commands: `emohd <command> --config NAME[:VARIANT] [--config.KEY=VALUE ...]`.
CONFIG_COMMANDS = {
    "prepare": ConfigCommand("Read a dataset, extract the tower's features (faces, log-mel patches, word pieces) "
                             "and write resumable shards with a manifest of what was skipped and why "
                             "(--runner direct|dataflow|flink|spark: on Apache Beam).", run_prepare, PREPARE_FLAGS),
    "train": ConfigCommand("Train a tower on its shards (sharded over the devices, resumable), then evaluate the "
                           "best checkpoint on the dev split.", run_train),
    "eval": ConfigCommand("Evaluate a run (or --config.checkpoint=DIR|pretrained) on --config.data.split: per-class "
                          "F1, weighted F1, confusion matrix, under report_dir.", run_eval),
    "export": ConfigCommand("Pack trained runs and their fitted fusion into a model bundle folder.", run_export),
    "system-eval": ConfigCommand("Run the whole system (V, A, T and their fusions, every rule) on a labelled set "
                                 "and write the paper's tables.", run_system_eval),
}
# `emohd <command> ...` → `run(argv)`, a command with its own flags.
PLAIN_COMMANDS = {"predict": (run_predict, "Emotions of the person in videos or audio files: per "
                              "utterance, per second and per 0.96 s; JSON, CSV and a timeline PNG per input."),
                  "sweep": (run_sweep, "Hyper-parameter sweep (--config X --sweep S): an Optuna study whose trials "
                            "train K at a time as one program; resumable; reports/sweep_<name>/.")}
# `emohd <command> <kind> ...` → `<module>.main(argv)`; each module parses its own flags.
MODULE_COMMANDS = {
    "convert": ("Convert published weights to this project's Flax layout.",
                {"text": "emohd_jax.convert.hf_text", "vggish": "emohd_jax.convert.vggish",
                 "mini-xception": "emohd_jax.convert.mini_xception", "mtcnn": "emohd_jax.convert.mtcnn"}),
    "bench": ("Throughput benchmarks against a reference measured in the same run; JSON under reports/bench.",
              {"text": "emohd_jax.bench.text", "audio": "emohd_jax.bench.audio_prepare",
               "faces": "emohd_jax.bench.faces", "fused": "emohd_jax.bench.fused", "predict": "emohd_jax.bench.predict",
               "train": "emohd_jax.bench.train", "gpu-check": "emohd_jax.bench.gpu_check",
               "predict-memory": "emohd_jax.bench.predict_memory", "sweep": "emohd_jax.bench.sweep"}),
    "asr": ("Speech recognition checks.", {"eval": "emohd_jax.asr.evaluate",
                                            "language": "emohd_jax.asr.language_check"}),
    "check": ("Checks beyond a tower's own dev set: fusion (real A+T and label-paired trimodal), cross-corpus, "
              "robustness.", {"fusion": "emohd_jax.checks.fusion", "crosscorpus": "emohd_jax.checks.crosscorpus",
                              "robustness": "emohd_jax.checks.robustness"}),
}
EXIT_CODES = (f"Exit codes: {EXIT_OK} done; {EXIT_USAGE} a mistake in the command or its input (one line says "
              f"what); {EXIT_PARTIAL} predict: some inputs failed; {EXIT_NONE} predict: none could be predicted; "
              f"{EXIT_INTERNAL} an internal error (run again with --debug and report the traceback).")


def overview() -> str:
    """`emohd --help`."""
    lines = ["usage: emohd <command> [flags] [--debug]", "", "Commands:"]
    for name, (_, summary) in PLAIN_COMMANDS.items():
        lines.append(f"  {name:<12} {summary}")
    for name, command in CONFIG_COMMANDS.items():
        lines.append(f"  {name:<12} {command.summary}")
    for name, (summary, kinds) in MODULE_COMMANDS.items():
        lines.append(f"  {name:<12} {summary} Kinds: {', '.join(kinds)}.")
    lines += ["", "`emohd <command> --help` shows a command's flags; for config commands add --config NAME to list "
              "that config's fields with their defaults.",
              "Environment: EMOHD_HOME (where relative work/ and reports/ paths go; default: the current folder), "
              "EMOHD_DATA (the default data root), EMOHD_DEBUG=1 (tracebacks).", EXIT_CODES]
    return "\n".join(lines)


def _kinds_help(command: str) -> str:
    from emohd_jax.run_config import first_doc_line

    summary, kinds = MODULE_COMMANDS[command]
    lines = [f"usage: emohd {command} {{{','.join(kinds)}}} [flags]", "", summary, "", "Kinds:"]
    for kind, module in kinds.items():
        spec = importlib.util.find_spec(module)
        doc = first_doc_line(pathlib.Path(spec.origin)) if spec and spec.origin else ""
        lines.append(f"  {kind:<15} {doc}")
    lines.append(f"\n`emohd {command} <kind> --help` shows that kind's flags.")
    return "\n".join(lines)


def _command_flags(command: str) -> CommandLineParser:
    """A config command's own flags (the rest of its line goes to load_config)."""
    parser = CommandLineParser(prog=f"emohd {command}", add_help=False)
    for name, kwargs in CONFIG_COMMANDS[command].flags:
        parser.add_argument(name, **kwargs)
    return parser


def dispatch(argv: list[str]) -> int:
    """Runs one command line (without `--debug`); returns the exit code, raises UsageError for mistakes."""
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(overview())
        return EXIT_OK
    command, rest = argv[0], argv[1:]
    if command in CONFIG_COMMANDS:
        from emohd_jax.run_config import config_help, load_config

        flags = _command_flags(command)
        if "--help" in rest or "-h" in rest:
            print(config_help(command, CONFIG_COMMANDS[command].summary, rest))
            if CONFIG_COMMANDS[command].flags:
                print("\nFlags:\n" + flags.format_help().split("options:\n", 1)[-1])
            return EXIT_OK
        own, rest = flags.parse_known_args(rest)
        config = load_config(rest)
        from emohd_jax.distributed import initialize_from_env

        initialize_from_env()
        CONFIG_COMMANDS[command].run(config, **vars(own))
        return EXIT_OK
    if command in PLAIN_COMMANDS:
        return PLAIN_COMMANDS[command][0](rest) or EXIT_OK
    if command in MODULE_COMMANDS:
        kinds = MODULE_COMMANDS[command][1]
        if not rest or rest[0] in ("-h", "--help"):
            print(_kinds_help(command))
            if rest:
                return EXIT_OK
            raise UsageError(f"emohd {command}", "which kind?", f"one of: {', '.join(kinds)}")
        if rest[0] not in kinds:
            raise UsageError(f"emohd {command} {rest[0]}", "unknown kind", f"one of: {', '.join(kinds)}")
        return importlib.import_module(kinds[rest[0]]).main(rest[1:]) or EXIT_OK
    known = (*PLAIN_COMMANDS, *CONFIG_COMMANDS, *MODULE_COMMANDS)
    raise UsageError(command, "unknown command", f"one of: {', '.join(known)}; `emohd --help` says what each does")


# Commands whose process ends as soon as their files are written and closed: the interpreter's teardown of the
# native libraries predict loads (CTranslate2, ONNX Runtime, the XLA client) took another 0.5 s of every run and
# does nothing for the user. Not the training commands: their checkpoint and summary writers finish at exit.
EXIT_WITHOUT_TEARDOWN = ("predict",)


def main(argv: list[str] | None = None) -> None:
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("EMOHD_DEBUG") == "1"
    argv = [a for a in argv if a != "--debug"]
    try:
        code = dispatch(argv)
    except (UsageError, BadInputError) as error:
        if debug:
            raise
        print(f"emohd: error: {error}", file=sys.stderr)
        code = EXIT_USAGE
    except FileNotFoundError as error:  # a path the user gave that is not there
        if debug:
            raise
        where = f"{error.filename}: {error.strerror}" if error.filename else str(error)
        print(f"emohd: error: {where} (check the path)", file=sys.stderr)
        code = EXIT_USAGE
    except KeyboardInterrupt:
        print("emohd: interrupted", file=sys.stderr)
        code = 130
    except Exception as error:  # a bug, not a user mistake: one line unless --debug
        if debug:
            raise
        print(f"emohd: internal error: {type(error).__name__}: {error} (run again with --debug for the "
              "traceback, and report it)", file=sys.stderr)
        code = EXIT_INTERNAL
    if from_command_line and argv[:1] and argv[0] in EXIT_WITHOUT_TEARDOWN:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    main()
