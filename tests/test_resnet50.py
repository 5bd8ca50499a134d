"""Flax ResNet50 (both layouts) against transformers' PyTorch ResNet, through both converters."""

import os
import pickle
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax  # noqa: E402
from flax import nnx  # noqa: E402

from emohd_jax.convert.resnet50 import (UnsafePickleError, load_torchvision, load_vggface2,  # noqa: E402
                                        read_vggface2_pickle)
from emohd_jax.models.resnet50 import (VGGFACE2_MEAN_BGR, ResNet50, ResNetConfig, path_filter,  # noqa: E402
                                       preprocess_faces, top_layer_paths)


def reference_resnet50(caffe_layout: bool, num_classes: int = 10):
    """transformers' ResNet50 with random weights and BN statistics; Caffe layout = VGGFace2 release."""
    torch.manual_seed(0)
    config = transformers.ResNetConfig(embedding_size=64, hidden_sizes=[256, 512, 1024, 2048],
                                       depths=[3, 4, 6, 3], layer_type="bottleneck", hidden_act="relu",
                                       downsample_in_bottleneck=caffe_layout, num_labels=num_classes)
    model = transformers.ResNetForImageClassification(config).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.normal_(1, 0.2)
                module.bias.normal_(0, 0.2)
    if caffe_layout:  # the release's stem pool: no padding, ceil mode
        model.resnet.embedder.pooler = torch.nn.MaxPool2d(kernel_size=3, stride=2, padding=0, ceil_mode=True)
    return model


def torchvision_names(hf_state: dict) -> dict:
    """Rename transformers' ResNet state dict into torchvision's key names."""
    rules = [
        (r"^resnet\.embedder\.embedder\.convolution\.", "conv1."),
        (r"^resnet\.embedder\.embedder\.normalization\.", "bn1."),
        (r"^resnet\.encoder\.stages\.(\d)\.layers\.(\d+)\.shortcut\.convolution\.",
         lambda m: f"layer{int(m[1]) + 1}.{m[2]}.downsample.0."),
        (r"^resnet\.encoder\.stages\.(\d)\.layers\.(\d+)\.shortcut\.normalization\.",
         lambda m: f"layer{int(m[1]) + 1}.{m[2]}.downsample.1."),
        (r"^resnet\.encoder\.stages\.(\d)\.layers\.(\d+)\.layer\.(\d)\.convolution\.",
         lambda m: f"layer{int(m[1]) + 1}.{m[2]}.conv{int(m[3]) + 1}."),
        (r"^resnet\.encoder\.stages\.(\d)\.layers\.(\d+)\.layer\.(\d)\.normalization\.",
         lambda m: f"layer{int(m[1]) + 1}.{m[2]}.bn{int(m[3]) + 1}."),
        (r"^classifier\.1\.", "fc."),
    ]
    renamed = {}
    for name, value in hf_state.items():
        for pattern, replacement in rules:
            name, n = re.subn(pattern, replacement, name)
            if n:
                break
        else:
            raise KeyError(f"no torchvision name for {name}")
        renamed[name] = value
    return renamed


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).normal(0, 1, (2, 64, 64, 3)).astype(np.float32)  # [batch, h, w, rgb]


def flax_logits(model, images):
    return np.asarray(nnx.jit(lambda m, x: m(x))(model, images))  # one compile beats ~150 eager ones


def reference_logits(model, images):
    with torch.no_grad():
        return model(torch.from_numpy(images.transpose(0, 3, 1, 2))).logits.numpy()


def test_torchvision_state_dict_matches_reference(tmp_path, images):
    reference = reference_resnet50(caffe_layout=False)
    path = tmp_path / "resnet50.pth"
    torch.save(torchvision_names(reference.state_dict()), path)
    model = load_torchvision(path)
    assert model.config.variant == "torchvision" and model.config.num_classes == 10
    np.testing.assert_allclose(flax_logits(model, images), reference_logits(reference, images), atol=1e-4, rtol=1e-4)


def test_vggface2_pickle_matches_caffe_layout_reference(tmp_path, images):
    reference = reference_resnet50(caffe_layout=True)
    weights = {name: value.numpy() for name, value in torchvision_names(reference.state_dict()).items()
               if not name.endswith("num_batches_tracked")}  # the Caffe port has no such entries
    path = tmp_path / "resnet50_ft_weight.pkl"
    with open(path, "wb") as f:
        pickle.dump(weights, f)
    model = load_vggface2(path)
    assert model.config.variant == "vggface2"
    np.testing.assert_allclose(flax_logits(model, images), reference_logits(reference, images), atol=1e-4, rtol=1e-4)



class _Exploit:
    def __reduce__(self):
        return os.system, ("echo pwned",)


def test_restricted_unpickler_refuses_code(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"conv1.weight": _Exploit()}))
    with pytest.raises(UnsafePickleError, match=r"evil\.pkl: refusing to load (posix|os|nt)\.system"):
        read_vggface2_pickle(path)


def test_restricted_unpickler_refuses_non_array_values(tmp_path):
    path = tmp_path / "objects.pkl"
    path.write_bytes(pickle.dumps({"conv1.weight": [1.0, 2.0]}))
    with pytest.raises(UnsafePickleError, match="not numeric NumPy arrays"):
        read_vggface2_pickle(path)


def test_features_head_and_top_layers():
    model = nnx.eval_shape(lambda: ResNet50(ResNetConfig(variant="vggface2"), rngs=nnx.Rngs(0)))
    assert model.fc.out_features == 8631
    model.replace_head(7, rngs=nnx.Rngs(1))
    x = jax.ShapeDtypeStruct((1, 224, 224, 3), np.float32)
    assert nnx.eval_shape(lambda m, x: m.features(x), model, x).shape == (1, 2048)
    assert nnx.eval_shape(lambda m, x: m(x), model, x).shape == (1, 7)

    top = top_layer_paths(model, num_conv=9)
    assert len(top) == 18 and top[-2:] == ["stages.3.2.conv3", "stages.3.2.bn3"]
    assert "stages.3.0.downsample_conv" in top and "stages.3.0.conv1" not in top
    trainable = nnx.state(model, nnx.All(nnx.Param, path_filter(top + ["fc"])))
    paths = {".".join(map(str, path)) for path, _ in nnx.to_flat_state(trainable)}
    assert "fc.kernel" in paths and "stages.3.2.bn3.scale" in paths and "stages.3.2.conv3.kernel" in paths
    assert "stages.3.0.conv1.kernel" not in paths and not any(".mean" in p for p in paths)
    assert len(paths) == 9 + 2 * 9 + 2  # conv kernels, BN scale+bias, fc kernel+bias


def test_vggface2_preprocessing_is_bgr_minus_mean():
    rgb = np.zeros((1, 224, 224, 3), np.uint8)
    rgb[..., 0] = 200  # red
    x = np.asarray(preprocess_faces(rgb, "vggface2"))
    np.testing.assert_allclose(x[0, 0, 0], [0 - VGGFACE2_MEAN_BGR[0], 0 - VGGFACE2_MEAN_BGR[1],
                                            200 - VGGFACE2_MEAN_BGR[2]], rtol=1e-6)
