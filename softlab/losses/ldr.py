"""Label-distributionally robust (LDR) losses and the LDR paper's baselines.

Same conventions as softlab.losses.classification: `loss(logits, labels, *,
where=None, dtype=None, <hyperparameters>)` -> per-example values of shape
`logits.shape[:-1]`, integer labels, `where` a boolean mask over the class
entries (an example whose label class is masked gets 0), computation and
result in `dtype` (float32 or wider by default). CE, GCE, truncated GCE, SCE,
MAE, MSE and NCE+RCE live in classification.

LDR-KL is the worst case over label distributions p of sum_k p_k (margin gap
u_k) minus lam KL(p || uniform), where u_k = f_k - f_y + c 1[k != y] and K is
the number of kept classes:
  psi(f, y) = lam log((1/K) sum_k exp(u_k / lam)).
The released code (github.com/Optimization-AI/ICML2023_LDR, loss.py)
normalizes the logits before the loss; here that is the explicit
`normalize_logits` option:
- None: raw logits.
- "mean_abs": f / mean_k |f_k| over the kept classes (rows with mean 0 are
  left as they are).
- "softplus": softplus(f) / mean_k softplus(f_k) (softplus values are
  positive, so this is "softplus, then mean_abs").
Which rule the released losses use: LDR-KL (`LDRLoss_V1`) always applies
"softplus"; ALDR-KL (`ALDRLoss_V1`) uses "mean_abs", and "softplus" only on
CIFAR-100 (experiment.py). The scale is part of the loss: gradients flow
through it.

A consequence for ALDR-KL: after "mean_abs" the scores sum to K in absolute
value, so f / lam0 spans at most K / lam0, and softmax(f / lam) can be far from
uniform (lambda far below lam0) only when K is large against lam0. At K = 10,
lam0 = 10 the most peaked row, (1, 0, ..., 0), keeps lambda near 9.84 however
often it is visited; at K = 49 it falls to about 5.05, near the floor
lam0 (1 - 1/alpha) = 5.
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike, DTypeLike

from softlab import normalizers
from softlab.losses._common import (
    class_count,
    label_value,
    masked_log_softmax,
    normalized_cross_entropy,
    prepare_classification,
)
from softlab.losses._registry import REGISTRY, StatefulLoss
from softlab.validation import broadcast_to, check_number

__all__ = [
    "aldr_kl",
    "crammer_singer",
    "js",
    "ldr_kl",
    "nce_agce",
    "nce_aul",
    "rll",
    "weston_watkins",
]

LOGIT_NORMALIZATIONS = (None, "mean_abs", "softplus")

# ---------------------------------------------------------------------------
# Pieces on prepared arrays (compute dtype, masked entries 0).
# ---------------------------------------------------------------------------


def _normalize_logits(x, mask, mode):
  """The `normalize_logits` option applied to kept entries (masked stay 0)."""
  if mode not in LOGIT_NORMALIZATIONS:
    raise ValueError(
        f"normalize_logits={mode!r} is not valid; valid: None, 'mean_abs',"
        " 'softplus'"
    )
  if mode is None:
    return x
  if mode == "softplus":
    x = jnp.where(mask, jax.nn.softplus(x), 0)
  scale = jnp.sum(jnp.abs(x), axis=-1, keepdims=True) / jnp.maximum(
      class_count(mask, x.dtype)[..., None], 1
  )
  usable = scale > jnp.finfo(x.dtype).tiny
  return x / jnp.where(usable, scale, 1)


def _margin_gaps(x, one_hot, margin):
  """u_k = f_k - f_y + c 1[k != y]; u_y = 0."""
  return x - label_value(x, one_hot)[..., None] + jnp.where(one_hot, 0, margin)


def _ldr_kl(x, mask, one_hot, lam, margin):
  """lam log((1/K) sum_k exp(u_k / lam)) = -lam log softmax(u / lam)_y - lam log K.

  u_y = 0, so lam log sum_k exp(u_k / lam) = -lam log softmax(u / lam)_y; the
  gaps are formed before dividing by lam, so small lam loses no precision and
  the value tends to max_k u_k (the Crammer-Singer hinge) as lam -> 0.
  """
  lam = jnp.asarray(lam, x.dtype)[..., None]
  scores = _margin_gaps(x, one_hot, margin) / lam
  log_sum = -label_value(masked_log_softmax(scores, mask), one_hot)
  count = jnp.maximum(class_count(mask, x.dtype), 1)
  return lam[..., 0] * (log_sum - jnp.log(count))


def _power_gap(base, delta, exponent):
  """(base + delta)^e - base^e = base^e expm1(e log1p(delta / base)).

  Exact for small delta, where the plain difference cancels.
  """
  return base**exponent * jnp.expm1(exponent * jnp.log1p(delta / base))


def _prepare(logits, labels, where, dtype, normalize_logits):
  x, mask, one_hot, valid = prepare_classification(logits, labels, where, dtype)
  return _normalize_logits(x, mask, normalize_logits), mask, one_hot, valid


# ---------------------------------------------------------------------------
# LDR losses.
# ---------------------------------------------------------------------------


@REGISTRY.register("ldr_kl", kind="classification")
def ldr_kl(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
    lam: ArrayLike = 1.0,
    margin: float = 0.1,
    normalize_logits: str | None = None,
) -> jax.Array:
  """LDR-KL loss: lam log((1/K) sum_k exp((f_k - f_y + c 1[k != y]) / lam)).

  margin c = 0, lam = 1 gives cross-entropy - log K; lam -> 0 gives the
  Crammer-Singer hinge max_k (f_k - f_y + c 1[k != y]); lam -> infinity gives
  the mean gap. The released experiments use c = 0.1 (the default here),
  lam = 10 and normalize_logits="softplus" for the fixed-lambda variant; the
  defaults lam = 1, no normalization keep the CE special case at hand.

  Args:
    logits: [..., K] scores f.
    labels: [...] integer class indices.
    where: boolean mask over the class entries, True = keep.
    dtype: computation dtype.
    lam: > 0, a scalar or an array broadcastable to the examples.
    margin: c.
    normalize_logits: None, "mean_abs" or "softplus" (see the module doc).

  Returns:
    [...] per-example losses.

  References:
    Zhu, Ying & Yang, "Label Distributionally Robust Losses for Multi-class
    Classification: Consistency, Robustness and Adaptivity", arXiv:2112.14869.
  """
  check_number(lam, "lam", lambda v: v > 0, "> 0")
  x, mask, one_hot, valid = _prepare(logits, labels, where, dtype, normalize_logits)
  return jnp.where(valid, _ldr_kl(x, mask, one_hot, lam, margin), 0)


def aldr_kl_stateful(
    *,
    lam0: float = 10.0,
    alpha: float = 2.0,
    margin: float = 0.1,
    normalize_logits: str | None = None,
) -> StatefulLoss:
  """ALDR-KL with its per-example lambdas as state: an optax-style (init, apply) pair.

  init(num_examples, dtype=float32) -> {"lambda": [num_examples] filled with lam0}.
  apply(logits, labels, state, ids, *, where=None) -> (values, new_state): reads
  each example's lambda at its id (lam0 for ids outside the state, e.g.
  padding), computes `aldr_kl` and writes the updated lambdas back at those
  ids (ids outside the state write nothing).

  Args: the hyperparameters of `aldr_kl`.

  Returns:
    StatefulLoss(init, apply).
  """
  check_number(lam0, "lam0", lambda v: v > 0, "> 0")

  def init(num_examples, dtype=jnp.float32):
    return {"lambda": jnp.full(num_examples, lam0, dtype)}

  def apply(logits, labels, state, ids, *, where=None):
    stored = state["lambda"]
    lam = stored.at[ids].get(mode="fill", fill_value=lam0)
    values, lam = aldr_kl(logits, labels, lam, where=where, lam0=lam0, alpha=alpha,
                          margin=margin, normalize_logits=normalize_logits)
    return values, {"lambda": stored.at[ids].set(lam, mode="drop")}

  return StatefulLoss(init, apply)


@REGISTRY.register("aldr_kl", kind="classification", stateful=aldr_kl_stateful)
def aldr_kl(
    logits: ArrayLike,
    labels: ArrayLike,
    lam: ArrayLike,
    *,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
    lam0: float = 10.0,
    alpha: float = 2.0,
    margin: float = 0.1,
    normalize_logits: str | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Adaptive LDR-KL: a per-example lambda updated at every visit.

  With lam_old the example's stored lambda and K the kept classes:
    p = softmax(f / lam_old);  KL = sum_k p_k log(K p_k)  (clipped to [0, log K])
    lam_new = lam0 (1 - KL / (alpha log K))               (no gradient)
    loss = LDR-KL(f, y; lam_new, c) - (alpha log K / (2 lam0)) (lam_new - lam0)^2
  so lam_new lies in [lam0 (1 - 1/alpha), lam0]. The softmax uses the
  (normalized) logits without the margin, as the paper's update states. The
  trainer keeps lambda per training example (initialized to lam0, indexed
  by example id) and writes lam_new back; examples whose label class is masked
  keep their lambda and get loss 0. The released experiments use lam0 = 10,
  alpha = 2, c = 0.1 and normalize_logits="mean_abs" ("softplus" on
  CIFAR-100); the released update adds 1e-5 to p before renormalizing it and
  does not clip KL, which moves lambda by less than 1e-3 lam0.

  Args:
    logits: [..., K] scores f.
    labels: [...] integer class indices.
    lam: [...] (or broadcastable) the examples' stored lambdas, > 0.
    where: boolean mask over the class entries, True = keep.
    dtype: computation dtype.
    lam0: initial and largest lambda (> 0).
    alpha: > 1; sets the smallest lambda lam0 (1 - 1/alpha).
    margin: c.
    normalize_logits: None, "mean_abs" or "softplus" (see the module doc).

  Returns:
    (per-example losses, updated lambdas), both of shape [...]; the lambdas in
    lam's dtype if it is floating.

  References:
    Zhu, Ying & Yang, "Label Distributionally Robust Losses for Multi-class
    Classification: Consistency, Robustness and Adaptivity", arXiv:2112.14869.
  """
  check_number(lam0, "lam0", lambda v: v > 0, "> 0")
  check_number(alpha, "alpha", lambda v: v > 1, "> 1")
  x, mask, one_hot, valid = _prepare(logits, labels, where, dtype, normalize_logits)
  lam = jnp.asarray(lam)
  lam_old = broadcast_to(lam, valid.shape, name="lam", target="the examples", dtype=x.dtype)
  log_k = jnp.log(jnp.maximum(class_count(mask, x.dtype), 1))
  log_probs = masked_log_softmax(x / lam_old[..., None], mask)
  probs = normalizers.softmax(x / lam_old[..., None], where=mask)
  kl = jnp.clip(jnp.sum(probs * log_probs, axis=-1) + log_k, 0, log_k)
  ratio = kl / jnp.where(log_k > 0, alpha * log_k, 1)
  lam_new = jax.lax.stop_gradient(lam0 * (1 - ratio))
  penalty = alpha * log_k / (2 * lam0) * (lam_new - lam0) ** 2
  loss = jnp.where(valid, _ldr_kl(x, mask, one_hot, lam_new, margin) - penalty, 0)
  lam_dtype = lam.dtype if jnp.issubdtype(lam.dtype, jnp.floating) else x.dtype
  return loss, jnp.where(valid, lam_new, lam_old).astype(lam_dtype)


# ---------------------------------------------------------------------------
# Baselines of the LDR paper.
# ---------------------------------------------------------------------------


@REGISTRY.register("crammer_singer", kind="classification")
def crammer_singer(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
    margin: float = 1.0,
) -> jax.Array:
  """Crammer-Singer multi-class hinge: max(0, max_{k != y} (c + f_k - f_y)).

  Args:
    logits: [..., K] scores f.
    labels: [...] integer class indices.
    where: boolean mask over the class entries, True = keep.
    dtype: computation dtype.
    margin: c.

  Returns:
    [...] per-example losses.

  References:
    Crammer & Singer, "On the Algorithmic Implementation of Multiclass
    Kernel-based Vector Machines", JMLR 2001 (no arXiv id).
  """
  x, mask, one_hot, valid = prepare_classification(logits, labels, where, dtype)
  gaps = jnp.where(mask, _margin_gaps(x, one_hot, margin), 0)
  return jnp.where(valid, jnp.max(gaps, axis=-1), 0)


@REGISTRY.register("weston_watkins", kind="classification")
def weston_watkins(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
    margin: float = 1.0,
) -> jax.Array:
  """Weston-Watkins multi-class hinge: sum_{k != y} max(0, c + f_k - f_y).

  Args:
    logits: [..., K] scores f.
    labels: [...] integer class indices.
    where: boolean mask over the class entries, True = keep.
    dtype: computation dtype.
    margin: c.

  Returns:
    [...] per-example losses.

  References:
    Weston & Watkins, "Support Vector Machines for Multi-Class Pattern
    Recognition", ESANN 1999 (no arXiv id).
  """
  x, mask, one_hot, valid = prepare_classification(logits, labels, where, dtype)
  hinges = jax.nn.relu(_margin_gaps(x, one_hot, margin))
  total = jnp.sum(jnp.where(mask & ~one_hot, hinges, 0), axis=-1)
  return jnp.where(valid, total, 0)


@REGISTRY.register("rll", kind="classification")
def rll(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
    alpha: float = 0.1,
) -> jax.Array:
  """Robust log loss: log((a + 1) / a) - log(a + p_y) + mean_{k != y} log(a + p_k).

  p = softmax(f). The loss is 0 at p = e_y and its sum over all labels y is
  a constant (a symmetric loss, hence robust to uniform label noise): the
  robust log loss as the RLL paper defines it, and as the LDR paper's
  baseline list states it. The LDR paper's released RLLLoss
  (github.com/Optimization-AI/ICML2023_LDR, loss.py) computes something
  else: -log(a + p_y) + log(sum_k [exp(f_k [k != y] - sum_j f_j) + a]) / (K - 1),
  i.e. the log of a sum instead of the mean of the logs, exp(f_k - sum_j f_j)
  (not a probability) instead of p_k, the label's own class inside the sum,
  and no log((a + 1) / a). It is not symmetric and not 0 at p = e_y; on
  2000 standard-normal logit rows with K = 10 it differs from this function
  by up to 0.81 (a = 0.1), 0.54 (a = 1) and 1.90 (a = 10). This function
  follows the paper, not that code. a = 0.1 is the smallest of the
  LDR code's grid {0.1, 1, 10} (chosen per dataset by cross-validation); the
  RLL paper's own value was not checked here (it is not on arXiv).

  Args:
    logits: [..., K] scores f.
    labels: [...] integer class indices.
    where: boolean mask over the class entries, True = keep.
    dtype: computation dtype.
    alpha: a > 0.

  Returns:
    [...] per-example losses.

  References:
    Kumar & Sastry, "Robust Loss Functions for Learning Multi-class
    Classifiers", IEEE SMC 2018 (no arXiv id).
  """
  check_number(alpha, "alpha", lambda v: v > 0, "> 0")
  x, mask, one_hot, valid = prepare_classification(logits, labels, where, dtype)
  probs = normalizers.softmax(x, where=mask)
  log_terms = jnp.log(alpha + probs)
  others = mask & ~one_hot
  spread = jnp.sum(jnp.where(others, log_terms, 0), axis=-1) / jnp.maximum(
      class_count(others, x.dtype), 1
  )
  loss = jnp.log1p(1 / alpha) - label_value(log_terms, one_hot) + spread
  return jnp.where(valid, loss, 0)


@REGISTRY.register("js", kind="classification")
def js(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
    pi1: float = 0.5,
) -> jax.Array:
  """Jensen-Shannon loss: [pi1 KL(e_y || m) + (1 - pi1) KL(p || m)] / Z.

  m = pi1 e_y + (1 - pi1) p, p = softmax(f), Z = -(1 - pi1) log(1 - pi1). The
  scaling makes pi1 -> 0 tend to cross-entropy and pi1 -> 1 to MAE / 2. In
  closed form with m_y = pi1 + (1 - pi1) p_y:
    KL(e_y || m) = -log m_y,
    KL(p || m) = p_y log(p_y / m_y) - (1 - p_y) log(1 - pi1).

  Args:
    logits: [..., K] scores f.
    labels: [...] integer class indices.
    where: boolean mask over the class entries, True = keep.
    dtype: computation dtype.
    pi1: weight of the label distribution, in (0, 1).

  Returns:
    [...] per-example losses.

  References:
    Englesson & Azizpour, "Generalized Jensen-Shannon Divergence Loss for
    Learning with Noisy Labels", arXiv:2105.04522.
  """
  check_number(pi1, "pi1", lambda v: 0 < v < 1, "in (0, 1)")
  x, mask, one_hot, valid = prepare_classification(logits, labels, where, dtype)
  log_p_y = label_value(masked_log_softmax(x, mask), one_hot)
  pi1 = jnp.asarray(pi1, x.dtype)
  log_rest = jnp.log1p(-pi1)
  log_m_y = jnp.logaddexp(jnp.log(pi1), log_rest + log_p_y)
  p_y = jnp.exp(log_p_y)
  kl_label = -log_m_y
  kl_prediction = p_y * (log_p_y - log_m_y) + jnp.expm1(log_p_y) * log_rest
  divergence = pi1 * kl_label + (1 - pi1) * kl_prediction
  return jnp.where(valid, divergence / (-(1 - pi1) * log_rest), 0)


@REGISTRY.register("nce_agce", kind="classification")
def nce_agce(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
    alpha: float = 1.0,
    beta: float = 4.0,
    a: float = 6.0,
    q: float = 1.5,
) -> jax.Array:
  """NCE + asymmetric GCE: alpha NCE + beta ((a + 1)^q - (a + p_y)^q) / q.

  NCE = log p_y / sum_k log p_k. Defaults (alpha, beta, a, q) = (1, 4, 6, 1.5)
  are the CIFAR-10 values of the authors' released configuration
  (github.com/hitcszx/ALFs, config.py, CIFAR10_CONFIG["NCEandAGCE"]; checked);
  its CIFAR-100 values are (10, 0.1, 1.8, 3) and MNIST's (0, 1, 4, 0.2). The
  AGCE term is the released AGCELoss, ((a + 1)^q - (a + p_y)^q) / q. The LDR
  paper's code (github.com/Optimization-AI/ICML2023_LDR, loss.py) uses
  a = 3, q = 1.5 and picks alpha from {0.1, 5, 9.9} with beta = 10 - alpha
  (experiment.py).

  Args:
    logits: [..., K] scores f.
    labels: [...] integer class indices.
    where: boolean mask over the class entries, True = keep.
    dtype: computation dtype.
    alpha: weight of NCE.
    beta: weight of AGCE.
    a: > 0.
    q: > 0.

  Returns:
    [...] per-example losses.

  References:
    Zhou et al., "Asymmetric Loss Functions for Learning with Noisy Labels",
    arXiv:2106.03110.
  """
  check_number(a, "a", lambda v: v > 0, "> 0")
  check_number(q, "q", lambda v: v > 0, "> 0")
  x, mask, one_hot, valid = prepare_classification(logits, labels, where, dtype)
  log_probs = masked_log_softmax(x, mask)
  p_y_minus_1 = jnp.expm1(label_value(log_probs, one_hot))
  agce = -_power_gap(jnp.asarray(a + 1, x.dtype), p_y_minus_1, q) / q
  loss = alpha * normalized_cross_entropy(log_probs, one_hot, mask) + beta * agce
  return jnp.where(valid, loss, 0)


@REGISTRY.register("nce_aul", kind="classification")
def nce_aul(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
    alpha: float = 1.0,
    beta: float = 4.0,
    a: float = 6.3,
    p: float = 1.5,
) -> jax.Array:
  """NCE + asymmetric unhinged loss: alpha NCE + beta ((a - p_y)^p - (a - 1)^p) / p.

  NCE = log p_y / sum_k log p_k. Defaults (alpha, beta, a, p) =
  (1, 4, 6.3, 1.5) are the CIFAR-10 values of the authors' released
  configuration (github.com/hitcszx/ALFs, config.py,
  CIFAR10_CONFIG["NCEandAUL"], whose exponent is called q; checked); its
  CIFAR-100 values are (10, 0.015, 6, 3). The AUL term is the released
  AUELoss, ((a - p_y)^q - (a - 1)^q) / q. The LDR paper's code uses a = 6,
  exponent 1.5 and alpha from {0.1, 5, 9.9} with beta = 10 - alpha.

  Args:
    logits: [..., K] scores f.
    labels: [...] integer class indices.
    where: boolean mask over the class entries, True = keep.
    dtype: computation dtype.
    alpha: weight of NCE.
    beta: weight of AUL.
    a: > 1.
    p: > 0 (the exponent, not a probability).

  Returns:
    [...] per-example losses.

  References:
    Zhou et al., "Asymmetric Loss Functions for Learning with Noisy Labels",
    arXiv:2106.03110.
  """
  check_number(a, "a", lambda v: v > 1, "> 1")
  check_number(p, "p", lambda v: v > 0, "> 0")
  x, mask, one_hot, valid = prepare_classification(logits, labels, where, dtype)
  log_probs = masked_log_softmax(x, mask)
  one_minus_p_y = -jnp.expm1(label_value(log_probs, one_hot))
  aul = _power_gap(jnp.asarray(a - 1, x.dtype), one_minus_p_y, p) / p
  loss = alpha * normalized_cross_entropy(log_probs, one_hot, mask) + beta * aul
  return jnp.where(valid, loss, 0)
