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

Beyond the paper (issue 17): a confident but uninformative modality (the words tower reading a neutral
carrier sentence) must not outvote an informative one, and DR weights cannot tell the two apart. So:
- per-class vector scaling of each tower, fitted on its own dev set: p ↦ softmax(a_m ⊙ log p + b_m), which
  moves a tower's over-confident class (and its dev prior) where its dev labels say, not just softens it;
- the `stack` rule, a product of experts over the calibrated log-probabilities ℓ_m with the presence mask:
      fused logits = Σ_m present_m · (w_m ⊙ ℓ_m + c_m) + b        (w, c per modality and class; b per class)
  fitted by NLL with modality dropout (random presence masks), so any subset of modalities is a case it was
  fitted for; c_m lets a modality's typical output (a tower's own prior, a constant "neutral") cancel out.
- its argmax-preserving form (`with_stack(..., weighting='scalar' | 'margin')`) over temperature-scaled towers:
      fused logits = Σ_m present_m · w_m(x) · ℓ_m + (k − 1) · j,   k = modalities present,
      w_m(x) = w_m · exp(s_m · r_m(x))  (> 0; r_m only for 'margin' and 'evidence', else s_m = 0)
  r_m: 'margin', the calibrated top-1 minus top-2 probability; 'evidence', KL(p_m(x) ‖ p̄_m) from the tower's
  mean calibrated output on its own dev set p̄_m: how far this utterance moves the tower from what it says
  anyway (the words tower on a neutral carrier sentence stays near its MELD average: little evidence).
  One modality alone decides exactly as its raw tower (T, w > 0 keep the argmax; c = b = 0, k − 1 = 0); with k
  modalities j is the product of experts' (k − 1)·log-prior correction. Per-class vector scaling changes a
  tower's own decision (on 2-actor RAVDESS halves that alone cost 1–3 points), so this form leaves it out.
`fuse_with` dispatches on `FusionParams.rule`: 'paper' | 'max' | 'sum' (the paper's) or 'stack'.
"""

from __future__ import annotations

import functools
import itertools

import flax.struct
import jax
import jax.numpy as jnp
import optax

from emohd_jax.classes import MODALITIES  # noqa: F401  (fusion.MODALITIES: the order of the arrays)

RULES = ("paper", "max", "sum")   # the paper's DR-weighted rules (SPEC §5)
STACK = "stack"                    # product of experts over vector-scaled log-probabilities
ALL_RULES = (*RULES, STACK)


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
    """What fusion learns from the dev sets, all [modality, class] unless said: DR `weights`, `temperatures`
    [modality]; vector scaling `scale`, `shift`; the stacker's `stack_weights` w, `stack_bias` c and `bias` b
    [class]; the reliability slopes `margin_slopes` [modality] and `joint_bias` [class]. A field left None is the
    identity (scale 1, shift 0, slopes 0, joint bias 0; the stack rule needs w, c and b)."""

    weights: jax.Array
    temperatures: jax.Array
    rule: str = flax.struct.field(pytree_node=False, default="paper")
    scale: jax.Array | None = None
    shift: jax.Array | None = None
    stack_weights: jax.Array | None = None
    stack_bias: jax.Array | None = None
    bias: jax.Array | None = None
    margin_slopes: jax.Array | None = None   # [modality] s_m of the reliability weight (None: 0)
    evidence_reference: jax.Array | None = None   # [modality, class] p̄_m: r_m is KL to it (None: the margin)
    joint_bias: jax.Array | None = None      # [class] j, counted once per modality beyond the first (None: 0)


def calibrate(probs: jax.Array, temperatures: jax.Array, scale: jax.Array | None = None,
              shift: jax.Array | None = None) -> jax.Array:
    """probs [batch, modality, class] → softmax(scale_m ⊙ log p / T_m + shift_m) per modality (identity at T = 1,
    scale 1, shift 0)."""
    return jnp.exp(calibrated_log_probs(probs, temperatures, scale, shift))


def calibrated_log_probs(probs: jax.Array, temperatures: jax.Array, scale: jax.Array | None = None,
                         shift: jax.Array | None = None) -> jax.Array:
    """log of `calibrate` [batch, modality, class], computed in log space (no underflow to log 0)."""
    logits = jnp.log(jnp.clip(probs, 1e-7, 1.0)) / temperatures[None, :, None]
    if scale is not None:
        logits = logits * scale[None]
    if shift is not None:
        logits = logits + shift[None]
    return jax.nn.log_softmax(logits, axis=-1)


def calibration_nll(probs: jax.Array, present: jax.Array, labels: jax.Array, temperatures: jax.Array,
                    scale: jax.Array | None = None, shift: jax.Array | None = None) -> jax.Array:
    """Mean negative log-likelihood per modality [modality] over the rows where it is present."""
    log_probs = calibrated_log_probs(probs, temperatures, scale, shift)
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


@functools.partial(jax.jit, static_argnames="steps")
def fit_vector_scaling(probs: jax.Array, present: jax.Array, labels: jax.Array, temperatures: jax.Array,
                       steps: int = 500, l2: float = 3e-2) -> tuple[jax.Array, jax.Array]:
    """(scale, shift) [modality, class] minimising each modality's dev NLL of softmax(a ⊙ log p / T + b), with an
    L2 pull to the identity, i.e. to the temperature-scaled tower. Held-out NLL on dev halves split by group
    (2 seeds × 2 folds): unpulled, a and b fit the 100-clip RAVDESS halves and MELD's 22 disgust rows and end up
    to 0.14 nats above temperature scaling; at 3e-2, FER2013 0.01–0.02 below it, MELD and RAVDESS within −0.014
    … +0.026 of it, always below the raw tower's. A modality with no rows stays identity. probs [n, modality, class], present [n,
    modality], labels [n], temperatures [modality] (`fit_temperatures`)."""
    optimizer = optax.adam(0.05)

    def loss(params):
        scale, shift = params
        nll = calibration_nll(probs, present, labels, temperatures, scale, shift)
        return nll.sum() + l2 * (((scale - 1.0) ** 2).sum() + (shift ** 2).sum())

    def step(_, carry):
        params, opt_state = carry
        updates, opt_state = optimizer.update(jax.grad(loss)(params), opt_state)
        return optax.apply_updates(params, updates), opt_state

    params = (jnp.ones(probs.shape[1:]), jnp.zeros(probs.shape[1:]))
    (scale, shift), _ = jax.lax.fori_loop(0, steps, step, (params, optimizer.init(params)))
    seen = present.any(axis=0)[:, None]
    return jnp.where(seen, scale, 1.0), jnp.where(seen, shift, 0.0)


def confidence_margin(log_probs: jax.Array) -> jax.Array:
    """log_probs [batch, modality, class] → top-1 minus top-2 probability [batch, modality], in [0, 1]."""
    top = jax.lax.top_k(jnp.exp(log_probs), 2)[0]
    return top[..., 0] - top[..., 1]


def evidence(log_probs: jax.Array, reference: jax.Array) -> jax.Array:
    """KL(p ‖ p̄_m) [batch, modality] of log_probs [batch, modality, class] from reference p̄ [modality, class]."""
    return (jnp.exp(log_probs) * (log_probs - jnp.log(jnp.clip(reference, 1e-7, 1.0))[None])).sum(-1)


def reliability(log_probs: jax.Array, reference: jax.Array | None) -> jax.Array:
    """r_m(x) [batch, modality]: `evidence` against `reference`, or `confidence_margin` without one."""
    return confidence_margin(log_probs) if reference is None else evidence(log_probs, reference)


def stack_logits(log_probs: jax.Array, present: jax.Array, stack_weights: jax.Array, stack_bias: jax.Array,
                 bias: jax.Array, margin_slopes: jax.Array | None = None,
                 joint_bias: jax.Array | None = None, evidence_reference: jax.Array | None = None) -> jax.Array:
    """log_probs [batch, modality, class] (calibrated), present [batch, modality] → fused logits [batch, class].

    An absent modality adds exactly 0 (`where`, not a product: its row may hold anything, even −inf)."""
    weights = stack_weights[None]                                           # [1 | batch, modality, class]
    if margin_slopes is not None:
        weights = weights * jnp.exp(margin_slopes[None] * reliability(log_probs, evidence_reference))[..., None]
    terms = weights * log_probs + stack_bias[None]                          # [batch, modality, class]
    fused = jnp.where(present[..., None], terms, 0.0).sum(axis=1) + bias[None]
    if joint_bias is not None:
        extra = jnp.maximum(present.sum(axis=1, keepdims=True) - 1, 0)      # [batch, 1]
        fused = fused + extra * joint_bias[None]
    return fused


def dropout_masks(key: jax.Array, present: jax.Array, rate: float) -> jax.Array:
    """present [n, modality] with each modality dropped with probability `rate`, never all of a row's: a row
    that would lose all keeps one of its modalities, drawn uniformly."""
    keep_key, pick_key = jax.random.split(key)
    kept = present & (jax.random.uniform(keep_key, present.shape) >= rate)
    pick = jax.random.categorical(pick_key, jnp.where(present, 0.0, -jnp.inf), axis=-1)   # [n]
    fallback = jax.nn.one_hot(pick, present.shape[1], dtype=bool) & present
    return jnp.where(kept.any(axis=1, keepdims=True), kept, fallback)


def balanced_weights(labels: jax.Array, sources: jax.Array, source_shares: jax.Array, num_classes: int) -> jax.Array:
    """row weights [n] (mean 1) giving each source s (sources [n] ∈ 0..S−1) the share source_shares[s] of the
    loss and, within it, every class the same: the sets a stacker is fitted on (FER2013, MELD) have priors no
    user's recordings share, and a few real multimodal rows must not drown among many label-paired ones."""
    counts = jnp.zeros((len(source_shares), num_classes)).at[sources, labels].add(1.0)   # [source, class]
    classes_seen = (counts > 0).sum(axis=1)                                             # [source]
    weights = source_shares[sources] / (classes_seen[sources] * counts[sources, labels])
    return weights * labels.shape[0] / weights.sum()


@functools.partial(jax.jit, static_argnames=("steps", "per_class"))
def fit_stack(log_probs: jax.Array, present: jax.Array, labels: jax.Array, row_weights: jax.Array, key: jax.Array,
              bias_prior: jax.Array, *, dropout: float = 0.5, l2: float = 1e-3, steps: int = 600,
              per_class: bool = True) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(stack_weights, stack_bias [modality, class], bias [class]) minimising the row-weighted NLL of
    `stack_logits` on calibrated log_probs [n, modality, class], with a fresh modality-dropout mask every step
    (full batch, Adam), starting from and pulled (L2) to w = 1, c = bias_prior [modality, class], b = 0.
    `per_class=False`: one weight per modality (how far to believe it at all), c and b still per class."""
    num_classes = log_probs.shape[-1]
    optimizer = optax.adam(0.05)

    def loss(params, mask):
        w, c, b = params
        logits = stack_logits(log_probs, mask, w, c, b)
        nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=-1)[:, 0]
        penalty = ((w - 1.0) ** 2).sum() + ((c - bias_prior) ** 2).sum() + (b ** 2).sum()
        return (row_weights * nll).mean() + l2 * penalty

    def step(i, carry):
        params, opt_state = carry
        mask = dropout_masks(jax.random.fold_in(key, i), present, dropout)
        updates, opt_state = optimizer.update(jax.grad(loss)(params, mask), opt_state)
        return optax.apply_updates(params, updates), opt_state

    shape = log_probs.shape[1:]
    params = (jnp.ones(shape if per_class else (shape[0], 1)), bias_prior, jnp.zeros(num_classes))
    (w, c, b), _ = jax.lax.fori_loop(0, steps, step, (params, optimizer.init(params)))
    return jnp.broadcast_to(w, shape), c, b


@functools.partial(jax.jit, static_argnames=("steps", "per_class", "margin", "joint"))
def fit_scalar_stack(log_probs: jax.Array, present: jax.Array, labels: jax.Array, row_weights: jax.Array,
                     key: jax.Array, *, dropout: float = 0.5, l2: float = 1e-3, class_l2: float = 1.0,
                     steps: int = 600, per_class: bool = False, margin: bool = False,
                     reference: jax.Array | None = None, joint: bool = True) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(stack_weights [modality, class], margin_slopes [modality], joint_bias [class]) of the argmax-preserving
    stack (module docstring) minimising the row-weighted NLL under modality dropout (full batch, Adam).

    w_m = exp(a_m) (> 0), pulled (L2 `l2`) to 1 like s_m to 0 and j to 0. `per_class`: w_mc = exp(a_m + δ_mc)
    with δ pulled to 0 by `class_l2` (a small per-class term; a lone modality then no longer keeps its argmax
    exactly). `margin`: fit the reliability slopes s_m (on `reliability(·, reference)`), else they stay 0.
    `joint=False`: no joint bias (j = 0), so a modality believed by 0 leaves the others' decision exactly."""
    num_modalities, num_classes = log_probs.shape[1:]
    optimizer = optax.adam(0.05)

    def unpack(params):
        log_w, delta, slopes, bias = params
        weights = jnp.exp(log_w[:, None] + (delta if per_class else 0.0)) * jnp.ones(num_classes)
        return weights, (slopes if margin else jnp.zeros_like(slopes)), (bias if joint else 0.0 * bias)

    def loss(params, mask):
        weights, slopes, bias = unpack(params)
        logits = stack_logits(log_probs, mask, weights, jnp.zeros_like(weights), jnp.zeros(num_classes),
                              slopes, bias, reference)
        nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=-1)[:, 0]
        log_w, delta, slopes, bias = params
        penalty = l2 * ((log_w ** 2).sum() + (slopes ** 2).sum() + (bias ** 2).sum()) + class_l2 * (delta ** 2).sum()
        return (row_weights * nll).mean() + penalty

    def step(i, carry):
        params, opt_state = carry
        mask = dropout_masks(jax.random.fold_in(key, i), present, dropout)
        updates, opt_state = optimizer.update(jax.grad(loss)(params, mask), opt_state)
        return optax.apply_updates(params, updates), opt_state

    params = (jnp.zeros(num_modalities), jnp.zeros((num_modalities, num_classes)), jnp.zeros(num_modalities),
              jnp.zeros(num_classes))
    params, _ = jax.lax.fori_loop(0, steps, step, (params, optimizer.init(params)))
    return unpack(params)


WEIGHTINGS = ("class", "scalar", "scalar+class", "margin", "evidence")


def fit_fusion(dev_probs: jax.Array, dev_present: jax.Array, dev_labels: jax.Array, *, rule: str = "paper",
               calibrated: bool | str = False) -> FusionParams:
    """DR weights and, by `calibrated`, temperatures (True or 'temperature') or temperatures then per-class vector
    scaling on top ('vector') from each tower's dev probs [n, modality, class], present [n, modality]. The stack
    rule's own parameters come from `fit_stack` on multimodal rows (`with_stack`)."""
    if rule not in RULES:
        raise ValueError(f"fusion rule must be one of {RULES} here, not {rule!r}"
                         + (" (fit the stack rule with `with_stack`)" if rule == STACK else ""))
    if calibrated not in (False, True, "temperature", "vector"):
        raise ValueError(f"calibrated must be False, True, 'temperature' or 'vector', not {calibrated!r}")
    present = jnp.asarray(dev_present, bool)
    probs, labels = jnp.asarray(dev_probs, jnp.float32), jnp.asarray(dev_labels)
    weights = dev_weights(probs, present, labels, probs.shape[-1])
    temperatures = jnp.ones(probs.shape[1])
    scale = shift = None
    if calibrated:
        temperatures = fit_temperatures(probs, present, labels)
    if calibrated == "vector":
        scale, shift = fit_vector_scaling(probs, present, labels, temperatures)
    return FusionParams(weights=weights, temperatures=temperatures, rule=rule, scale=scale, shift=shift)


def with_stack(params: FusionParams, probs: jax.Array, present: jax.Array, labels: jax.Array, *,
               sources: jax.Array | None = None, source_shares: tuple[float, ...] = (1.0,),
               dev_priors: jax.Array | None = None, seed: int = 0, dropout: float = 0.5,
               l2: float = 1e-3, per_class: bool = True, weighting: str = "class",
               class_l2: float = 1.0, dev_probs: jax.Array | None = None,
               dev_present: jax.Array | None = None, joint: bool = True) -> FusionParams:
    """`params` (its calibration applied first) with the stacker fitted on multimodal rows probs [n, modality,
    class], present [n, modality], labels [n] (from `sources` [n], weighted by `balanced_weights`), rule 'stack'.

    weighting 'class' (`fit_stack`, per_class as given): dev_priors [modality, class], each tower's class
    frequencies on its dev set. A calibrated tower's posterior carries its dev set's prior (MELD: 42 % neutral);
    the product of experts divides it out (c_m starts at, and is pulled to, −log prior_m), so the words'
    "neutral" counts only as far as it beats MELD's base rate. 'scalar', 'scalar+class' (δ pulled by
    `class_l2`), 'margin' and 'evidence' (`fit_scalar_stack`): one positive weight per modality, so a modality
    alone keeps its (temperature-scaled) argmax; the prior correction is the joint bias, active only when two or
    more are (`joint=False`: none). 'evidence' needs each tower's dev rows, dev_probs [n, modality, class] with
    dev_present [n, modality], for p̄_m, its mean calibrated output there."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, not {weighting!r}")
    log_probs = calibrated_log_probs(jnp.asarray(probs, jnp.float32), params.temperatures, params.scale, params.shift)
    labels = jnp.asarray(labels)
    sources = jnp.zeros_like(labels) if sources is None else jnp.asarray(sources)
    row_weights = balanced_weights(labels, sources, jnp.asarray(source_shares, jnp.float32), log_probs.shape[-1])
    if weighting != "class":
        reference = None
        if weighting == "evidence":
            if dev_probs is None or dev_present is None:
                raise ValueError("weighting 'evidence' needs dev_probs and dev_present (each tower's dev rows)")
            dev = calibrate(jnp.asarray(dev_probs, jnp.float32), params.temperatures, params.scale, params.shift)
            seen = jnp.asarray(dev_present, jnp.float32)[..., None]
            reference = (dev * seen).sum(0) / jnp.maximum(seen.sum(0), 1.0)                 # [modality, class]
        w, slopes, joint_bias = fit_scalar_stack(log_probs, jnp.asarray(present, bool), labels, row_weights,
                                            jax.random.key(seed), dropout=dropout, l2=l2, class_l2=class_l2,
                                            per_class=weighting == "scalar+class",
                                            margin=weighting in ("margin", "evidence"), reference=reference,
                                            joint=joint)
        zeros = jnp.zeros_like(w)
        return params.replace(rule=STACK, stack_weights=w, stack_bias=zeros, bias=zeros[0],
                              margin_slopes=slopes if weighting in ("margin", "evidence") else None,
                              joint_bias=joint_bias if joint else None, evidence_reference=reference)
    prior = jnp.zeros(log_probs.shape[1:]) if dev_priors is None else -jnp.log(jnp.maximum(
        jnp.asarray(dev_priors, jnp.float32), 1e-3))
    w, c, b = fit_stack(log_probs, jnp.asarray(present, bool), labels, row_weights, jax.random.key(seed), prior,
                        dropout=dropout, l2=l2, per_class=per_class)
    return params.replace(rule=STACK, stack_weights=w, stack_bias=c, bias=b)


def scale_belief(params: FusionParams, modality: int, factor: float) -> FusionParams:
    """The stack rule with modality `modality`'s whole term (w_m ⊙ ℓ_m + c_m) times `factor`: 0 ignores it."""
    return params.replace(stack_weights=params.stack_weights.at[modality].multiply(factor),
                          stack_bias=params.stack_bias.at[modality].multiply(factor))


@jax.jit
def fuse_with(params: FusionParams, probs: jax.Array, present: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Calibrate, then the rule: (decision [batch] (−1: nothing present), fused scores [batch, class]);
    the stack rule's scores are its fused probabilities."""
    present = jnp.asarray(present, bool)
    if params.rule != STACK:
        calibrated = calibrate(probs, params.temperatures, params.scale, params.shift)
        return fuse(calibrated, present, params.weights, params.rule)
    if params.stack_weights is None:
        raise ValueError("rule 'stack' needs stack_weights, stack_bias and bias (fit them with `with_stack`)")
    log_probs = calibrated_log_probs(probs, params.temperatures, params.scale, params.shift)
    logits = stack_logits(log_probs, present, params.stack_weights, params.stack_bias, params.bias,
                          params.margin_slopes, params.joint_bias, params.evidence_reference)
    decision = jnp.where(present.any(axis=1), jnp.argmax(logits, axis=-1), -1)
    return decision, jax.nn.softmax(logits, axis=-1)


OPTIONAL_FIELDS = ("scale", "shift", "stack_weights", "stack_bias", "bias", "margin_slopes", "joint_bias",
                   "evidence_reference")


def to_json(params: FusionParams) -> dict:
    """The bundle's `fusion` entry: rule, weights, temperatures, and whichever optional fields are fitted."""
    out = {"rule": params.rule, "weights": jnp.asarray(params.weights).tolist(),
           "temperatures": jnp.asarray(params.temperatures).tolist()}
    for name in OPTIONAL_FIELDS:
        if getattr(params, name) is not None:
            out[name] = jnp.asarray(getattr(params, name)).tolist()
    return out


def from_json(data: dict) -> FusionParams:
    """Inverse of `to_json`; a bundle written before the optional fields existed loads with them None."""
    if data["rule"] not in ALL_RULES:
        raise ValueError(f"fusion rule must be one of {ALL_RULES}, not {data['rule']!r}")
    optional = {name: jnp.asarray(data[name], jnp.float32) for name in OPTIONAL_FIELDS if name in data}
    params = FusionParams(weights=jnp.asarray(data["weights"], jnp.float32),
                          temperatures=jnp.asarray(data["temperatures"], jnp.float32), rule=data["rule"], **optional)
    if params.rule == STACK and params.stack_weights is None:
        raise ValueError("rule 'stack' needs stack_weights, stack_bias and bias in the fusion entry")
    return params


def modality_subsets(names: tuple[str, ...] = MODALITIES) -> dict[str, tuple[int, ...]]:
    """The paper's table columns: each modality alone, then every combination (V, A, T, V+A, …, V+A+T)."""
    short = {"visual": "V", "audio": "A", "text": "T"}
    out = {}
    for k in range(1, len(names) + 1):
        for combo in itertools.combinations(range(len(names)), k):
            out["+".join(short.get(names[i], names[i]) for i in combo)] = combo
    return out
