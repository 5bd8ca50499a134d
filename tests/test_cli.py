"""The command line as a newcomer meets it: --help everywhere, one error line per mistake, configs by name,
paths that work from any folder (an installed package run outside the repository)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from emohd_jax import cli, run_config
from emohd_jax.errors import EXIT_USAGE, UsageError

REPO = pathlib.Path(__file__).resolve().parents[1]
EMOHD = pathlib.Path(sys.executable).parent / "emohd"


@pytest.mark.parametrize("command", [*cli.CONFIG_COMMANDS, *cli.PLAIN_COMMANDS, *cli.MODULE_COMMANDS])
def test_every_command_has_help(command, capsys):
    try:
        code = cli.dispatch([command, "--help"])
    except SystemExit as exit_:  # argparse's --help
        code = exit_.code
    out = capsys.readouterr().out
    assert code == 0 and out.startswith(f"usage: emohd {command}")


@pytest.mark.parametrize("command,kind", [(c, k) for c, (_, kinds) in cli.MODULE_COMMANDS.items() for k in kinds])
def test_every_kind_has_help_under_its_own_name(command, kind, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.dispatch([command, kind, "--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: emohd {command} {kind}")


def test_overview_lists_every_command(capsys):
    assert cli.dispatch(["--help"]) == 0
    out = capsys.readouterr().out
    for command in (*cli.CONFIG_COMMANDS, *cli.PLAIN_COMMANDS, *cli.MODULE_COMMANDS):
        assert f"\n  {command} " in out


def test_config_help_lists_fields_with_defaults_and_comments(capsys):
    assert cli.dispatch(["train", "--config", "meld_text:lora", "--help"]) == 0
    out = capsys.readouterr().out
    assert "  train.batch_size       = 32" in out
    assert "model.lora_rank        = 8    # > 0: LoRA adapters" in out  # the variant's value, the field's help
    assert "optim.lr               = 0.001" in out and "gentle" not in out  # no other config's comment


def _error_line(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("emohd: error: ")  # one line, no traceback
    return err.strip()


@pytest.mark.parametrize("argv,expected", [
    (["train", "--config", "nope"], "emohd: error: nope: no such config (give a config file's path, or one of"),
    (["train", "--config", "configs/nope.py"], "configs/nope.py: no such config"),
    (["train", "--config", "meld_text", "--config.train.batchsize=3"],
     "--config.train.batchsize: meld_text.py has no such field (did you mean --config.train.batch_size?)"),
    (["train", "--config", "meld_text", "--config.train.batch_size=abc"], "--config.train.batch_size=abc: not a valid int"),
    (["train", "--config", "meld_text", "--help-me"], "--help-me: unknown flag"),
    (["train", "--config", "meld_text:bad"], "meld_text.py:bad: unknown variant 'bad'"),
    (["train"], "--config: is required"),
    (["convert"], "emohd convert: which kind? (one of: text, vggish, mini-xception, mtcnn)"),
    (["bench", "gpu"], "emohd bench gpu: unknown kind"),
    (["frob"], "frob: unknown command"),
    (["predict"], "emohd predict: the following arguments are required: paths"),
    (["predict", "clip.mp4", "--modalities", "face,speech"], "modality 'speech': unknown modality (use face, voice"),
    (["asr", "eval", "--bogus"], "emohd asr eval: the following arguments are required: --root, --out"),
])
def test_each_mistake_is_one_line_with_exit_code_2(argv, expected, capsys):
    assert expected in _error_line(argv, capsys)


def test_debug_keeps_the_traceback():
    with pytest.raises(UsageError, match="no such config"):
        cli.main(["train", "--config", "nope", "--debug"])


def test_config_by_name_equals_config_by_path():
    by_name = run_config.load_config(["--config", "ravdess_audio:pretrained"])
    by_path = run_config.load_config(["--config", str(REPO / "configs" / "ravdess_audio.py") + ":pretrained"])
    assert by_name.to_dict() == by_path.to_dict()


def test_paths_resolve_against_documented_roots(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EMOHD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("EMOHD_DATA", str(tmp_path / "data"))
    config = run_config.load_config(["--config", "meld_text", "--config.checkpoint=runs/a,runs/b"])
    assert config.workdir == str(tmp_path / "home" / "work" / "runs" / "meld_text")
    assert config.data.shards == str(tmp_path / "home" / "work" / "shards" / "meld_text")
    assert config.checkpoint == f"{tmp_path / 'home' / 'runs' / 'a'},{tmp_path / 'home' / 'runs' / 'b'}"
    assert config.data.root == str(tmp_path / "data") and config.model.init == "minilm"  # a name stays a name
    remote = run_config.load_config(["--config", "meld_text", "--config.workdir=gs://bucket/run"])
    assert remote.workdir == "gs://bucket/run"
    # The sample's data root is the checkout's examples/ when the current folder has none.
    sample = run_config.load_config(["--config", "meld_text:sample"])
    assert sample.data.root == str(REPO / "examples")


def test_config_commands_run_from_outside_the_repository(tmp_path):
    """prepare → train → eval → export → system-eval, by config name, from a folder that is not the clone."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMOHD_")}
    env.update(JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1")
    run = "--config.train.num_steps=3 --config.train.eval_every=3 --config.train.checkpoint_every=3".split()

    def emohd(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([str(EMOHD), *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        return done

    emohd("prepare", "--config", "meld_text:sample")
    emohd("train", "--config", "meld_text:sample", *run)
    emohd("eval", "--config", "meld_text:sample", "--config.data.split=dev")
    emohd("export", "--config", "bundle", "--config.towers.visual=", "--config.towers.audio=",
          "--config.towers.text=meld_text:sample", "--config.out=bundle", "--config.rule=sum")
    emohd("system-eval", "--config", "system_eval:meld_text", "--config.bundle=bundle",
          f"--config.data.root={REPO / 'examples'}", "--config.report_dir=reports/system")
    assert (tmp_path / "work" / "shards" / "meld_text_sample" / "manifest.json").is_file()
    evaluation = json.loads((tmp_path / "reports" / "meld_text_sample" / "metrics.json").read_text())
    text_column = json.loads((tmp_path / "reports" / "system" / "system.json").read_text())["subtitles"]["raw"]["sum"]["T"]
    assert json.loads((tmp_path / "bundle" / "bundle.json").read_text())["modalities"] == ["text"]
    # The exported text tower, run through the whole system on the same dev set, scores what its own eval did.
    assert (text_column["n"], text_column["weighted_f1"]) == (evaluation["n"], pytest.approx(evaluation["weighted_f1"]))


def test_config_mistakes_in_the_data_are_one_line_too(tmp_path, capsys):
    line = _error_line(["prepare", "--config", "ravdess_audio", "--config.data.actors.train=abc"], capsys)
    assert line.startswith("emohd: error: actors 'abc': 'abc' is not an actor number or range (write e.g. 1-16")
    line = _error_line(["prepare", "--config", "ravdess_audio", f"--config.data.root={tmp_path}"], capsys)
    assert "Actor_01: no such RAVDESS actor folder" in line
