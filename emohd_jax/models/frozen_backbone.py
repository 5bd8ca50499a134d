"""Stage 2 of the visual tower (SPEC §2.4): a frozen face backbone's pooled features → an MLP classifier.

The backbone stays inside the model (no separate feature shards to keep in sync with it): its
BatchNorm always uses running statistics and no gradient flows into it, so only the head learns
(`config.optim.trainable = ("^head/",)` keeps the optimiser from touching the backbone too).
"""

from __future__ import annotations

import jax
from flax import nnx

from emohd_jax.classes import NUM_CLASSES


class MLPHead(nnx.Module):
    """features: [batch, d] → logits: [batch, classes] through one hidden ReLU layer with dropout."""

    def __init__(self, in_features: int, hidden: int, dropout: float, num_classes: int = NUM_CLASSES, *,
                 rngs: nnx.Rngs):
        self.hidden = nnx.Linear(in_features, hidden, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.out = nnx.Linear(hidden, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        return self.out(self.dropout(nnx.relu(self.hidden(x)), deterministic=not train))


class FrozenBackboneMLP(nnx.Module):
    """faces: [batch, h, w, c] normalised for `backbone` → logits [batch, classes]; `backbone` has `features()`."""

    def __init__(self, backbone: nnx.Module, feature_dim: int, hidden: int, dropout: float, *, rngs: nnx.Rngs):
        self.backbone = backbone
        self.head = MLPHead(feature_dim, hidden, dropout, rngs=rngs)

    def features(self, x: jax.Array) -> jax.Array:
        """[batch, feature_dim] pooled backbone features, always in inference mode."""
        return jax.lax.stop_gradient(self.backbone.features(x, train=False))

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        return self.head(self.features(x), train=train)
