"""Real bf16: with `model.dtype=bfloat16` the trainer's compiled step runs every convolution and matmul of the
face and voice towers in bf16 (weights stay fp32 in the state), not only their inputs."""

import re

import jax
import numpy as np
import pytest

from emohd_jax.run_config import load_config
from emohd_jax.train import sharding
from emohd_jax.train.trainer import create_train_state, make_task, make_train_step
from tests.train_harness import config_flags

# (config file, overrides, one stored record's model input: name → (shape, dtype))
TOWERS = {
    "mini_xception": ("fer_visual.py", {}, {"face": ((64, 64, 1), np.uint8)}),
    "mini_xception_mlp": ("fer_visual.py:mlp", {"model.init": ""}, {"face": ((64, 64, 1), np.uint8)}),
    "resnet50": ("fer_visual.py:resnet50", {"model.pretrained": False, "model.variant": "torchvision"},
                 {"face": ((224, 224, 3), np.uint8)}),
    "vggish_small": ("ravdess_audio.py", {}, {"patches": ((96, 64), np.float32)}),
}
# `%x = stablehlo.convolution(...) ... : (tensor<…xbf16>, tensor<…xbf16>) -> tensor<…>` and dot_general alike
_OP = re.compile(r"stablehlo\.(convolution|dot_general)\b.*?: \((tensor<[^>]*>), (tensor<[^>]*>)\)")


def lowered_train_step(tower: str, dtype: str) -> str:
    """StableHLO of `make_train_step` (the function `emohd train` jits) for `tower`, on a batch of 2 records."""
    config_file, overrides, fields = TOWERS[tower]
    config = load_config(config_flags(config_file, {"model.dtype": dtype, "mesh.model": 1, **overrides}))
    task = make_task(config)
    mesh = sharding.make_mesh(1, jax.devices()[:1])
    built = {}

    def build():  # traced only: lowering needs the state's shapes, not its values (ResNet50's init is costly)
        model, state, built["shardings"], built["tx"] = create_train_state(task, config, mesh, total_steps=2)
        return model, state

    model, state = jax.eval_shape(build)
    step = make_train_step(task, config, built["tx"], state, built["shardings"], mesh, np.ones(7, np.float32))
    batch = {name: jax.ShapeDtypeStruct((2, *shape), dtype, sharding=sharding.batch_sharding(mesh))
             for name, (shape, dtype) in {**fields, "label": ((), np.int32)}.items()}
    return step.lower(state, batch, model).as_text()


def operand_types(hlo: str) -> dict[str, list[str]]:
    """{'convolution': ['bf16', …], 'dot_general': […]}: the element type of both operands of every such op."""
    found = {"convolution": [], "dot_general": []}
    for op, *operands in _OP.findall(hlo):
        found[op] += [re.search(r"x?([a-z]+\d+)>$", t).group(1) for t in operands]
    return found


@pytest.mark.parametrize("tower", ["mini_xception", "mini_xception_mlp", "resnet50", "vggish_small"])
def test_bf16_train_step_runs_convolutions_and_dots_in_bf16(tower):
    bf16 = operand_types(lowered_train_step(tower, "bfloat16"))
    fp32 = operand_types(lowered_train_step(tower, "float32"))
    assert len(bf16["convolution"]) > 0
    assert len(bf16["dot_general"]) > 0 or tower == "mini_xception"  # its classifier is a conv: no dense layer
    for op in ("convolution", "dot_general"):
        assert set(bf16[op]) <= {"bf16"}, (op, sorted(set(bf16[op])))
        assert set(fp32[op]) <= {"f32"}, (op, sorted(set(fp32[op])))
        assert len(bf16[op]) == len(fp32[op])  # the same program, only the compute type differs


def test_bf16_mini_xception_decides_as_fp32_on_real_fer2013_faces(data_root):
    """The committed FER2013 weights (stored fp32) computed in bf16: the same decisions on real val faces."""
    import jax.numpy as jnp
    from flax import nnx
    from PIL import Image

    from emohd_jax.models import mini_xception

    folder = data_root / "fer2013" / "val"
    paths = [p for cls in sorted(folder.iterdir()) for p in sorted(cls.glob("*.jpg"))[:5]]  # 5 per class
    faces = mini_xception.preprocess_faces(np.stack([np.asarray(Image.open(p).convert("L")) for p in paths]))
    fp32 = mini_xception.load()
    bf16 = nnx.merge(nnx.graphdef(nnx.eval_shape(lambda: mini_xception.MiniXception(dtype=jnp.bfloat16,
                                                                                    rngs=nnx.Rngs(0)))),
                     nnx.state(fp32))

    def probs(model: nnx.Module) -> np.ndarray:
        graphdef, state = nnx.split(model)

        def run(state, faces):
            merged = nnx.merge(graphdef, state)
            return merged.feature_map(faces), jax.nn.softmax(merged(faces))

        feature_map, p = jax.jit(run)(state, faces)
        assert feature_map.dtype == (jnp.bfloat16 if model is bf16 else jnp.float32) and p.dtype == jnp.float32
        return np.asarray(p)

    p32, p16 = probs(fp32), probs(bf16)
    assert len(paths) == 35 and (p32.argmax(-1) == p16.argmax(-1)).mean() >= 0.9  # measured: 34 of 35
    assert np.abs(p32 - p16).max() < 0.1  # bf16 keeps 8 bits of mantissa: close (measured 0.023), not equal
    assert not np.array_equal(p32, p16)   # and it really computed in bf16
