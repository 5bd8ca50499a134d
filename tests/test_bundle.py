"""Model bundle: what a tower ships, and that loading it rebuilds the same model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs.meld_text import get_config as text_config
from emohd_jax.bundle import build_tower_module, shipped_weights
from emohd_jax.errors import CheckpointLayoutError
from emohd_jax.towers import make_tower


@pytest.fixture(scope="module")
def trained_lora():
    """The LoRA text tower over the installed MiniLM, its adapters moved off their (identity) start as training would."""
    config = text_config("lora")
    task = make_tower(config)
    module = task.build_model(nnx.Rngs(0, dropout=1))
    task.load_pretrained(module)
    adapters = nnx.state(module, nnx.LoRAParam)
    keys = iter(jax.random.split(jax.random.key(1), len(jax.tree.leaves(adapters))))
    nnx.update(module, jax.tree.map(lambda p: p + 0.05 * jax.random.normal(next(keys), p.shape), adapters))
    return config, task, module


def test_lora_tower_ships_adapters_norms_and_head_only(trained_lora):
    config, _, module = trained_lora
    tensors = shipped_weights(config, module)
    assert any(k.endswith("lora_a") for k in tensors) and any(k.startswith("head_out/") for k in tensors)
    assert not any(k.endswith("base_module/kernel") or k.startswith("encoder/embeddings/word") for k in tensors)
    size = sum(v.nbytes for v in tensors.values())
    assert size <= 3e6 and size < 0.05 * sum(np.asarray(v).nbytes for v in jax.tree.leaves(nnx.state(module, nnx.Param)))


def test_shipped_weights_rebuild_the_same_predictions(trained_lora):
    config, task, module = trained_lora
    rebuilt = build_tower_module(config, shipped_weights(config, module), source="test.safetensors")
    ids = jnp.asarray([[101, 2023, 2003, 1037, 3231, 102, 0, 0]], jnp.int32)
    batch = {"input_ids": ids, "token_type_ids": jnp.zeros_like(ids)}
    expected = task.predict_probs(module, batch)
    np.testing.assert_allclose(task.predict_probs(rebuilt, batch), expected, atol=1e-6)
    base = make_tower(config).build_model(nnx.Rngs(0, dropout=1))
    make_tower(config).load_pretrained(base)
    assert np.abs(task.predict_probs(base, batch) - expected).max() > 1e-3  # the adapters did change the output


def test_a_wrong_weight_name_is_refused_with_the_file(trained_lora):
    config, _, module = trained_lora
    tensors = shipped_weights(config, module)
    kernel = tensors.pop("head_out/kernel")
    with pytest.raises(CheckpointLayoutError, match="bad.safetensors.*missing.*head_out/kernel"):
        build_tower_module(config, tensors, source="bad.safetensors")
    tensors.update({"head_out/kernel": kernel, "head_out/kernel_typo": kernel})
    with pytest.raises(CheckpointLayoutError, match="bad.safetensors.*kernel_typo"):
        build_tower_module(config, tensors, source="bad.safetensors")


def test_an_older_bundle_config_is_upgraded_once_and_builds_the_tower_it_describes():
    """The shipped face and voice configs predate model.dtype: filled at load as what they were trained with;
    a field a config already has is kept, and the text config (which has them all) comes back unchanged."""
    import json

    import ml_collections

    from emohd_jax.bundle import DEFAULT_BUNDLE, MANIFEST, upgrade_config

    towers = json.loads((DEFAULT_BUNDLE / MANIFEST).read_text())["towers"]
    visual = ml_collections.ConfigDict(towers["visual"]["config"])
    assert "dtype" not in visual.model
    upgraded = upgrade_config(visual)
    assert upgraded.model.dtype == "float32" and "dtype" not in visual.model  # the stored config is left alone
    assert make_tower(upgraded).config.model.backbone == visual.model.backbone  # one meaning of `config`
    bf16 = ml_collections.ConfigDict(towers["audio"]["config"])
    bf16.model.dtype = "bfloat16"
    assert upgrade_config(bf16).model.dtype == "bfloat16"
    text = ml_collections.ConfigDict(towers["text"]["config"])
    assert upgrade_config(text).to_dict() == text.to_dict()
    old_text = ml_collections.ConfigDict(towers["text"]["config"])
    del old_text.model["lora_rank"]
    assert upgrade_config(old_text).model.lora_rank == 0


def test_the_shipped_voice_tower_is_the_whisper_head_with_its_checked_normalisation(tmp_path):
    """The voice tower ships its head and feature statistics only (the encoder installs from its package); the
    statistics file is the one the manifest's sha256 names, resolved inside the bundle folder."""
    import json
    import shutil

    from emohd_jax.bundle import DEFAULT_BUNDLE, MANIFEST, load_bundle

    manifest = json.loads((DEFAULT_BUNDLE / MANIFEST).read_text())
    audio = manifest["towers"]["audio"]
    assert audio["config"]["task"] == "voice_whisper" and audio["config"]["model"]["normalize"] == "global"
    assert audio["bytes"] < 2e6  # a head, not a 20 M-parameter encoder
    shipped = audio["files"]["model.stats"]
    copy = tmp_path / "bundle"
    shutil.copytree(DEFAULT_BUNDLE, copy)
    tower = load_bundle(copy).towers["audio"]
    assert tower.config.model.stats == str(copy / shipped["name"])
    with np.load(copy / shipped["name"]) as data:
        mean, std = data["mean"], data["std"]
    assert mean.shape == std.shape == (7, 512) and (std > 0).all()  # Whisper base: 6 layers + input, width 512
    np.savez(copy / shipped["name"], mean=mean + 1.0, std=std)
    with pytest.raises(CheckpointLayoutError, match="sha256"):
        load_bundle(copy)


def test_packaged_bases_read_directly_equal_what_load_pretrained_puts_in_the_model():
    """A served tower takes its packaged base as read from the package (`pretrained_params`, no model built): the
    same names, shapes and values as the abstract model that `load_pretrained` fills."""
    from emohd_jax.bundle import load_bundle
    from emohd_jax.towers import ClassifierTask

    bundle = load_bundle()
    assert {m for m, tower in bundle.towers.items() if tower.base} == {"visual", "text"}
    for tower in bundle.towers.values():
        if tower.base:
            generic = ClassifierTask.pretrained_params(tower.task)
            assert tower.base.keys() == generic.keys()
            for name, value in generic.items():
                np.testing.assert_array_equal(np.asarray(tower.base[name], value.dtype), value, err_msg=name)
