"""`emohd predict` as a batch tool (issue 18): names that fit any filesystem, resume keyed on the input's content,
the bundle and the options, `--out` checked before any work, `run.json` and `failures.json` on every run, paths
stored as given or by name, the bundle loaded only when an input needs it, the compilation cache.

Real CREMA-D clips, voice only (no face detection, no speech recognition): the bundle loads once for the module,
each prediction then costs about a second.
"""

import dataclasses
import json
import os
import pathlib
import shutil

import jax
import jax.numpy as jnp
import pytest
from jax.experimental.compilation_cache import compilation_cache

import emohd_jax
from emohd_jax import cli
from emohd_jax.bundle import load_bundle
from emohd_jax.errors import EXIT_NONE, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, UsageError
from emohd_jax.serve import predictor as predictor_module
from emohd_jax.serve.batch import default_cache_dir, predict, use_compilation_cache
from emohd_jax.serve.outputs import fitting_stem

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples" / "cremad"
SAD, ANGRY = EXAMPLES / "1002_DFA_SAD_XX.mp3", EXAMPLES / "1002_DFA_ANG_XX.mp3"
VOICE = {"modalities": "voice", "progress": False}
CACHE_OPTIONS = ("jax_compilation_cache_dir", "jax_enable_compilation_cache",
                 "jax_persistent_cache_min_compile_time_secs", "jax_persistent_cache_min_entry_size_bytes")


@pytest.fixture(scope="module")
def bundle():
    return load_bundle()


@pytest.fixture(autouse=True)
def _own_cache(monkeypatch, tmp_path):
    """The user cache folder under tmp_path, and JAX's cache settings as they were after each test."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    before = {name: getattr(jax.config, name) for name in CACHE_OPTIONS}
    yield
    for name, value in before.items():
        jax.config.update(name, value)
    compilation_cache.reset_cache()


@pytest.fixture
def no_loading(monkeypatch):
    """Fails whatever loads a bundle."""
    def refuse(*args, **kwargs):
        raise AssertionError("the bundle was loaded")

    monkeypatch.setattr(predictor_module, "load_bundle", refuse)


@pytest.fixture
def loads(monkeypatch, bundle) -> list:
    """The CLI gets the module's bundle instead of building another; the list records each load."""
    calls = []

    def load(path=None):
        calls.append(path)
        return bundle

    monkeypatch.setattr(predictor_module, "load_bundle", load)
    return calls


def _emohd(argv: list[str], capsys) -> tuple[int, str, str]:
    """`emohd ARGV` in this process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    captured = capsys.readouterr()
    return exited.value.code, captured.out, captured.err


def _copy(source: pathlib.Path, target: pathlib.Path) -> pathlib.Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, target)
    return target


def test_a_long_name_fits_and_an_unwritable_result_fails_only_its_input(bundle, tmp_path):
    long = _copy(SAD, tmp_path / "clips" / ("a very long take name " * 11 + ".mp3"))  # 242-character stem
    blocked = _copy(ANGRY, tmp_path / "clips" / "blocked.mp3")
    out = tmp_path / "out"
    (out / "blocked.csv").mkdir(parents=True)  # a folder where its CSV goes: writing it fails
    run = predict([tmp_path / "clips"], bundle, out_dir=out, **VOICE)
    assert run.exit_code == EXIT_PARTIAL
    ((failed, reason),) = run.failures
    assert failed == str(blocked) and "could not be written" in reason and "blocked.csv" in reason
    (result,) = run.results
    assert result["input"] == str(long) and result["utterances"][0]["modalities"]["audio"]["present"]
    stem = fitting_stem(long.stem)
    assert len(stem.encode()) <= 100 and stem.startswith("a very long take name")
    assert json.loads((out / f"{stem}.json").read_text())["input"] == str(long)
    assert all(len(p.name.encode()) <= 143 for p in out.iterdir())
    again = predict([tmp_path / "clips"], bundle, out_dir=out, **VOICE)  # the same short name: found, not redone
    assert again.resumed == [str(long)] and [f for f, _ in again.failures] == [str(blocked)]


def test_rerun_recomputes_a_changed_input_option_or_bundle_and_reads_back_the_rest(bundle, tmp_path):
    clip, out = _copy(SAD, tmp_path / "a" / "clip.mp3"), tmp_path / "out"
    first = predict([clip], bundle, out_dir=out, **VOICE)
    assert not first.resumed and first.results[0]["duration_s"] == pytest.approx(2.4, abs=0.1)
    same = predict([clip], bundle, out_dir=out, **VOICE)
    assert same.resumed == [str(clip)] and same.results == first.results

    shutil.copy(ANGRY, clip)  # another recording under the same path
    changed = predict([clip], bundle, out_dir=out, **VOICE)
    assert not changed.resumed and changed.results[0]["duration_s"] == pytest.approx(2.6, abs=0.1)
    assert json.loads((out / "clip.json").read_text()) == changed.results[0]  # its own result, redone in place
    assert sorted(p.name for p in out.glob("clip*.json")) == ["clip.json"]

    option = predict([clip], bundle, out_dir=out, max_utterance_s=5.0, **VOICE)
    assert not option.resumed and option.results[0]["computed_with"]["options"]["max_utterance_s"] == 5.0
    assert predict([clip], bundle, out_dir=out, max_utterance_s=5.0, **VOICE).resumed == [str(clip)]

    other_bundle = dataclasses.replace(bundle, manifest={**bundle.manifest, "note": "exported again"})
    assert not predict([clip], other_bundle, out_dir=out, max_utterance_s=5.0, **VOICE).resumed


def test_a_same_named_input_from_another_folder_never_replaces_an_earlier_result(bundle, tmp_path):
    a, b = _copy(SAD, tmp_path / "a" / "clip.mp3"), _copy(ANGRY, tmp_path / "b" / "clip.mp3")
    out = tmp_path / "out"
    predict([a], bundle, out_dir=out, **VOICE)
    written = (out / "clip.json").read_bytes()
    run = predict([b], bundle, out_dir=out, **VOICE)  # a later run, without overwrite
    assert run.exit_code == EXIT_OK and not run.resumed
    assert (out / "clip.json").read_bytes() == written
    assert json.loads((out / "clip-2.json").read_text())["input"] == str(b)
    both = predict([tmp_path / "a", tmp_path / "b"], bundle, out_dir=out, **VOICE)
    assert both.resumed == [str(a), str(b)]
    redo = predict([b], bundle, out_dir=out, overwrite=True, **VOICE)  # overwrite redoes b's own result only
    assert not redo.resumed and (out / "clip.json").read_bytes() == written


def test_a_bad_out_is_a_usage_error_before_any_work(tmp_path, capsys, no_loading):
    not_a_folder = tmp_path / "results.json"
    not_a_folder.write_text("{}")
    code, out, err = _emohd(["predict", str(SAD), "--out", str(not_a_folder)], capsys)
    assert code == EXIT_USAGE and f"{not_a_folder}: the output folder (--out) is an existing file" in err
    assert not_a_folder.read_text() == "{}"
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o555)
    if os.geteuid() == 0:  # root writes through file modes: a folder the kernel refuses to anyone
        read_only = pathlib.Path("/sys")
    code, out, err = _emohd(["predict", str(SAD), "--out", str(read_only)], capsys)
    assert code == EXIT_USAGE and f"{read_only}: the output folder (--out) cannot be written to" in err
    with pytest.raises(UsageError, match="existing file"):
        predict([SAD], out_dir=not_a_folder)


def test_quiet_still_prints_failures_and_every_run_writes_run_and_failures_json(bundle, tmp_path, capsys, loads):
    good = _copy(SAD, tmp_path / "in" / "good.mp3")
    bad = tmp_path / "in" / "bad.mp3"
    bad.write_bytes(b"<html>404 not found</html>")  # a failed download
    out = tmp_path / "out"
    argv = ["predict", str(tmp_path / "in"), "--out", str(out), "--modalities", "voice", "--quiet"]
    code, stdout, stderr = _emohd(argv, capsys)
    assert code == EXIT_PARTIAL and stdout == ""
    (failed,) = json.loads((out / "failures.json").read_text())
    assert failed["input"] == str(bad) and f"emohd predict: {bad}: {failed['reason']}" in stderr
    run = json.loads((out / "run.json").read_text())
    assert run["complete"] and run["inputs"] == [str(bad), str(good)] and run["done"] == [str(good)]
    assert run["skipped_as_finished"] == [] and run["failed"] == [failed]
    assert run["options"]["modalities"] == ["audio"] and run["options"]["max_utterance_s"] == 8.0
    assert run["versions"]["jax"] == jax.__version__ and len(run["bundle_digest"]) == 64
    assert run["bundle_digest"] == json.loads((out / "good.json").read_text())["computed_with"]["bundle"]

    code, stdout, stderr = _emohd(argv, capsys)  # the rerun tries the failed input again, reads the good one back
    run = json.loads((out / "run.json").read_text())
    assert code == EXIT_PARTIAL and run["skipped_as_finished"] == [str(good)] and run["done"] == []
    assert [f["input"] for f in run["failed"]] == [str(bad)] and str(bad) in stderr


def test_the_api_takes_one_path_as_a_string_and_refuses_other_types(bundle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _copy(SAD, tmp_path / "clip.mp3")
    _copy(ANGRY, tmp_path / "other.mp3")  # "." walked character by character would predict this too
    assert emohd_jax.predict is predict
    run = emohd_jax.predict("clip.mp3", bundle, **VOICE)
    assert run.exit_code == EXIT_OK and [r["input"] for r in run.results] == ["clip.mp3"]
    assert [r["input"] for r in predict(pathlib.Path("clip.mp3"), bundle, **VOICE).results] == ["clip.mp3"]
    for wrong in (42, b"clip.mp3", {"clip.mp3": 1}, [pathlib.Path("clip.mp3"), 42]):
        with pytest.raises(TypeError, match="predict"):
            predict(wrong, bundle, **VOICE)


def test_paths_are_stored_as_given_or_by_name_only(bundle, tmp_path, monkeypatch, capsys, loads):
    monkeypatch.chdir(tmp_path)
    _copy(SAD, tmp_path / "sub" / "clip.mp3")
    given = predict("sub/clip.mp3", bundle, out_dir="given", **VOICE)
    assert given.results[0]["input"] == "sub/clip.mp3"
    code, _, _ = _emohd(["predict", "sub/clip.mp3", "missing.mp3", "--out", "named", "--modalities", "voice",
                         "--store-paths", "name", "--quiet"], capsys)
    assert code == EXIT_PARTIAL
    assert json.loads((tmp_path / "named" / "clip.json").read_text())["input"] == "clip.mp3"
    for written in (tmp_path / "named").glob("*.json"):
        assert "sub/" not in written.read_text() and str(tmp_path) not in written.read_text(), written.name
    code, _, err = _emohd(["predict", "sub/clip.mp3", "--store-paths", "full"], capsys)
    assert code == EXIT_USAGE and "--store-paths" in err
    with pytest.raises(UsageError, match="store_paths"):
        predict("sub/clip.mp3", bundle, store_paths="full", **VOICE)


def test_nothing_to_do_loads_no_model(bundle, tmp_path, capsys, no_loading):
    clip, out = _copy(SAD, tmp_path / "clip.mp3"), tmp_path / "out"
    predict([clip], bundle, out_dir=out, **VOICE)  # the bundle given: nothing loaded
    code, stdout, _ = _emohd(["predict", str(clip), "--out", str(out), "--modalities", "voice"], capsys)
    assert code == EXIT_OK and "1 predicted (1 done by an earlier run" in stdout
    assert json.loads((out / "run.json").read_text())["skipped_as_finished"] == [str(clip)]
    code, _, stderr = _emohd(["predict", str(tmp_path / "absent.mp4"), "--out", str(out), "--quiet"], capsys)
    assert code == EXIT_NONE and "absent.mp4: no such file" in stderr
    code, _, stderr = _emohd(["predict", str(clip), "--bundle", str(tmp_path), "--out", str(out)], capsys)
    assert code == EXIT_USAGE and "not a model bundle" in stderr


def test_compiled_programs_go_to_the_user_cache_folder_unless_turned_off(bundle, tmp_path, capsys, loads):
    assert default_cache_dir() == tmp_path / "xdg" / "emohd" / "jax"
    folder = use_compilation_cache(True)
    assert folder == default_cache_dir() and jax.config.jax_compilation_cache_dir == str(folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # this small program compiles fast
    jax.jit(lambda x: jnp.tanh(x) @ x.T)(jnp.ones((19, 23))).block_until_ready()
    assert any(folder.iterdir())
    assert use_compilation_cache(False) is None and not jax.config.jax_enable_compilation_cache

    clip = _copy(SAD, tmp_path / "clip.mp3")
    argv = ["predict", str(clip), "--modalities", "voice", "--quiet"]
    assert _emohd([*argv, "--out", str(tmp_path / "cached")], capsys)[0] == EXIT_OK
    assert jax.config.jax_enable_compilation_cache and jax.config.jax_compilation_cache_dir == str(folder)
    assert _emohd([*argv, "--out", str(tmp_path / "uncached"), "--no-cache"], capsys)[0] == EXIT_OK
    assert not jax.config.jax_enable_compilation_cache
