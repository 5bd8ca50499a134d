"""Stage 2 of the visual tower (SPEC §2.4): a frozen face backbone's features → an MLP classifier.

The backbone stays inside the model (no separate feature shards to keep in sync with it): its
BatchNorm always uses running statistics and no gradient flows into it, so only the head learns
(`config.optim.trainable = ("^head/",)` keeps the optimiser from touching the backbone too).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from emohd_jax.classes import NUM_CLASSES


class MLPHead(nnx.Module):
    """features: [batch, d] → logits: [batch, classes]: standardised, one hidden ReLU layer with dropout.

    Backbone features are not normalised (residual sums, positions of a map differ in scale), so a
    BatchNorm standardises them first; on FER2013 that is worth ~0.8 points over raw features.
    """

    def __init__(self, in_features: int, hidden: int, dropout: float, num_classes: int = NUM_CLASSES, *,
                 dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        layer = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm = nnx.BatchNorm(in_features, **layer)
        self.hidden = nnx.Linear(in_features, hidden, **layer)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.out = nnx.Linear(hidden, num_classes, **layer)

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        x = self.norm(x, use_running_average=not train)
        # fp32 logits, so the loss and the softmax are stable under bf16 compute
        return self.out(self.dropout(nnx.relu(self.hidden(x)), deterministic=not train)).astype(jnp.float32)


class FrozenBackboneMLP(nnx.Module):
    """faces: [batch, h, w, c] normalised for `backbone` → logits [batch, classes].

    `pooled`: the backbone's pooled `features()`; otherwise its last `feature_map()` flattened, which
    keeps where on the face a feature fired (mini-Xception: 4×4×128 → 2048). `dtype` / `param_dtype` are the
    head's; the backbone is built with its own (normally the same).
    """

    def __init__(self, backbone: nnx.Module, feature_dim: int, hidden: int, dropout: float, *, pooled: bool = True,
                 dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.backbone = backbone
        self.pooled = pooled
        self.head = MLPHead(feature_dim, hidden, dropout, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def features(self, x: jax.Array) -> jax.Array:
        """[batch, feature_dim] backbone features, always in inference mode."""
        if self.pooled:
            features = self.backbone.features(x, train=False)
        else:
            features = self.backbone.feature_map(x, train=False).reshape(x.shape[0], -1)
        return jax.lax.stop_gradient(features)

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        return self.head(self.features(x), train=train)
