"""Every config variant loads through the CLI's loader, from any folder; its runs do not collide and its splits
hold the canonical classes without sharing an actor."""

import itertools
import json
import os

import pytest

from data_pipeline.prepare import parse_actors, read_source
from emohd_jax.classes import CLASS_INDEX, NUM_CLASSES
from emohd_jax.run_config import load_config
from tests.data_paths import REPO

TOWER_VARIANTS = ["meld_text.py", "meld_text.py:sample", "meld_text.py:lora", "meld_text.py:context",
                  "meld_text.py:mlm", "meld_text.py:distilbert", "ravdess_audio.py", "ravdess_audio.py:pretrained",
                  "fer_visual.py", "fer_visual.py:mlp", "fer_visual.py:resnet50", "cremad_faces.py",
                  "cremad_faces.py:resnet50"]


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    here = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("elsewhere"))  # config files import `configs.common` from anywhere
    try:
        return {v: load_config(["--config", str(REPO / "configs" / v)]) for v in TOWER_VARIANTS}
    finally:
        os.chdir(here)


def test_shared_defaults_with_per_tower_choices(configs):
    assert configs["meld_text.py"].optim.lr == 5e-5 and configs["ravdess_audio.py"].optim.lr == 1e-3
    assert configs["fer_visual.py"].train.select_on == "accuracy" and configs["meld_text.py"].mesh.model == 1
    for variant, c in configs.items():
        assert c.data.eval_split != c.data.train_split and c.data.split in c.data.prepare_splits, variant


def test_runs_and_reports_never_collide(configs):
    workdirs = [c.workdir for c in configs.values()]
    reports = [c.report_dir for c in configs.values() if c.task != "mlm"]  # the masked-LM stage writes no report
    assert len(set(workdirs)) == len(workdirs) and len(set(reports)) == len(reports)
    # DistilBERT's word pieces never land in (or resume from) MiniLM's shards and run.
    assert configs["meld_text.py:distilbert"].data.shards != configs["meld_text.py"].data.shards


def test_actor_splits_are_disjoint(configs):
    for variant, c in configs.items():
        if "actors" not in c.data:
            continue
        actors = {split: set(parse_actors(spec)) for split, spec in c.data.actors.items()}
        assert {c.data.train_split, c.data.eval_split} <= set(actors), variant
        for a, b in itertools.combinations(actors, 2):
            assert not actors[a] & actors[b], f"{variant}: splits {a} and {b} share actors"


def test_splits_read_the_canonical_classes(configs, data_root):
    """Each distinct data block read from the shipped data: train covers the dataset's classes, no speaker leaks."""
    read = set()
    for variant, c in configs.items():
        data = c.data.copy_and_resolve_references()
        data.root = str(REPO / data.root)  # relative to the checkout, as `emohd` is run from there
        key = json.dumps({k: v for k, v in data.to_dict().items() if k != "shards"}, sort_keys=True, default=str)
        if key in read:
            continue
        read.add(key)
        train, _ = read_source(data, data.train_split)
        held, _ = read_source(data, data.eval_split)
        classes = set(range(NUM_CLASSES)) - ({CLASS_INDEX["surprise"]} if data.dataset == "cremad" else set())
        assert {u.label for u in train} == classes, variant  # SPEC §1: CREMA-D has no surprise
        assert {u.label for u in held} <= classes, variant
        if "actors" in data:
            assert not {u.speaker for u in train} & {u.speaker for u in held}, variant


def test_reports_record_paths_relative_to_the_emohd_home(tmp_path, monkeypatch):
    """A committed report holds no machine's folders: a checkpoint under $EMOHD_HOME is written relative to it."""
    from emohd_jax.metrics import classification_metrics
    from emohd_jax.reports import write_report

    monkeypatch.setenv("EMOHD_HOME", str(tmp_path))
    metrics = classification_metrics([0, 1, 2], [0, 1, 1])
    path = write_report(tmp_path / "report", metrics, dataset="x", split="dev",
                        extra={"checkpoint": str(tmp_path / "work" / "runs" / "r"), "elsewhere": "/opt/run", "n_runs": 3})
    written = json.loads(path.read_text())
    assert (written["checkpoint"], written["elsewhere"], written["n_runs"]) == ("work/runs/r", "/opt/run", 3)


def test_a_written_config_holds_no_machine_folder(tmp_path, monkeypatch):
    """A sweep's best_config.py is committed: `portable_paths` undoes `resolve_paths`. The machine's data folder
    becomes "" (the default where it runs), run paths under $EMOHD_HOME relative ones, others stay as given; a
    config loaded from it resolves them back."""
    from emohd_jax.run_config import default_data_root, portable_paths

    monkeypatch.setenv("EMOHD_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("EMOHD_HOME", str(tmp_path))
    (tmp_path / "data").mkdir()
    config = load_config(["--config", "meld_text_head"])
    assert config.data.root == str(default_data_root()) and config.data.shards.startswith(str(tmp_path))
    portable = portable_paths(config)
    assert (portable.data.root, portable.data.shards) == ("", "work/shards/meld_text_features")
    assert not portable.workdir.startswith("/") and config.workdir.startswith(str(tmp_path))  # a copy
    for root, written in ((tmp_path / "mine" / "data", "mine/data"), ("/elsewhere/data", "/elsewhere/data"),
                          ("gs://bucket/data", "gs://bucket/data")):
        config.data.root = str(root)
        assert portable_paths(config).data.root == written
    reloaded = load_config(["--config", "meld_text_head", "--config.data.root=",
                            f"--config.data.shards={portable.data.shards}"])
    assert (reloaded.data.root, reloaded.data.shards) == (str(default_data_root()),
                                                          str(tmp_path / "work/shards/meld_text_features"))
