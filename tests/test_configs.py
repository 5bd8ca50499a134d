"""Every config variant loads through the CLI's loader, from any folder, and its runs do not collide."""

import os

import pytest

from emohd_jax.cli import _load_config
from tests.data_paths import REPO

TOWER_VARIANTS = ["meld_text.py", "meld_text.py:sample", "meld_text.py:lora", "meld_text.py:context",
                  "meld_text.py:mlm", "meld_text.py:distilbert", "ravdess_audio.py", "ravdess_audio.py:pretrained",
                  "fer_visual.py", "fer_visual.py:mlp", "fer_visual.py:resnet50", "cremad_faces.py"]


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    here = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("elsewhere"))  # config files import `configs.common` from anywhere
    try:
        return {v: _load_config(["--config", str(REPO / "configs" / v)]) for v in TOWER_VARIANTS}
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
