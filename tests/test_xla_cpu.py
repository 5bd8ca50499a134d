"""The CPU compiler options of forward-only tower functions: in effect, and computing what plain jax.jit does."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from emohd_jax.models.vggish import VGGISH_CONFIGS, VGGishClassifier
from emohd_jax.xla_cpu import inference_jit


def _entry(jitted, *args) -> str:
    hlo = jitted.lower(*args).compile().as_text()
    return hlo[hlo.index("ENTRY"):]


def test_inference_jit_compiles_convolutions_one_by_one_and_agrees_with_jit():
    """Plain jax.jit folds the whole VGGish into one YNNPACK graph on CPU (10x slower on a few patches);
    inference_jit keeps every convolution its own operation, with the same probabilities."""
    model = VGGishClassifier(VGGISH_CONFIGS["small"], rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    forward = lambda s, x: jax.nn.softmax(nnx.merge(graphdef, s)(x))  # noqa: E731
    patches = jax.random.normal(jax.random.key(0), (4, 96, 64)) - 2.0
    routed, plain = inference_jit(forward), jax.jit(forward)
    assert _entry(routed, state, patches).count(" convolution(") == len(model.vggish.conv)
    assert _entry(plain, state, patches).count(" convolution(") < len(model.vggish.conv)  # the rest in a fusion
    np.testing.assert_allclose(routed(state, patches), plain(state, patches), atol=1e-6)


def test_inference_jit_passes_jit_arguments_through():
    double = inference_jit(lambda x, n: x * n, static_argnums=1, donate_argnums=0)
    assert float(double(jnp.ones(()), 3)) == 3.0
