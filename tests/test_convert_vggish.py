"""Both VGGish checkpoint layouts load into the Flax model and reproduce torchvggish's outputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from emohd_jax.convert import vggish as convert
from emohd_jax.models.vggish import VGGish, VGGishClassifier, VGGishConfig, load_vggish_weights

torch = pytest.importorskip("torch")
torchvggish = pytest.importorskip("torchvggish")


@pytest.fixture(scope="module")
def torch_vggish():
    """torchvggish's VGG with random He-scaled weights (its default init shrinks activations to ~0
    over nine ReLU layers, which would make any comparison vacuous); no download, no postprocessing."""
    torch.manual_seed(0)
    model = torchvggish.torchvggish._vgg(postprocess=False).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.normal_(0.0, (2.0 / fan_in) ** 0.5)
                module.bias.normal_(0.0, 0.05)
    return model


@pytest.fixture(scope="module")
def patches():
    """Log-mel-like input: [batch, 96, 64] around the VGGish range (log(0.01) ≈ -4.6 up to ~2)."""
    rng = np.random.default_rng(0)
    return (rng.standard_normal((3, 96, 64)) - 2.0).astype(np.float32)


@pytest.fixture(scope="module")
def converted(torch_vggish) -> dict[str, np.ndarray]:
    return convert.from_torch_state_dict(torch_vggish.state_dict())


def _abstract(build):
    """The model's structure without initialising ~72 M random parameters (30 s on a busy CPU):
    every weight is filled by the checkpoint anyway."""
    return nnx.eval_shape(build)


def _torch_forward(model, patches: np.ndarray, *, upto: int | None = None) -> np.ndarray:
    with torch.no_grad():
        x = model.features(torch.from_numpy(patches)[:, None])  # NCHW, as torchvggish feeds it
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # the port's NHWC flatten
        x = model.embeddings[:upto](x) if upto is not None else model.embeddings(x)
    return x.numpy()


def test_torch_state_dict_reproduces_torchvggish(torch_vggish, patches):
    """float64 end to end, so the comparison checks the layout mapping, not float32 summation order."""
    with torch.no_grad():
        reference = torch_vggish.double()(torch.from_numpy(patches).double()[:, None]).numpy()  # [batch, 128]
        torch_vggish.float()
    assert np.abs(reference).max() > 0.1 and (reference > 0).mean() > 0.2  # a live, non-trivial output
    with jax.enable_x64(True):
        model = _abstract(lambda: VGGish(dtype=jnp.float64, param_dtype=jnp.float64, rngs=nnx.Rngs(0)))
        load_vggish_weights(model, convert.from_torch_state_dict(torch_vggish.state_dict(), dtype=np.float64))
        ours = np.asarray(model(patches.astype(np.float64)))
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-5)


def test_torch_state_dict_float32_agrees_within_summation_noise(torch_vggish, converted, patches):
    """In float32 the two frameworks sum 12,288-long dot products in different orders: ~1e-5 relative."""
    with torch.no_grad():
        reference = torch_vggish(torch.from_numpy(patches)[:, None]).numpy()
    model = _abstract(lambda: VGGish(rngs=nnx.Rngs(0)))
    load_vggish_weights(model, converted)
    np.testing.assert_allclose(np.asarray(model(patches)), reference, rtol=0, atol=2e-4)


def test_classifier_takes_the_trunk_and_replaces_the_embedding(torch_vggish, converted, patches):
    model = _abstract(lambda: VGGishClassifier(VGGishConfig(), rngs=nnx.Rngs(0)))
    load_vggish_weights(model, converted)
    assert model.vggish.embedding is None and model.head.kernel.shape == (4096, 7)
    fc2_out = _torch_forward(torch_vggish, patches, upto=-2)  # [batch, 4096] after fc2's ReLU
    np.testing.assert_allclose(np.asarray(model.vggish(patches)), fc2_out, rtol=0, atol=2e-4)


def _tf_checkpoint_from_torch(state_dict) -> dict[str, np.ndarray]:
    """The TF layout written by hand from the same weights: HWIO conv kernels, [in, out] dense kernels."""
    sd = {k: v.numpy() for k, v in state_dict.items()}
    conv_scopes = ["conv1", "conv2", "conv3/conv3_1", "conv3/conv3_2", "conv4/conv4_1", "conv4/conv4_2"]
    variables = {"global_step": np.array(1000, np.int64)}  # extra variables a real checkpoint holds
    for scope, layer in zip(conv_scopes, (0, 3, 6, 8, 11, 13)):
        variables[f"vggish/{scope}/weights"] = sd[f"features.{layer}.weight"].transpose(2, 3, 1, 0)
        variables[f"vggish/{scope}/biases"] = sd[f"features.{layer}.bias"]
        variables[f"vggish/{scope}/weights/Adam"] = np.zeros(1, np.float32)
    for scope, layer in zip(["fc1/fc1_1", "fc1/fc1_2", "fc2"], (0, 2, 4)):
        variables[f"vggish/{scope}/weights"] = sd[f"embeddings.{layer}.weight"].T
        variables[f"vggish/{scope}/biases"] = sd[f"embeddings.{layer}.bias"]
    return variables


def test_tf_checkpoint_names_give_the_same_model(torch_vggish, converted, patches, tmp_path):
    path = tmp_path / "vggish_model.npz"
    np.savez(path, **_tf_checkpoint_from_torch(torch_vggish.state_dict()))
    from_tf = convert.from_tf_variables(convert.read_tf_checkpoint(path))
    assert from_tf.keys() == converted.keys()
    for name in from_tf:
        np.testing.assert_array_equal(from_tf[name], converted[name], err_msg=name)
    tf_model, torch_model = _abstract(lambda: VGGish(rngs=nnx.Rngs(1))), _abstract(lambda: VGGish(rngs=nnx.Rngs(2)))
    load_vggish_weights(tf_model, from_tf)
    load_vggish_weights(torch_model, converted)
    np.testing.assert_array_equal(np.asarray(tf_model(patches)), np.asarray(torch_model(patches)))


def test_pth_file_round_trip(torch_vggish, tmp_path):
    path = tmp_path / "vggish.pth"
    torch.save(torch_vggish.state_dict(), path)
    tensors = convert.from_torch_state_dict(convert.read_torch_checkpoint(path))
    np.testing.assert_array_equal(tensors["conv.5.kernel"],
                                  torch_vggish.features[13].weight.detach().numpy().transpose(2, 3, 1, 0))


def test_tf_scope_names_follow_the_published_layout():
    assert convert.tf_variable_scopes() == {
        "conv.0": "vggish/conv1", "conv.1": "vggish/conv2",
        "conv.2": "vggish/conv3/conv3_1", "conv.3": "vggish/conv3/conv3_2",
        "conv.4": "vggish/conv4/conv4_1", "conv.5": "vggish/conv4/conv4_2",
        "fc.0": "vggish/fc1/fc1_1", "fc.1": "vggish/fc1/fc1_2", "embedding": "vggish/fc2"}


def test_weights_for_another_config_are_refused(converted):
    small = VGGish(VGGishConfig(conv_blocks=((8,), (8,), (8, 8), (8, 8)), fc_widths=(16, 16)), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="vggish.safetensors: conv.0.kernel: shape"):
        load_vggish_weights(small, converted, source="vggish.safetensors")
    with pytest.raises(KeyError, match="missing.*vggish/conv1/weights"):
        convert.from_tf_variables({"vggish/conv2/weights": np.zeros(1)})
