"""Detection-ratio weighted late fusion (Tsanousa et al., as EmoHD uses it; SPEC §5), in one jitted kernel.

For modality m and class c, from a held-out (dev) confusion matrix of m:
    DR_m[c] = TP / (TP + TN + FP + FN)   (one-vs-rest counts, so the denominator is the number of samples)
    W_m[c]  = 1 − DR_m[c]
    S_m     = W_m ⊙ P_m
Rules: `paper` lets the modality with the largest Σ_c S_m[c] decide (Eq. 4); `max` takes the
argmax over every modality×class score; `sum` the argmax over classes of Σ_m S_m[c]. A missing
modality is masked out (−inf / 0 where it could otherwise win), never scored as zeros.

The towers' probabilities are not comparable as they come (a tower trained with label smoothing is
never confident), so `fit_fusion` can also fit one temperature per modality on its dev set
(p ↦ softmax(log p / T)), applied before the weights: `FusionParams` holds both, `fuse_with` applies them.
"""

from __future__ import annotations

import functools
import itertools

import flax.struct
import jax
import jax.numpy as jnp
import optax

RULES = ("paper", "max", "sum")
MODALITIES = ("visual", "audio", "text")


def confusion_counts(labels: jax.Array, preds: jax.Array, valid: jax.Array, num_classes: int) -> jax.Array:
    """counts [true, predicted] from label vectors [n]; rows where `valid` is False are left out."""
    onehot_true = jax.nn.one_hot(labels, num_classes) * valid[:, None]
    return onehot_true.T @ jax.nn.one_hot(preds, num_classes)


def detection_ratio_weights(confusions: jax.Array) -> jax.Array:
    """W [modality, class] = 1 − TP_c / N from confusion counts [modality, true, predicted]."""
    true_positives = jnp.diagonal(confusions, axis1=1, axis2=2)           # [modality, class]
    samples = confusions.sum(axis=(1, 2))[:, None]                        # [modality, 1]
    return 1.0 - true_positives / jnp.maximum(samples, 1.0)


@functools.partial(jax.jit, static_argnames="rule")
def fuse(probs: jax.Array, present: jax.Array, weights: jax.Array, rule: str = "paper") -> tuple[jax.Array, jax.Array]:
    """probs [batch, modality, class], present [batch, modality] bool, weights [modality, class]
    → (decision [batch] (−1 when no modality is present), fused class scores [batch, class])."""
    if rule not in RULES:
        raise ValueError(f"fusion rule must be one of {RULES}, not {rule!r}")
    scores = weights[None] * probs                                          # S: [batch, modality, class]
    masked = jnp.where(present[..., None], scores, -jnp.inf)
    if rule == "paper":
        chosen = jnp.argmax(jnp.where(present, scores.sum(-1), -jnp.inf), axis=1)   # [batch]
        fused = jnp.take_along_axis(scores, chosen[:, None, None], axis=1)[:, 0]
    elif rule == "max":
        fused = masked.max(axis=1)
    else:
        fused = jnp.where(present[..., None], scores, 0.0).sum(axis=1)
    decision = jnp.where(present.any(axis=1), jnp.argmax(fused, axis=-1), -1)
    return decision, fused


@flax.struct.dataclass
class FusionParams:
    """What fusion learns from the dev sets: weights [modality, class], temperatures [modality], and the rule."""

    weights: jax.Array
    temperatures: jax.Array
    rule: str = flax.struct.field(pytree_node=False, default="paper")


def calibrate(probs: jax.Array, temperatures: jax.Array) -> jax.Array:
    """probs [batch, modality, class] → softmax(log p / T_m) per modality (T = 1 leaves them unchanged)."""
    log_probs = jnp.log(jnp.clip(probs, 1e-7, 1.0))
    return jax.nn.softmax(log_probs / temperatures[None, :, None], axis=-1)


def calibration_nll(probs: jax.Array, present: jax.Array, labels: jax.Array, temperatures: jax.Array) -> jax.Array:
    """Mean negative log-likelihood per modality [modality] over the rows where it is present."""
    log_probs = jnp.log(jnp.clip(calibrate(probs, temperatures), 1e-12, 1.0))
    picked = jnp.take_along_axis(log_probs, labels[:, None, None], axis=-1)[..., 0]     # [n, modality]
    return -(picked * present).sum(axis=0) / jnp.maximum(present.sum(axis=0), 1)


@functools.partial(jax.jit, static_argnames="steps")
def fit_temperatures(probs: jax.Array, present: jax.Array, labels: jax.Array, steps: int = 300) -> jax.Array:
    """temperatures [modality] minimising each modality's dev NLL (Adam on log T; one compiled loop).

    probs [n, modality, class], present [n, modality], labels [n]; a modality with no rows keeps T = 1.
    """
    optimizer = optax.adam(0.05)

    def loss(log_t):
        return calibration_nll(probs, present, labels, jnp.exp(log_t)).sum()   # modalities are independent

    def step(_, carry):
        log_t, opt_state = carry
        updates, opt_state = optimizer.update(jax.grad(loss)(log_t), opt_state)
        return optax.apply_updates(log_t, updates), opt_state

    log_t = jnp.zeros(probs.shape[1])
    log_t, _ = jax.lax.fori_loop(0, steps, step, (log_t, optimizer.init(log_t)))
    return jnp.where(present.any(axis=0), jnp.exp(log_t), 1.0)


@functools.partial(jax.jit, static_argnames="num_classes")
def dev_weights(dev_probs: jax.Array, dev_present: jax.Array, dev_labels: jax.Array, num_classes: int) -> jax.Array:
    """W [modality, class] from each modality's own dev rows (stacked, marked by `dev_present`)."""
    dev_preds = jnp.argmax(dev_probs, axis=-1)                              # [n, modality]
    confusions = jax.vmap(lambda p, v: confusion_counts(dev_labels, p, v, num_classes),
                          in_axes=(1, 1))(dev_preds, dev_present)            # [modality, class, class]
    return detection_ratio_weights(confusions)


def fit_fusion(dev_probs: jax.Array, dev_present: jax.Array, dev_labels: jax.Array, *, rule: str = "paper",
               calibrated: bool = False) -> FusionParams:
    """DR weights (and, if `calibrated`, temperatures) from dev probs [n, modality, class], present [n, modality]."""
    if rule not in RULES:
        raise ValueError(f"fusion rule must be one of {RULES}, not {rule!r}")
    present = jnp.asarray(dev_present, bool)
    weights = dev_weights(dev_probs, present, dev_labels, dev_probs.shape[-1])
    temperatures = fit_temperatures(dev_probs, present, dev_labels) if calibrated else jnp.ones(dev_probs.shape[1])
    return FusionParams(weights=weights, temperatures=temperatures, rule=rule)


@jax.jit
def fuse_with(params: FusionParams, probs: jax.Array, present: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Calibrate, weight and decide: (decision [batch] (−1: nothing present), fused scores [batch, class])."""
    return fuse(calibrate(probs, params.temperatures), present, params.weights, params.rule)


def to_json(params: FusionParams) -> dict:
    return {"rule": params.rule, "weights": jnp.asarray(params.weights).tolist(),
            "temperatures": jnp.asarray(params.temperatures).tolist()}


def from_json(data: dict) -> FusionParams:
    return FusionParams(weights=jnp.asarray(data["weights"], jnp.float32),
                        temperatures=jnp.asarray(data["temperatures"], jnp.float32), rule=data["rule"])


def modality_subsets(names: tuple[str, ...] = MODALITIES) -> dict[str, tuple[int, ...]]:
    """The paper's table columns: each modality alone, then every combination (V, A, T, V+A, …, V+A+T)."""
    short = {"visual": "V", "audio": "A", "text": "T"}
    out = {}
    for k in range(1, len(names) + 1):
        for combo in itertools.combinations(range(len(names)), k):
            out["+".join(short.get(names[i], names[i]) for i in combo)] = combo
    return out
