"""Config files for the config-driven commands: found by name or path, loaded, overridden, documented, and
their relative paths resolved against documented roots, so a command works from any folder.

    --config meld_text:lora            the packaged configs/meld_text.py, variant "lora"
    --config path/to/mine.py[:variant] a config file of your own (it may import `configs.common`)
    --config.train.batch_size=64       an override: the value is parsed as the field's current type

Relative paths in a config are resolved when it is loaded:
    run outputs (workdir, report_dir, data.shards, checkpoint, model.init, out, bundle)
        against $EMOHD_HOME, default: the current directory;
    data.root: "" means the default data root: $EMOHD_DATA, else ../shared/data beside a source checkout
        of emohd-jax, else ./data; a relative root is taken from the current directory when it exists
        there, else from the source checkout (the `:sample` variant's "examples").
A value counts as a path when it contains "/" ("minilm" and "pretrained" are names); URIs (gs://…) and
absolute paths are kept as they are.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import os
import pathlib
import re

import ml_collections

from emohd_jax.errors import UsageError

CONFIG_DIR = pathlib.Path(importlib.util.find_spec("configs").origin).parent
# The source checkout the package runs from (pip install -e), or None for an installed wheel.
CHECKOUT = CONFIG_DIR.parent if (CONFIG_DIR.parent / "pyproject.toml").is_file() else None
HOME_PATH_FIELDS = ("workdir", "report_dir", "data.shards", "checkpoint", "model.init", "out", "bundle")


def available_configs() -> dict[str, str]:
    """Packaged config name → the first line of its docstring."""
    found = {}
    for path in sorted(CONFIG_DIR.glob("*.py")):
        if path.stem in ("__init__", "common"):
            continue
        found[path.stem] = first_doc_line(path)
    return found


def first_doc_line(path: pathlib.Path) -> str:
    """The first line of a Python file's module docstring, read without importing it ('' when none)."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return doc.splitlines()[0] if doc else ""


def find_config(spec: str) -> tuple[pathlib.Path, str]:
    """`name[:variant]` or `path.py[:variant]` → (config file, variant)."""
    name, _, variant = spec.partition(":")
    candidates = [pathlib.Path(name)] if name.endswith(".py") else []
    candidates.append(CONFIG_DIR / f"{pathlib.Path(name).stem}.py")
    for path in candidates:
        if path.is_file():
            return path.resolve(), variant
    known = ", ".join(available_configs())
    raise UsageError(name, "no such config", f"give a config file's path, or one of the packaged configs: {known}")


def _import_config_module(path: pathlib.Path):
    module_name = f"emohd_user_config_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        raise UsageError(path, f"the config file does not load: {type(error).__name__}: {error}",
                         "fix the file; --debug shows the traceback") from error
    if not hasattr(module, "get_config"):
        raise UsageError(path, "no get_config() in the config file", "define get_config(arg: str = '')")
    return module


def parse_override(config: ml_collections.ConfigDict, key: str, text: str, source: pathlib.Path) -> None:
    """Sets `config.<key>` from the command line's `text`, parsed as the field's current type."""
    parent, _, leaf = key.rpartition(".")
    node = config
    for part in parent.split(".") if parent else ():
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            raise _unknown_field(config, key, source)
        node = node[part]
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
        raise _unknown_field(config, key, source)
    current = node[leaf]
    try:
        node[leaf] = _parse_value(current, text)
    except (ValueError, SyntaxError, TypeError) as error:
        raise UsageError(f"--config.{key}={text}", f"not a valid {type(current).__name__} ({error})",
                         f"the field holds {current!r}") from error


def _parse_value(current, text: str):
    if isinstance(current, bool):
        lowered = text.lower()
        if lowered not in ("true", "false", "1", "0"):
            raise ValueError("expected true or false")
        return lowered in ("true", "1")
    if isinstance(current, str):
        return text
    if isinstance(current, int):
        return int(text)
    if isinstance(current, float):
        return float(text)
    if isinstance(current, (tuple, list)):
        if text.strip() == "":
            return type(current)()
        value = ast.literal_eval(text) if text.lstrip()[:1] in "([" else tuple(text.split(","))
        return type(current)(value if isinstance(value, (tuple, list)) else (value,))
    try:  # None or another literal: a Python literal, else the text itself
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _unknown_field(config: ml_collections.ConfigDict, key: str, source: pathlib.Path) -> UsageError:
    fields = list(flatten(config))
    close = difflib.get_close_matches(key, fields, n=1)
    hint = f"did you mean --config.{close[0]}?" if close else f"`--config {source.stem} --help` lists the fields"
    return UsageError(f"--config.{key}", f"{source.name} has no such field", hint)


def flatten(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, object]:
    """Dotted field name → value, leaves only."""
    out = {}
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def load_config(argv: list[str]) -> ml_collections.ConfigDict:
    """`--config SPEC [--config.key=value ...]` → the locked config, its relative paths resolved."""
    spec, overrides = None, []
    args = iter(argv)
    for arg in args:
        if arg == "--config":
            spec = next(args, None)
            if spec is None:
                raise UsageError("--config", "needs a value", "e.g. --config meld_text or --config configs/x.py:variant")
        elif arg.startswith("--config="):
            spec = arg.split("=", 1)[1]
        elif arg.startswith("--config."):
            key, equals, value = arg[len("--config."):].partition("=")
            if not equals:
                value = next(args, None)
                if value is None:
                    raise UsageError(arg, "needs a value", f"write {arg}=VALUE")
            overrides.append((key, value))
        else:
            raise UsageError(arg, "unknown flag", "config commands take --config SPEC and --config.KEY=VALUE; "
                             "--help lists them")
    if not spec:
        raise UsageError("--config", "is required", "e.g. --config meld_text; `--help` lists the packaged configs")
    path, variant = find_config(spec)
    module = _import_config_module(path)
    try:
        config = module.get_config(variant) if variant else module.get_config()
    except ValueError as error:  # the configs' way of rejecting a variant
        raise UsageError(f"{path.name}:{variant}", str(error), "pick a variant the config knows") from error
    for key, value in overrides:
        parse_override(config, key, value, path)
    resolve_paths(config)
    config.lock()
    return config


def emohd_home() -> pathlib.Path:
    return pathlib.Path(os.environ.get("EMOHD_HOME") or os.getcwd()).resolve()


def shown_path(path: str) -> str:
    """`path` relative to $EMOHD_HOME when it lies inside it, as given otherwise: a report records where a run or
    input is without the machine's folders (configs resolve their paths against $EMOHD_HOME)."""
    try:
        return str(pathlib.Path(path).relative_to(emohd_home()))
    except ValueError:
        return path


def default_data_root() -> pathlib.Path:
    if os.environ.get("EMOHD_DATA"):
        return pathlib.Path(os.environ["EMOHD_DATA"]).resolve()
    if CHECKOUT is not None and (CHECKOUT.parent / "shared" / "data").is_dir():
        return (CHECKOUT.parent / "shared" / "data").resolve()
    return (pathlib.Path.cwd() / "data").resolve()


def portable_paths(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of a resolved config as a file meant to run elsewhere should hold it (`resolve_paths` undone):
    run paths under $EMOHD_HOME relative to it (`shown_path`), and `data.root` "" (the default, resolved where
    the config runs) when it is this machine's default data root."""
    portable = ml_collections.ConfigDict(config.to_dict())
    fields = flatten(portable)
    for key in HOME_PATH_FIELDS:
        value = fields.get(key)
        if isinstance(value, str) and value:
            _set(portable, key, ",".join(shown_path(p) for p in value.split(",")))
    root = fields.get("data.root")
    if isinstance(root, str) and root:
        is_default = "://" not in root and pathlib.Path(root).resolve() == default_data_root()
        _set(portable, "data.root", "" if is_default else shown_path(root))
    return portable


def _is_relative_path(value) -> bool:
    return isinstance(value, str) and "/" in value and "://" not in value and not value.startswith("/")


def _resolve_data_root(root: str) -> str:
    if not root:
        return str(default_data_root())
    if "://" in root or pathlib.Path(root).is_absolute():
        return root
    here = pathlib.Path.cwd() / root
    if here.exists() or CHECKOUT is None or not (CHECKOUT / root).exists():
        return str(here.resolve())
    return str((CHECKOUT / root).resolve())


def resolve_paths(config: ml_collections.ConfigDict) -> None:
    """Relative run paths → under $EMOHD_HOME; data.root → its default or an existing folder (module doc)."""
    fields = flatten(config)
    home = emohd_home()
    for key in HOME_PATH_FIELDS:
        value = fields.get(key)
        if isinstance(value, str) and value:
            parts = [str(home / p) if _is_relative_path(p) else p for p in value.split(",")]
            _set(config, key, ",".join(parts))
    if "data.root" in fields:
        _set(config, "data.root", _resolve_data_root(fields["data.root"]))


def _set(config: ml_collections.ConfigDict, key: str, value) -> None:
    node = config
    *parents, leaf = key.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value


# ---- --help: fields with defaults and the comments beside them ----------------------------------------------

_ASSIGNED = re.compile(r"^    c\.([\w.]+)\s*=.*#\s*(.+)$")
_DICT_ENTRY = re.compile(r'^        "(\w+)"\s*:.*#\s*(.+)$')
_BLOCK_START = re.compile(r"^    (?:c\.([\w.]+)\s*=|return)\s*ml_collections\.ConfigDict\(\{")
_CONFIG_IMPORT = re.compile(r"^from configs import ([\w, ]+)$", re.MULTILINE)


def field_comments(path: pathlib.Path) -> dict[str, str]:
    """Dotted field (or bare key of a returned dict literal) → the comment beside it in a config file.

    Only the top level of a function counts: comments inside a variant's branch speak for that variant.
    """
    comments, block = {}, None
    for line in path.read_text(encoding="utf-8").splitlines():
        if start := _BLOCK_START.match(line):
            block = f"{start.group(1)}." if start.group(1) else ""
        elif block is not None and line.strip().startswith("})"):
            block = None
        if match := _ASSIGNED.match(line):
            comments.setdefault(match.group(1), match.group(2).strip())
        elif block is not None and (match := _DICT_ENTRY.match(line)):
            comments.setdefault(block + match.group(1), match.group(2).strip())
    return comments


def describe_fields(config: ml_collections.ConfigDict, path: pathlib.Path) -> list[tuple[str, str, str]]:
    """(field, default, help) for every field; help from the config file's comments, then its imports'."""
    sources, comments = [path], {}
    while sources:
        source = sources.pop(0)
        for key, text in field_comments(source).items():
            comments.setdefault(key, text)
        for names in _CONFIG_IMPORT.findall(source.read_text(encoding="utf-8")):
            sources += [CONFIG_DIR / f"{name.strip()}.py" for name in names.split(",")]
    rows = []
    for key, value in flatten(config).items():
        parts = key.split(".")
        suffixes = [".".join(parts[i:]) for i in range(len(parts))]
        help_text = next((comments[s] for s in suffixes if s in comments), "")
        rows.append((key, repr(value), help_text))
    return rows


def config_help(command: str, summary: str, argv: list[str]) -> str:
    """What `emohd <command> --help` prints: usage, the packaged configs, and the fields of the one named."""
    lines = [f"usage: emohd {command} --config NAME[:VARIANT] [--config.KEY=VALUE ...] [--debug]", "", summary, "",
             "Configs shipped in the package (or give a path to your own .py):"]
    lines += [f"  {name:<15} {doc}" for name, doc in available_configs().items()]
    spec = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"), None)
    spec = spec or next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if spec is None:
        lines += ["", f"`emohd {command} --config NAME --help` lists that config's fields with their defaults."]
        return "\n".join(lines)
    path, variant = find_config(spec)
    config = load_config(["--config", spec])
    lines += ["", f"Fields of {path.name}{':' + variant if variant else ''} (override with --config.KEY=VALUE):"]
    rows = describe_fields(config, path)
    width = max(len(k) for k, _, _ in rows)
    for key, default, help_text in rows:
        lines.append(f"  {key:<{width}} = {default}" + (f"    # {help_text}" if help_text else ""))
    lines += ["", "Paths: run outputs resolve against $EMOHD_HOME (default: the current directory); data.root '' ="
              " $EMOHD_DATA, else ../shared/data beside a source checkout, else ./data."]
    return "\n".join(lines)

