"""XLA:CPU kernel routing: set for CPU processes, left alone when the user or an accelerator decides, in effect."""

import jax
import jax.numpy as jnp
from flax import nnx

from emohd_jax import xla_cpu
from emohd_jax.models.vggish import VGGISH_CONFIGS, VGGishClassifier


def test_route_kernels_adds_the_flags_for_a_cpu_process():
    environ = {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_dump_to=/tmp/x"}
    assert xla_cpu.route_kernels(environ)
    assert environ["XLA_FLAGS"].split() == ["--xla_dump_to=/tmp/x",
                                            "--xla_cpu_experimental_xnn_fusion_type=individual_convolution",
                                            "--xla_cpu_experimental_ynn_fusion_type=individual_dot"]


def test_route_kernels_leaves_user_and_accelerator_choices_alone():
    mine = {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=dot"}
    assert not xla_cpu.route_kernels(mine) and mine["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type=dot"
    for environ in ({"JAX_PLATFORMS": "cuda"}, {"JAX_PLATFORMS": "tpu,cpu"}, {"EMOHD_XLA_CPU_ROUTING": "0"}):
        assert not xla_cpu.route_kernels(environ) and "XLA_FLAGS" not in environ


def test_convolutions_are_compiled_one_by_one_in_this_process():
    """Without the routing XLA:CPU folds a whole VGGish into one YNNPACK graph (10x slower on a few patches);
    with it every convolution stays its own operation in the compiled entry computation."""
    model = VGGishClassifier(VGGISH_CONFIGS["small"], rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    patches = jnp.zeros((4, 96, 64), jnp.float32)
    hlo = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x)).lower(state, patches).compile().as_text()
    entry = hlo[hlo.index("ENTRY"):]
    assert entry.count(" convolution(") == len(model.vggish.conv)
