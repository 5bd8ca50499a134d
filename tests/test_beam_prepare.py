"""`emohd prepare --runner direct`: the extraction as an Apache Beam pipeline (2 worker processes) writes the same
records as the single-process prepare, on real RAVDESS clips (actors 1–4, log-mel patches of the voice tower) and
on MELD sample dialogues (word pieces with each turn's dialogue context)."""

import numpy as np
import pytest

pytest.importorskip("apache_beam", reason="prepare on Beam needs the [beam] extra")

from data_pipeline import beam_prepare, shards  # noqa: E402
from data_pipeline.prepare import prepare, prepare_from_config  # noqa: E402
from data_pipeline.sources.meld import read_meld  # noqa: E402
from emohd_jax.cli import _extractor, dispatch  # noqa: E402
from emohd_jax.convert.hf_text import minilm_dir  # noqa: E402
from emohd_jax.errors import UsageError  # noqa: E402
from emohd_jax.run_config import load_config  # noqa: E402
from emohd_jax.text.extract import TextExtractor  # noqa: E402


@pytest.fixture(scope="module")
def config(data_root):
    # Two splits, so the pipeline carries several transforms; 208 clips (calm dropped).
    return load_config(["--config", "ravdess_audio", f"--config.data.root={data_root}",
                        "--config.data.actors.train=1-2", "--config.data.actors.dev=3-4"])


@pytest.fixture(scope="module")
def prepared(config, tmp_path_factory):
    single_dir, beam_dir = tmp_path_factory.mktemp("single"), tmp_path_factory.mktemp("beam")
    single = prepare_from_config(config, _extractor(config), out_dir=str(single_dir))
    on_beam = prepare_from_config(config, _extractor(config), out_dir=str(beam_dir), runner="direct",
                                  beam_options=["--direct_num_workers=2"])
    return (single_dir, single), (beam_dir, on_beam)


def _records(out, split) -> list[dict]:
    """Every record of a split in shard order, as stored (each field's dtype, shape and bytes)."""
    source = shards.open_split(out, split)
    return [{name: (np.asarray(v).dtype.str, np.asarray(v).shape, np.asarray(v).tobytes())
             for name, v in source[i].items()} for i in range(len(source))]


def test_beam_writes_the_records_of_the_single_process_prepare(prepared):
    (single_dir, single), (beam_dir, on_beam) = prepared
    assert on_beam == single  # options, counts per class, skips
    assert single["counts"]["train"]["utterances"] == single["counts"]["dev"]["utterances"] == 104
    for split in ("train", "dev"):
        expected, got = _records(single_dir, split), _records(beam_dir, split)
        assert len(got) == single["counts"][split]["records"] > 200
        assert {r["uid"][2] for r in got} == {r["uid"][2] for r in expected}  # the same clips…
        assert got == expected  # …and every record (uid, label, patch, patch index) byte for byte, in the same order


def test_each_split_keeps_its_own_dialogue_context(repo_root, tmp_path):
    """MELD text: the extractor's state is per split (`set_dialogues`); a Beam split must not see the last split's."""
    train, _ = read_meld(repo_root / "examples", "train")
    dev, _ = read_meld(repo_root / "examples", "dev")
    splits = {"train": train[:24], "dev": dev[:12]}
    single = prepare(splits, TextExtractor(minilm_dir(), max_length=64, context_turns=2), tmp_path / "single")
    on_beam = prepare(splits, TextExtractor(minilm_dir(), max_length=64, context_turns=2), tmp_path / "beam",
                      runner="direct", beam_options=["--direct_num_workers=2"])
    assert on_beam == single
    for split in splits:
        records = _records(tmp_path / "beam", split)
        assert records == _records(tmp_path / "single", split)
        with_context = [r for r in records if np.frombuffer(r["token_type_ids"][2], np.int32).any()]
        assert len(with_context) > len(records) // 2  # most turns carry their dialogue's earlier turns


def test_emohd_prepare_runner_flag_reaches_beam(data_root, tmp_path):
    out = tmp_path / "shards"
    with pytest.raises(UsageError, match="--runner: unknown runner 'sparkle' .one of: direct, dataflow, flink, spark"):
        dispatch(["prepare", "--config", "ravdess_audio", "--runner", "sparkle", f"--config.data.root={data_root}",
                  "--beam-options=--direct_num_workers=2", f"--config.data.shards={out}"])
    assert not out.exists()  # refused before anything is written
    assert beam_prepare.pipeline_options("direct", ["--direct_num_workers=2"]).get_all_options()["direct_num_workers"] == 2
