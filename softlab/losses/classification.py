"""Classification losses: the CE family, StableMax CE, robust and sparse losses.

Every loss has the signature `loss(logits, labels, *, where=None, dtype=None,
<hyperparameters>)` and returns one value per example, of shape
`logits.shape[:-1]` (the last axis holds the classes); the caller reduces.

Conventions shared by all of them:
- `labels` are integer class indices of shape `logits.shape[:-1]`, except
  where the name or argument says otherwise (`label_probs`, the multi-label
  losses, the metric losses that take either).
- `where` is a boolean mask over the class entries, broadcastable to `logits`
  (True = keep); logits equal to -inf count as masked. A per-example mask is
  `where[..., None]`. An example whose label class is masked (in particular a
  fully masked row) gets loss 0 and zero gradient.
- `dtype` is the computation dtype, by default float32 or the logits' dtype if
  wider; the losses are returned in it (so bf16 logits give float32 losses).
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike, DTypeLike

from softlab import normalizers
from softlab.losses._common import (
    broadcast_to_logits,
    class_labels,
    class_count,
    label_value,
    logsumexp,
    masked_log_softmax,
    normalized_cross_entropy,
    normalized_focal,
    prepare_classification,
    prepare_logits,
    safe_pow,
)
from softlab.losses._registry import REGISTRY
from softlab.validation import broadcast_to, check_number

__all__ = [
    "asl",
    "multilabel_sparsemax_loss",
    "nce_mae",
    "nfl",
    "nfl_mae",
    "nfl_rce",
    "noisy_softmax_cross_entropy",
    "ovr_squared_hinge",
    "sovr",
    "spherical_z_loss",
    "sum_exp_loss",
    "topk_cross_entropy",
    "dice_metric_loss",
    "drw_class_weights",
    "entmax15_loss",
    "focal_loss",
    "gce",
    "jaccard_metric_loss",
    "ldam",
    "ldam_margins",
    "mae",
    "maxsup_cross_entropy",
    "maxsup_regularizer",
    "mse",
    "nce_rce",
    "poly1_cross_entropy",
    "sce",
    "sigmoid_binary_cross_entropy",
    "soft_cross_entropy",
    "softmax_cross_entropy",
    "sparsemax_loss",
    "squentropy",
    "stablemax_cross_entropy",
    "truncated_gce",
    "z_loss",
]

# ---------------------------------------------------------------------------
# Pieces on prepared arrays (compute dtype, masked entries 0).
# ---------------------------------------------------------------------------


def _one_minus_exp(log_p):
  """1 - exp(log_p), exact for p close to 1."""
  return -jnp.expm1(log_p)


def _maxsup(x, mask):
  """mean_k (max_j x_j - x_k) over the kept classes (0 for a fully masked row).

  Averaging the gaps instead of subtracting the mean from the max keeps the
  value exact when the logits are large and close (no cancellation).
  """
  top = jnp.max(jnp.where(mask, x, -jnp.inf), axis=-1, keepdims=True)
  gaps = jnp.where(mask, jnp.where(mask, top, 0) - x, 0)
  return jnp.sum(gaps, axis=-1) / jnp.maximum(class_count(mask, x.dtype), 1)


def _shifted_by_max(x, mask):
  """x minus its row max over the kept classes (a constant: no gradient); masked 0."""
  top = jax.lax.stop_gradient(jnp.max(jnp.where(mask, x, -jnp.inf), axis=-1, keepdims=True))
  return jnp.where(mask, x - jnp.where(jnp.isfinite(top), top, 0), 0)


def _reverse_cross_entropy(log_p_y, log_zero):
  """RCE with log 0 := log_zero and a one-hot label: -log_zero (1 - p_y)."""
  return -log_zero * _one_minus_exp(log_p_y)


def _fenchel_young(x, mask, one_hot, probs, omega):
  """Fenchel-Young loss <x - x_y, p> - omega(p), p = argmax <x, p> - omega(p).

  omega must vanish at one-hot vectors.
  """
  gaps = jnp.where(mask, x - label_value(x, one_hot)[..., None], 0)
  return jnp.sum(probs * gaps, axis=-1) - omega(probs)


def _targets(labels, x, mask):
  """(per-class targets, valid examples) from integer labels or probabilities."""
  labels = jnp.asarray(labels)
  if jnp.issubdtype(labels.dtype, jnp.integer):
    labels = class_labels(labels, x)
    one_hot = labels[..., None] == jnp.arange(x.shape[-1])
    return one_hot.astype(x.dtype), jnp.any(one_hot & mask, axis=-1)
  return broadcast_to_logits(labels, x, "labels"), jnp.any(mask, axis=-1)


# ---------------------------------------------------------------------------
# Cross-entropy family.
# ---------------------------------------------------------------------------


@REGISTRY.register("softmax_cross_entropy", kind="classification")
def softmax_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
    label_smoothing: float = 0.0,
) -> jax.Array:
  """Softmax cross-entropy with optional label smoothing.

  loss = -sum_k q_k log softmax(z)_k with q = (1 - a) e_y + a / K, K the number
  of kept classes; a = 0 is plain CE, -log softmax(z)_y. Equivalently
  CE + a (z_y - mean_k z_k).

  Args:
    logits: [..., K] scores.
    labels: [...] integer class indices.
    where: boolean mask over the class entries, True = keep.
    dtype: computation dtype.
    label_smoothing: a in [0, 1].

  Returns:
    [...] per-example losses.

  References:
    Szegedy et al., "Rethinking the Inception Architecture for Computer
    Vision" (label smoothing), arXiv:1512.00567.
  """
  check_number(
      label_smoothing, "label_smoothing", lambda a: 0 <= a <= 1, "in [0, 1]"
  )
  x, mask, one_hot, valid = prepare_classification(logits, labels, where, dtype)
  log_probs = masked_log_softmax(x, mask)
  nll = -label_value(log_probs, one_hot)
  count = jnp.maximum(class_count(mask, x.dtype), 1)
  uniform = -jnp.sum(log_probs, axis=-1) / count
  loss = (1 - label_smoothing) * nll + label_smoothing * uniform
  return jnp.where(valid, loss, 0)


@REGISTRY.register("noisy_softmax_cross_entropy", kind="classification",
                   inputs=("key", "step"))
def noisy_softmax_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    key: jax.Array | None = None,
    step: ArrayLike | None = None,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
    alpha: float = 0.1,
    norm_product: ArrayLike | float | None = None,
    anneal_steps: int | None = None,
) -> jax.Array:
  """Noisy Softmax: cross-entropy with noise subtracted from the label's logit.

  loss = -log softmax(z~)_y, z~ = z except z~_y = z_y - n, xi ~ N(0, 1) per
  example (from `key`), alpha_t = alpha (or alpha max(0, 1 - step /
  anneal_steps) with `anneal_steps`), and
    n = alpha_t |W_y| |x| (1 - cos theta_y) |xi| = alpha_t (r_y - z_y) |xi|
  with r_y = |W_y| |x| given as `norm_product` (z_y = r_y cos theta_y for a
  bias-free linear head): the paper's "annealed noise", which shrinks by
  itself as training aligns x with W_y; or, without `norm_product` (a
  trainer that has only the logits), n = alpha_t |xi|, the paper's "free
  noise" ablation. The noise only lowers the label's logit (n >= 0), so the
  loss stays away from saturation longer; in the paper's ablation noise that
  raises it (n = -sigma |xi|) does worse than plain softmax, free and
  amplitude noise slightly better, the annealed noise best. alpha = 0 gives
  softmax cross-entropy exactly; alpha = 0.1 is about the paper's best
  (per the survey below).
  `anneal_steps` (a linear decay of alpha to 0) is softlab's: the paper
  anneals through (1 - cos theta) at a fixed alpha.

  Checked against the paper's Eqs. (5) and (6), read from crops of the
  paper's equations (with its own numbers) in github.com/shunk031/paper-survey
  (images/CV/Noisy_Softmax_..., commit d714077):
    (5) f_y^noise = f_y - alpha |W_y| |X| (1 - cos theta_y) |xi|
    (6) L = -(1/N) sum_i log( e^{f_y^noise} / (sum_{j != y} e^{f_j} + e^{f_y^noise}) )
  which is the annealed form above, exactly (not a first-order expansion).
  The ablation's noise forms (free alpha |xi|, amplitude alpha |W||X||xi|,
  negative -alpha |xi|) and "alpha about 0.1 works best" come from that
  survey's summary, not from the paper's text. Not verified: xi's variance
  (taken as 1, "Gaussian noise" in the summary) and the paper's table of
  alpha values (the paper's text was not reachable here).

  Args:
    logits: [..., K] scores z.
    labels: [...] integer class indices.
    key: PRNG key of the noise (a new one every step); needed when alpha > 0.
    step: the training step, needed with `anneal_steps`.
    where: boolean mask over the class entries, True = keep.
    dtype: computation dtype.
    alpha: >= 0, the noise scale.
    norm_product: [...] (or a number, e.g. the scale s of a cosine head)
      |W_y| |x| per example; None: free noise.
    anneal_steps: > 0: alpha decays linearly to 0 over this many steps.

  Returns:
    [...] per-example losses.

  References:
    Chen, Deng & Du, "Noisy Softmax: Improving the Generalization Ability of
    DCNN via Postponing the Early Softmax Saturation", CVPR 2017,
    arXiv:1708.03769.
  """
  check_number(alpha, "alpha", lambda a: a >= 0, ">= 0")
  if anneal_steps is not None:
    check_number(anneal_steps, "anneal_steps", lambda n: n > 0, "> 0 (or None: no annealing)")
    if step is None:
      raise ValueError("step: required with anneal_steps")
  x, mask, one_hot, valid = prepare_classification(logits, labels, where, dtype)
  if alpha == 0:
    noisy = x
  else:
    if key is None:
      raise ValueError("key: a PRNG key is required when alpha > 0")
    rate = alpha if anneal_steps is None else alpha * jnp.maximum(
        0.0, 1.0 - jnp.asarray(step, x.dtype) / anneal_steps)
    xi = jnp.abs(jax.random.normal(key, valid.shape, x.dtype))
    if norm_product is None:
      amplitude = jnp.ones_like(xi)
    else:
      amplitude = broadcast_to(jnp.asarray(norm_product, x.dtype), valid.shape,
                               name="norm_product") - label_value(jnp.where(mask, x, 0), one_hot)
    noisy = x - jnp.where(one_hot, (rate * amplitude * xi)[..., None], 0)
  nll = -label_value(masked_log_softmax(noisy, mask), one_hot)
  return jnp.where(valid, nll, 0)


@REGISTRY.register("soft_cross_entropy", kind="multilabel")
def soft_cross_entropy(
    logits: ArrayLike,
    label_probs: ArrayLike,
    *,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
) -> jax.Array:
  """Cross-entropy against probability targets: -sum_k q_k log softmax(z)_k.

  Target mass on masked classes is ignored (those entries get weight 0); the
  targets are not renormalized.

  Args:
    logits: [..., K] scores.
    label_probs: [..., K] target probabilities (broadcastable to logits).
    where: boolean mask over the class entries, True = keep.
    dtype: computation dtype.

  Returns:
    [...] per-example losses.
  """
  x, mask = prepare_logits(logits, where, dtype)
  targets = broadcast_to_logits(label_probs, x, "label_probs")
  log_probs = masked_log_softmax(x, mask)
  return -jnp.sum(jnp.where(mask, targets * log_probs, 0), axis=-1)


@REGISTRY.register("stablemax_cross_entropy", kind="classification")
def stablemax_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
) -> jax.Array:
  """StableMax cross-entropy: -log StableMax(z)_y = log sum_k s(z_k) - log s(z_y).

  s(x) = x + 1 for x >= 0 and 1 / (1 - x) for x < 0; this equals the softmax
  cross-entropy of log s(z). The paper computes it in float64, so the default
  `dtype` is float64 when jax_enable_x64 is on and float32 otherwise.

  Args:
    logits: [..., K] scores.
    labels: [...] integer class indices.
    where: boolean mask over the class entries, True = keep.
    dtype: computation dtype (default float64 with x64 enabled, else float32).

  Returns:
    [...] per-example losses.

  References:
    Prieto et al., "Grokking at the Edge of Numerical Stability",
    arXiv:2501.04697.
  """
  if dtype is None:
    dtype = jax.dtypes.canonicalize_dtype(jnp.float64)
  x, mask, one_hot, valid = prepare_classification(logits, labels, where, dtype)
  log_probs = jnp.where(mask, normalizers.log_stablemax(x, where=mask), 0)
  return jnp.where(valid, -label_value(log_probs, one_hot), 0)


@REGISTRY.register("sigmoid_binary_cross_entropy", kind="multilabel")
def sigmoid_binary_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
) -> jax.Array:
  """Sigmoid (multi-label) cross-entropy, summed over the classes of an example.

  loss = -sum_k [y_k log sigmoid(z_k) + (1 - y_k) log sigmoid(-z_k)]. For one
  binary output give logits and labels a trailing axis of size 1.

  Args:
    logits: [..., K] scores.
    labels: [..., K] targets in [0, 1] (broadcastable to logits).
    where: boolean mask over the class entries, True = keep.
    dtype: computation dtype.

  Returns:
    [...] per-example losses.
  """
  x, mask = prepare_logits(logits, where, dtype)
  y = broadcast_to_logits(labels, x, "labels")
  per_class = -(y * jax.nn.log_sigmoid(x) + (1 - y) * jax.nn.log_sigmoid(-x))
  return jnp.sum(jnp.where(mask, per_class, 0), axis=-1)


@REGISTRY.register("focal_loss", kind="classification")
def focal_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
    gamma: float = 2.0,
) -> jax.Array:
  """Softmax focal loss: -(1 - p_y)^gamma log p_y, p = softmax(z).

  The multi-class (softmax) form without the alpha class weight; gamma = 0 is
  cross-entropy. For the sigmoid form see `optax.sigmoid_focal_loss`.

  Args:
    logits: [..., K] scores.
    labels: [...] integer class indices.
    where: boolean mask over the class entries, True = keep.
    dtype: computation dtype.
    gamma: focusing parameter >= 0.

  Returns:
    [...] per-example losses.

  References:
    Lin et al., "Focal Loss for Dense Object Detection", arXiv:1708.02002.
  """
  check_number(gamma, "gamma", lambda g: g >= 0, ">= 0")
  x, mask, one_hot, valid = prepare_classification(logits, labels, where, dtype)
  log_p_y = label_value(masked_log_softmax(x, mask), one_hot)
  loss = -safe_pow(_one_minus_exp(log_p_y), gamma) * log_p_y
  return jnp.where(valid, loss, 0)


@REGISTRY.register("poly1_cross_entropy", kind="classification")
def poly1_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
    epsilon: float = 1.0,
) -> jax.Array:
  """Poly-1 loss: -log p_y + epsilon (1 - p_y), p = softmax(z).

  Args:
    logits: [..., K] scores.
    labels: [...] integer class indices.
    where: boolean mask over the class entries, True = keep.
    dtype: computation dtype.
    epsilon: weight of the first polynomial term (0 gives cross-entropy).

  Returns:
    [...] per-example losses.

  References:
    Leng et al., "PolyLoss: A Polynomial Expansion Perspective of
    Classification Loss Functions", arXiv:2204.12511.
  """
  x, mask, one_hot, valid = prepare_classification(logits, labels, where, dtype)
  log_p_y = label_value(masked_log_softmax(x, mask), one_hot)
  return jnp.where(valid, -log_p_y + epsilon * _one_minus_exp(log_p_y), 0)


@REGISTRY.register("squentropy", kind="classification")
def squentropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
) -> jax.Array:
  """Squentropy: -log p_y + (1 / (K - 1)) sum_{k != y} z_k^2.

  Cross-entropy plus the average square loss of the raw logits of the
  incorrect classes against target 0; K counts the kept classes (the square
  term is 0 when only the label's class is kept).

  Args:
    logits: [..., K] scores.
    labels: [...] integer class indices.
    where: boolean mask over the class entries, True = keep.
    dtype: computation dtype.

  Returns:
    [...] per-example losses.

  References:
    Hui, Belkin & Wright, "Cut your Losses with Squentropy",
    arXiv:2302.03952.
  """
  x, mask, one_hot, valid = prepare_classification(logits, labels, where, dtype)
  nll = -label_value(masked_log_softmax(x, mask), one_hot)
  others = mask & ~one_hot
  squares = jnp.sum(jnp.where(others, x * x, 0), axis=-1)
  square_loss = squares / jnp.maximum(class_count(others, x.dtype), 1)
  return jnp.where(valid, nll + square_loss, 0)


@REGISTRY.register("maxsup_regularizer", kind="regularizer")
def maxsup_regularizer(
    logits: ArrayLike,
    *,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
) -> jax.Array:
  """MaxSup penalty: max_k z_k - (1/K) sum_k z_k over the kept classes.

  Label smoothing with weight a equals CE + a (z_y - mean_k z_k); MaxSup
  replaces the true-class logit z_y by the top-1 logit, so it never rewards a
  confident wrong prediction. The coefficient is applied by the caller (see
  `maxsup_cross_entropy`). It needs no labels, so it takes none.

  Args:
    logits: [..., K] scores.
    where: boolean mask over the class entries, True = keep.
    dtype: computation dtype.

  Returns:
    [...] per-example penalties (>= 0; 0 for a fully masked row).

  References:
    Zhou et al., "MaxSup: Overcoming Representation Collapse in Label
    Smoothing", arXiv:2502.20433.
  """
  x, mask = prepare_logits(logits, where, dtype)
  return _maxsup(x, mask)


@REGISTRY.register("maxsup_cross_entropy", kind="classification")
def maxsup_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
    alpha: float = 0.1,
) -> jax.Array:
  """MaxSup loss: -log p_y + alpha (max_k z_k - mean_k z_k).

  Equal to label-smoothed CE with smoothing alpha whenever the label is the
  top-1 class. alpha = 0.1 matches the usual label-smoothing weight the paper
  compares against.

  Args:
    logits: [..., K] scores.
    labels: [...] integer class indices.
    where: boolean mask over the class entries, True = keep.
    dtype: computation dtype.
    alpha: weight of the MaxSup penalty.

  Returns:
    [...] per-example losses.

  References:
    Zhou et al., "MaxSup: Overcoming Representation Collapse in Label
    Smoothing", arXiv:2502.20433.
  """
  x, mask, one_hot, valid = prepare_classification(logits, labels, where, dtype)
  nll = -label_value(masked_log_softmax(x, mask), one_hot)
  return jnp.where(valid, nll + alpha * _maxsup(x, mask), 0)


@REGISTRY.register("z_loss", kind="regularizer")
def z_loss(
    logits: ArrayLike,
    *,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
) -> jax.Array:
  """Z-loss auxiliary term: (log sum_k exp z_k)^2.

  Pushes the softmax normalizer towards 1. The coefficient (PaLM: 1e-4) is
  applied by the caller.

  Args:
    logits: [..., K] scores.
    where: boolean mask over the class entries, True = keep.
    dtype: computation dtype.

  Returns:
    [...] per-example values (0 for a fully masked row).

  References:
    Chowdhery et al., "PaLM: Scaling Language Modeling with Pathways",
    arXiv:2204.02311.
  """
  x, mask = prepare_logits(logits, where, dtype)
  valid = jnp.any(mask, axis=-1)
  return jnp.where(valid, logsumexp(x, where=mask), 0) ** 2


@REGISTRY.register("topk_cross_entropy", kind="classification")
def topk_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
    k: int = 5,
) -> jax.Array:
  """Top-k (sparse-softmax) cross-entropy: log sum_{j in T} exp z_j - z_y.

  T = the k largest kept logits (ties at the k-th place to the lower index, as
  `softlab.normalizers.topk_softmax`) together with the label's class: the
  cross-entropy of the top-k softmax with the label always in its support.
  Leaving classes out of the sum can only lower it, so it is <= CE, with
  equality when k >= the number of kept classes. Only the k + 1 selected
  logits get gradients.

  Args:
    logits: [..., K] scores.
    labels: [...] integer class indices.
    where: boolean mask over the class entries, True = keep.
    dtype: computation dtype.
    k: number of largest logits kept (a positive Python int); the default 5
      is ours (the paper sets k per task).

  Returns:
    [...] per-example losses (>= 0).

  References:
    Sun et al., "Sparse-softmax: A Simpler and Faster Alternative Softmax
    Transformation", arXiv:2112.12433.
  """
  x, mask, one_hot, valid = prepare_classification(logits, labels, where, dtype)
  support = normalizers.top_k_mask(x, mask, -1, k) | (one_hot & mask)
  return jnp.where(valid, -label_value(masked_log_softmax(x, support), one_hot), 0)


@REGISTRY.register("spherical_z_loss", kind="classification")
def spherical_z_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
    a: float = 0.1,
    b: float = 10.0,
) -> jax.Array:
  """Spherical-family Z-loss: softplus(a (b - z_y)) / a, z = standardized logits.

  z_k = (o_k - mean(o)) / std(o) over the kept classes (population std); a
  row whose kept logits are all equal has z = 0. The loss depends on the
  logits only through sum_k o_k, sum_k o_k^2 and o_y (the spherical family),
  and is invariant to adding a constant to every logit and to multiplying
  them by a positive number. b is where the softplus bends: z_y > b is
  hardly penalized (z_y <= sqrt(K - 1)); a sets how sharply. The paper tunes
  (a, b) per task; a = 0.1, b = 10 are softlab's, not the paper's.
  Not `z_loss` (PaLM's (log Z)^2 regularizer): a different loss that shares
  the name.

  Checked against: the form L = (1/a) log(1 + exp(a (b - z_c))) with
  mu = (1/D) sum_k o_k, sigma^2 = (1/D) sum_k o_k^2 - mu^2 (population std)
  as written out in third-party summaries of arXiv:1604.08859
  (emergentmind.com topics "z-loss" and "scale-and-shift-invariant-loss-ssil");
  it matches. Not verified: the paper's equation and section numbers and its
  tuned (a, b) (the paper's text was not reachable here; its authors'
  released code, github.com/adbrebs/factored_output_layer, holds the
  spherical-family output layer but no Z-loss).

  Args:
    logits: [..., K] pre-activations o.
    labels: [...] integer class indices.
    where: boolean mask over the class entries, True = keep.
    dtype: computation dtype.
    a: > 0, the softplus sharpness.
    b: the softplus location.

  Returns:
    [...] per-example losses (> 0).

  References:
    de Brebisson & Vincent, "The Z-loss: a shift and scale invariant
    classification loss belonging to the Spherical Family", arXiv:1604.08859;
    "An Exploration of Softmax Alternatives Belonging
    to the Spherical Loss Family", arXiv:1511.05042.
  """
  check_number(a, "a", lambda v: v > 0, "> 0")
  x, mask, one_hot, valid = prepare_classification(logits, labels, where, dtype)
  count = jnp.maximum(class_count(mask, x.dtype), 1)
  shifted = _shifted_by_max(x, mask)  # exact differences when |o| ~ 1e4 and close
  mean = jnp.sum(shifted, axis=-1, keepdims=True) / count[..., None]
  centered = jnp.where(mask, shifted - mean, 0)
  variance = jnp.sum(centered * centered, axis=-1) / count
  constant = variance == 0  # not variance > 0: a NaN variance (NaN logits) stays NaN
  z_y = label_value(centered, one_hot) * jax.lax.rsqrt(jnp.where(constant, 1, variance))
  loss = jax.nn.softplus(a * (b - jnp.where(constant, 0, z_y))) / a
  return jnp.where(valid, loss, 0)


@REGISTRY.register("sum_exp_loss", kind="classification")
def sum_exp_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
) -> jax.Array:
  """Sum-exponential loss: sum_{k != y} exp(z_k - z_y) = 1 / p_y - 1.

  The exponential member of the comp-sum family Phi(sum_{k != y}
  exp(z_k - z_y)) (Phi(u) = u; log(1 + u) gives cross-entropy). Computed as
  exp(m - z_y) sum_{k != y} exp(z_k - m), m = max_{k != y} z_k, which keeps
  small values (1 / p_y - 1 ~ 1e-13) exact; it is the exponential of the
  margin, so it overflows to inf when the label's logit trails the others by
  more than about 88 (float32).

  Args:
    logits: [..., K] scores.
    labels: [...] integer class indices.
    where: boolean mask over the class entries, True = keep.
    dtype: computation dtype.

  Returns:
    [...] per-example losses (>= 0).

  References:
    Mao, Mohri & Zhong, "Cross-Entropy Loss Functions: Theoretical Analysis
    and Applications", arXiv:2304.07288 (comp-sum losses, tau = 0).
  """
  x, mask, one_hot, valid = prepare_classification(logits, labels, where, dtype)
  others = mask & ~one_hot
  any_other = jnp.any(others, axis=-1)
  total = jnp.sum(jnp.where(others, jnp.exp(_shifted_by_max(x, others)), 0), axis=-1)
  top = jnp.max(jnp.where(others, x, -jnp.inf), axis=-1)
  y_minus_m = label_value(x, one_hot) - jax.lax.stop_gradient(jnp.where(any_other, top, 0))
  return jnp.where(valid & any_other, jnp.exp(-y_minus_m) * total, 0)


def _one_vs_rest_logistic(x, mask, one_hot):
  """-log sigmoid(z_y) - sum_{k != y} log sigmoid(-z_k) over the kept classes."""
  signed = jnp.where(one_hot, -x, x)
  return jnp.sum(jnp.where(mask, jax.nn.softplus(signed), 0), axis=-1)


@REGISTRY.register("sovr", kind="classification")
def sovr(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
    switch_fraction: float = 0.4,
) -> jax.Array:
  """Switching one-vs-rest: OvR logistic loss on the smallest-margin examples, CE elsewhere.

  margin = z_y - max_{k != y} z_k (no gradient). The ceil(f N) examples with
  the smallest margins among the N valid ones of the call (all leading axes
  together; ties to the lower flat index) get the one-vs-rest loss
  -log sigmoid(z_y) - sum_{k != y} log sigmoid(-z_k), the others softmax
  cross-entropy. f = 0 gives CE, f = 1 one-vs-rest. The values therefore
  depend on the whole batch: a valid example with NaN (or +inf) logits makes
  every valid example's loss NaN.

  Checked against: the abstracts of arXiv:2207.10283 v2 / v3 and of its
  ICLR 2023 submission (openreview IVE5g1af87): SOVR switches from
  cross-entropy to the one-vs-the-rest loss for the samples with small
  logit margins (true label's logit against the others'); that matches.
  Not verified (the stored copies of the paper stop after its abstract and
  the start of its introduction, and no released code was found): the
  equation numbers, whether the switch takes a fixed share of each
  minibatch (as here) or a margin threshold, the margin's exact form (here
  against the largest other logit), the one-vs-rest loss's normalization
  (here a plain sum over classes), and the default f = 0.4, which is
  softlab's guess, not a value read in the paper.

  Args:
    logits: [..., K] scores.
    labels: [...] integer class indices.
    where: boolean mask over the class entries, True = keep.
    dtype: computation dtype.
    switch_fraction: f in [0, 1].

  Returns:
    [...] per-example losses.

  References:
    Kanai et al., "Switching One-Versus-the-Rest Loss to Increase the Margin
    of Logits for Adversarial Robustness", arXiv:2207.10283.
  """
  check_number(switch_fraction, "switch_fraction", lambda f: 0 <= f <= 1, "in [0, 1]")
  x, mask, one_hot, valid = prepare_classification(logits, labels, where, dtype)
  cross_entropy = -label_value(masked_log_softmax(x, mask), one_hot)
  one_vs_rest = _one_vs_rest_logistic(x, mask, one_hot)
  others = jnp.max(jnp.where(mask & ~one_hot, x, -jnp.inf), axis=-1)
  margin = jax.lax.stop_gradient(label_value(x, one_hot) - others)
  flat = jnp.where(valid, margin, jnp.inf).reshape(-1)
  rank = jnp.zeros(flat.shape, jnp.int32).at[jnp.argsort(flat, stable=True)].set(
      jnp.arange(flat.size, dtype=jnp.int32))
  switched = rank.reshape(margin.shape) < jnp.ceil(
      switch_fraction * jnp.sum(valid, dtype=x.dtype))
  # A NaN margin has no rank, so which examples switch is undefined: NaN for all.
  # (From the logits: a margin is +inf, and ranked last, with one kept class.)
  unranked = normalizers.nonfinite_rows(x, mask & valid[..., None], tuple(range(x.ndim)))[..., 0]
  return jnp.where(valid, jnp.where(switched, one_vs_rest, cross_entropy) - unranked, 0)


# ---------------------------------------------------------------------------
# Noise-robust losses.
# ---------------------------------------------------------------------------


@REGISTRY.register("gce", kind="classification")
def gce(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
    q: float = 0.7,
) -> jax.Array:
  """Generalized cross-entropy: (1 - p_y^q) / q, p = softmax(z).

  q -> 0 gives cross-entropy, q = 1 gives MAE / 2.

  Args:
    logits: [..., K] scores.
    labels: [...] integer class indices.
    where: boolean mask over the class entries, True = keep.
    dtype: computation dtype.
    q: in (0, 1].

  Returns:
    [...] per-example losses.

  References:
    Zhang & Sabuncu, "Generalized Cross Entropy Loss for Training Deep
    Neural Networks with Noisy Labels", arXiv:1805.07836.
  """
  check_number(q, "q", lambda v: 0 < v <= 1, "in (0, 1]")
  x, mask, one_hot, valid = prepare_classification(logits, labels, where, dtype)
  log_p_y = label_value(masked_log_softmax(x, mask), one_hot)
  return jnp.where(valid, _one_minus_exp(q * log_p_y) / q, 0)


@REGISTRY.register("truncated_gce", kind="classification")
def truncated_gce(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
    q: float = 0.7,
    k: float = 0.5,
) -> jax.Array:
  """Truncated GCE: (1 - max(p_y, k)^q) / q.

  Examples with p_y <= k contribute the constant (1 - k^q) / q and no
  gradient. This is the per-example truncated loss; the paper's periodic
  pruning (re-deciding which examples are truncated every few epochs) is the
  trainer's business.

  Args:
    logits: [..., K] scores.
    labels: [...] integer class indices.
    where: boolean mask over the class entries, True = keep.
    dtype: computation dtype.
    q: in (0, 1].
    k: truncation threshold in (0, 1).

  Returns:
    [...] per-example losses.

  References:
    Zhang & Sabuncu, "Generalized Cross Entropy Loss for Training Deep
    Neural Networks with Noisy Labels", arXiv:1805.07836.
  """
  check_number(q, "q", lambda v: 0 < v <= 1, "in (0, 1]")
  check_number(k, "k", lambda v: 0 < v < 1, "in (0, 1)")
  x, mask, one_hot, valid = prepare_classification(logits, labels, where, dtype)
  log_p_y = label_value(masked_log_softmax(x, mask), one_hot)
  truncated = jnp.maximum(log_p_y, jnp.log(jnp.asarray(k, x.dtype)))
  return jnp.where(valid, _one_minus_exp(q * truncated) / q, 0)


@REGISTRY.register("sce", kind="classification")
def sce(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
    alpha: float = 0.1,
    beta: float = 1.0,
    log_zero: float = -4.0,
) -> jax.Array:
  """Symmetric cross-entropy: alpha CE + beta RCE, RCE = -log_zero (1 - p_y).

  RCE = -sum_k p_k log q_k with the one-hot label q and log 0 := log_zero (the
  paper's A = -4). alpha = 0.1, beta = 1 are the paper's CIFAR-10 values.

  Args:
    logits: [..., K] scores.
    labels: [...] integer class indices.
    where: boolean mask over the class entries, True = keep.
    dtype: computation dtype.
    alpha: weight of cross-entropy.
    beta: weight of reverse cross-entropy.
    log_zero: the value A that stands in for log 0 (< 0).

  Returns:
    [...] per-example losses.

  References:
    Wang et al., "Symmetric Cross Entropy for Robust Learning with Noisy
    Labels", arXiv:1908.06112.
  """
  x, mask, one_hot, valid = prepare_classification(logits, labels, where, dtype)
  log_p_y = label_value(masked_log_softmax(x, mask), one_hot)
  loss = -alpha * log_p_y + beta * _reverse_cross_entropy(log_p_y, log_zero)
  return jnp.where(valid, loss, 0)


@REGISTRY.register("nce_rce", kind="classification")
def nce_rce(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
    alpha: float = 1.0,
    beta: float = 1.0,
    log_zero: float = -4.0,
) -> jax.Array:
  """Active-passive loss NCE+RCE: alpha NCE + beta RCE, RCE = -log_zero (1 - p_y).

  NCE = log p_y / sum_k log p_k (normalized CE, in [0, 1]). alpha = beta = 1
  are the paper's CIFAR-10 values (the released configs' alpha = beta = 1
  in the released RCE scale, below).
  RCE = -sum_k p_k log q_k with the one-hot label q and log 0 := A =
  `log_zero`: RCE = -A (1 - p_y). The default A = -4 is the SCE paper's
  (arXiv:1908.06112), whose RCE the APL paper takes over (its text could not
  be read here to check whether it restates A; the released
  NormalizedReverseCrossEntropy's 1/4 factor points to A = -4). The released APL
  code (github.com/HanxunH/Active-Passive-Losses, loss.py,
  ReverseCrossEntropy) clamps the one-hot label at 1e-4 instead, i.e.
  A = log(1e-4) = -9.2103, so its RCE is 2.3026 times this one: its beta = 1
  is beta = 2.3026 here, or `log_zero=math.log(1e-4)` with the same beta (this
  function's beta = 1 is its beta = 0.434). It also clamps p at 1e-7, which
  adds 9.21 sum_{k != y} max(1e-7 - p_k, 0) (below 8.3e-6 with 10 classes);
  softlab does not clamp.

  Args:
    logits: [..., K] scores.
    labels: [...] integer class indices.
    where: boolean mask over the class entries, True = keep.
    dtype: computation dtype.
    alpha: weight of NCE.
    beta: weight of RCE.
    log_zero: the value A that stands in for log 0 (< 0).

  Returns:
    [...] per-example losses.

  References:
    Ma et al., "Normalized Loss Functions for Deep Learning with Noisy
    Labels", arXiv:2006.13554.
  """
  x, mask, one_hot, valid = prepare_classification(logits, labels, where, dtype)
  log_probs = masked_log_softmax(x, mask)
  nce = normalized_cross_entropy(log_probs, one_hot, mask)
  rce = _reverse_cross_entropy(label_value(log_probs, one_hot), log_zero)
  return jnp.where(valid, alpha * nce + beta * rce, 0)


def _apl_parts(logits, labels, where, dtype, gamma, detach_focal_weights=False):
  """(NFL, log p_y, valid): the APL losses' terms (RCE and MAE are functions of p_y)."""
  x, mask, one_hot, valid = prepare_classification(logits, labels, where, dtype)
  log_probs = masked_log_softmax(x, mask)
  nfl_value = normalized_focal(log_probs, one_hot, mask, gamma, detach_focal_weights)
  return nfl_value, label_value(log_probs, one_hot), valid


@REGISTRY.register("nfl", kind="classification")
def nfl(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
    gamma: float = 0.5,
    detach_focal_weights: bool = False,
) -> jax.Array:
  """Normalized focal loss: FL_y / sum_k FL_k, FL_k = -(1 - p_k)^gamma log p_k.

  The focal loss normalized over all labels (the paper's normalization,
  Eq. 3, applied to the focal loss): in [0, 1], robust to symmetric noise,
  an "active" loss. gamma = 0 gives NCE; gamma = 0.5 is the paper's value.
  Values equal the released NormalizedFocalLoss (github.com/HanxunH/
  Active-Passive-Losses, loss.py); its gradient differs: it treats the
  factors (1 - p_k)^gamma as constants (it takes them from `.data`),
  softlab's is the gradient of the loss. `detach_focal_weights=True` gives
  the released gradient.

  Args:
    logits: [..., K] scores.
    labels: [...] integer class indices.
    where: boolean mask over the class entries, True = keep.
    dtype: computation dtype.
    gamma: focusing parameter >= 0.
    detach_focal_weights: no gradient through (1 - p_k)^gamma (the released code's).

  Returns:
    [...] per-example losses in [0, 1].

  References:
    Ma et al., "Normalized Loss Functions for Deep Learning with Noisy
    Labels", arXiv:2006.13554.
  """
  check_number(gamma, "gamma", lambda g: g >= 0, ">= 0")
  value, _, valid = _apl_parts(logits, labels, where, dtype, gamma, detach_focal_weights)
  return jnp.where(valid, value, 0)


@REGISTRY.register("nce_mae", kind="classification")
def nce_mae(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
    alpha: float = 1.0,
    beta: float = 1.0,
) -> jax.Array:
  """Active-passive loss NCE+MAE: alpha NCE + beta MAE, MAE = 2 (1 - p_y).

  NCE = log p_y / sum_k log p_k; MAE = sum_k |p_k - e_y,k| as the paper
  defines it. The APL code's MeanAbsoluteError is the "reduced" 1 - p_y, so
  its beta is twice the beta here. alpha = beta = 1 are the CIFAR-10 values
  (also in github.com/hitcszx/ALFs, config.py; CIFAR-100: alpha = 10,
  beta = 1).

  Args:
    logits: [..., K] scores.
    labels: [...] integer class indices.
    where: boolean mask over the class entries, True = keep.
    dtype: computation dtype.
    alpha: weight of NCE.
    beta: weight of MAE.

  Returns:
    [...] per-example losses.

  References:
    Ma et al., "Normalized Loss Functions for Deep Learning with Noisy
    Labels", arXiv:2006.13554.
  """
  value, log_p_y, valid = _apl_parts(logits, labels, where, dtype, 0.0)
  return jnp.where(valid, alpha * value + beta * 2 * _one_minus_exp(log_p_y), 0)


@REGISTRY.register("nfl_rce", kind="classification")
def nfl_rce(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
    alpha: float = 1.0,
    beta: float = 1.0,
    gamma: float = 0.5,
    log_zero: float = -4.0,
    detach_focal_weights: bool = False,
) -> jax.Array:
  """Active-passive loss NFL+RCE: alpha NFL + beta RCE, RCE = -log_zero (1 - p_y).

  NFL as in `nfl` (`detach_focal_weights`: the released gradient), RCE as in
  `nce_rce`: A = `log_zero` = -4 by default, the released code's RCE is
  A = log(1e-4) with p clamped at 1e-7 (its beta = 1 is beta = 2.3026 here).
  alpha = beta = 1, gamma = 0.5 are the paper's CIFAR-10 values.

  Args:
    logits: [..., K] scores.
    labels: [...] integer class indices.
    where: boolean mask over the class entries, True = keep.
    dtype: computation dtype.
    alpha: weight of NFL.
    beta: weight of RCE.
    gamma: NFL's focusing parameter >= 0.
    log_zero: the value A that stands in for log 0 (< 0).
    detach_focal_weights: as in `nfl`.

  Returns:
    [...] per-example losses.

  References:
    Ma et al., "Normalized Loss Functions for Deep Learning with Noisy
    Labels", arXiv:2006.13554.
  """
  check_number(gamma, "gamma", lambda g: g >= 0, ">= 0")
  value, log_p_y, valid = _apl_parts(logits, labels, where, dtype, gamma, detach_focal_weights)
  rce = _reverse_cross_entropy(log_p_y, log_zero)
  return jnp.where(valid, alpha * value + beta * rce, 0)


@REGISTRY.register("nfl_mae", kind="classification")
def nfl_mae(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
    alpha: float = 1.0,
    beta: float = 1.0,
    gamma: float = 0.5,
    detach_focal_weights: bool = False,
) -> jax.Array:
  """Active-passive loss NFL+MAE: alpha NFL + beta MAE, MAE = 2 (1 - p_y).

  NFL as in `nfl` (`detach_focal_weights`: the released gradient), MAE as in
  `nce_mae` (twice the APL code's 1 - p_y). alpha = beta = 1, gamma = 0.5 are
  the paper's CIFAR-10 values.

  Args:
    logits: [..., K] scores.
    labels: [...] integer class indices.
    where: boolean mask over the class entries, True = keep.
    dtype: computation dtype.
    alpha: weight of NFL.
    beta: weight of MAE.
    gamma: NFL's focusing parameter >= 0.
    detach_focal_weights: as in `nfl`.

  Returns:
    [...] per-example losses.

  References:
    Ma et al., "Normalized Loss Functions for Deep Learning with Noisy
    Labels", arXiv:2006.13554.
  """
  check_number(gamma, "gamma", lambda g: g >= 0, ">= 0")
  value, log_p_y, valid = _apl_parts(logits, labels, where, dtype, gamma, detach_focal_weights)
  return jnp.where(valid, alpha * value + beta * 2 * _one_minus_exp(log_p_y), 0)


@REGISTRY.register("mae", kind="classification")
def mae(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
) -> jax.Array:
  """Mean absolute error on probabilities: sum_k |p_k - e_y,k| = 2 (1 - p_y).

  Args:
    logits: [..., K] scores.
    labels: [...] integer class indices.
    where: boolean mask over the class entries, True = keep.
    dtype: computation dtype.

  Returns:
    [...] per-example losses in [0, 2].

  References:
    Ghosh, Kumar & Sastry, "Robust Loss Functions under Label Noise for Deep
    Neural Networks", arXiv:1712.09482.
  """
  x, mask, one_hot, valid = prepare_classification(logits, labels, where, dtype)
  log_p_y = label_value(masked_log_softmax(x, mask), one_hot)
  return jnp.where(valid, 2 * _one_minus_exp(log_p_y), 0)


@REGISTRY.register("mse", kind="classification")
def mse(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
) -> jax.Array:
  """Squared error on probabilities: sum_k (p_k - e_y,k)^2, p = softmax(z).

  Args:
    logits: [..., K] scores.
    labels: [...] integer class indices.
    where: boolean mask over the class entries, True = keep.
    dtype: computation dtype.

  Returns:
    [...] per-example losses in [0, 2].

  References:
    Ghosh, Kumar & Sastry, "Robust Loss Functions under Label Noise for Deep
    Neural Networks", arXiv:1712.09482.
  """
  x, mask, one_hot, valid = prepare_classification(logits, labels, where, dtype)
  log_probs = masked_log_softmax(x, mask)
  probs = normalizers.softmax(x, where=mask)
  others = jnp.sum(jnp.where(one_hot, 0, probs * probs), axis=-1)
  label_term = _one_minus_exp(label_value(log_probs, one_hot)) ** 2
  return jnp.where(valid, label_term + others, 0)


# ---------------------------------------------------------------------------
# SVM heads.
# ---------------------------------------------------------------------------


@REGISTRY.register("ovr_squared_hinge", kind="classification")
def ovr_squared_hinge(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
) -> jax.Array:
  """One-vs-rest L2-SVM loss: sum_k max(0, 1 - t_k z_k)^2, t_k = +1 at the label, -1 elsewhere.

  The squared hinge of K binary SVMs on the logits, the head of the CNN-SVM
  and GRU-SVM papers (after Tang's L2-SVM); their weight penalty ||w||^2 / 2
  belongs to the optimizer (weight decay), not here.

  Args:
    logits: [..., K] scores.
    labels: [...] integer class indices.
    where: boolean mask over the class entries, True = keep.
    dtype: computation dtype.

  Returns:
    [...] per-example losses (>= 0).

  References:
    Agarap, "An Architecture Combining Convolutional Neural Network (CNN) and
    Support Vector Machine (SVM) for Image Classification", arXiv:1712.03541;
    Agarap, "A Neural Network Architecture Combining Gated Recurrent Unit
    (GRU) and Support Vector Machine (SVM) for Intrusion Detection",
    arXiv:1709.03082; Tang, "Deep Learning using Linear Support Vector
    Machines", arXiv:1306.0239.
  """
  x, mask, one_hot, valid = prepare_classification(logits, labels, where, dtype)
  hinges = jax.nn.relu(1 - jnp.where(one_hot, x, -x))
  return jnp.where(valid, jnp.sum(jnp.where(mask, hinges * hinges, 0), axis=-1), 0)


# ---------------------------------------------------------------------------
# Class imbalance and multi-label.
# ---------------------------------------------------------------------------


def _check_class_counts(class_counts) -> np.ndarray:
  counts = np.asarray(class_counts, np.float64)
  if counts.ndim != 1 or counts.size == 0 or not np.all(counts > 0):
    raise ValueError(
        "class_counts must be a non-empty 1-D array of positive counts, got"
        f" shape {counts.shape}"
    )
  return counts


def ldam_margins(
    class_counts: ArrayLike, *, max_margin: float = 0.5
) -> jax.Array:
  """LDAM per-class margins: Delta_j = C / n_j^(1/4), largest = max_margin.

  Args:
    class_counts: [K] training examples per class (> 0).
    max_margin: the largest margin (the rarest class's).

  Returns:
    [K] float32 margins for `ldam`.

  References:
    Cao et al., "Learning Imbalanced Datasets with Label-Distribution-Aware
    Margin Loss", arXiv:1906.07413.
  """
  margins = _check_class_counts(class_counts) ** -0.25
  return jnp.asarray(margins * (max_margin / margins.max()), jnp.float32)


def drw_class_weights(
    class_counts: ArrayLike, *, beta: float = 0.9999
) -> jax.Array:
  """Deferred re-weighting weights: w_j ~ (1 - beta) / (1 - beta^n_j), summing to K.

  The inverse effective number of samples per class. LDAM-DRW multiplies each
  example's loss by w_{y} after the first learning-rate decay (the caller does
  the multiplication and the deferral).

  Args:
    class_counts: [K] training examples per class (> 0).
    beta: in [0, 1); 0 gives equal weights, beta -> 1 inverse frequency.

  Returns:
    [K] float32 weights summing to K.

  References:
    Cui et al., "Class-Balanced Loss Based on Effective Number of Samples",
    arXiv:1901.05555; Cao et al., arXiv:1906.07413.
  """
  check_number(beta, "beta", lambda b: 0 <= b < 1, "in [0, 1)")
  counts = _check_class_counts(class_counts)
  weights = (1 - beta) / (1 - beta**counts)
  return jnp.asarray(weights * (counts.size / weights.sum()), jnp.float32)


@REGISTRY.register("ldam", kind="classification")
def ldam(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    margins: ArrayLike,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
    scale: float = 30.0,
) -> jax.Array:
  """LDAM loss: softmax CE of s (z - Delta_y e_y).

  The label's logit is lowered by its class margin before scaling. The paper
  feeds cosine logits (normalized features and weights), hence s = 30. For
  LDAM-DRW multiply by `drw_class_weights(...)[labels]`.

  Args:
    logits: [..., K] scores.
    labels: [...] integer class indices.
    margins: per-class margins broadcastable to logits, usually [K] from
      `ldam_margins`.
    where: boolean mask over the class entries, True = keep.
    dtype: computation dtype.
    scale: s.

  Returns:
    [...] per-example losses.

  References:
    Cao et al., "Learning Imbalanced Datasets with Label-Distribution-Aware
    Margin Loss", arXiv:1906.07413.
  """
  x, mask, one_hot, valid = prepare_classification(logits, labels, where, dtype)
  margins = broadcast_to_logits(margins, x, "margins")
  shifted = scale * (x - jnp.where(one_hot, margins, 0))
  log_p_y = label_value(masked_log_softmax(shifted, mask), one_hot)
  return jnp.where(valid, -log_p_y, 0)


@REGISTRY.register("asl", kind="multilabel")
def asl(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
    gamma_pos: float = 0.0,
    gamma_neg: float = 4.0,
    clip: float = 0.05,
) -> jax.Array:
  """Asymmetric loss (multi-label), summed over the classes of an example.

  With p = sigmoid(z) and the shifted probability p_m = max(p - clip, 0):
  loss = -sum_k [y_k (1 - p_k)^gamma_pos log p_k
                 + (1 - y_k) p_m,k^gamma_neg log(1 - p_m,k)].
  The focusing weights carry gradients (the paper's formula; its code can
  detach them). log(1 - p_m) = min(log(sigmoid(-z) + clip), 0) stays finite
  for every finite z, also with clip = 0.

  Args:
    logits: [..., K] scores.
    labels: [..., K] targets in [0, 1] (broadcastable to logits).
    where: boolean mask over the class entries, True = keep.
    dtype: computation dtype.
    gamma_pos: focusing parameter of the positives (>= 0).
    gamma_neg: focusing parameter of the negatives (>= 0).
    clip: probability margin of the negatives, in [0, 1).

  Returns:
    [...] per-example losses.

  References:
    Ridnik et al., "Asymmetric Loss For Multi-Label Classification",
    arXiv:2009.14119.
  """
  check_number(clip, "clip", lambda c: 0 <= c < 1, "in [0, 1)")
  x, mask = prepare_logits(logits, where, dtype)
  y = broadcast_to_logits(labels, x, "labels")
  clip = jnp.asarray(clip, x.dtype)
  log_p = jax.nn.log_sigmoid(x)
  log_not_shifted = jnp.minimum(
      jnp.logaddexp(jax.nn.log_sigmoid(-x), jnp.log(clip)), 0
  )
  shifted = jnp.maximum(jax.nn.sigmoid(x) - clip, 0)
  positive = safe_pow(jax.nn.sigmoid(-x), gamma_pos) * log_p
  negative = safe_pow(shifted, gamma_neg) * log_not_shifted
  per_class = -(y * positive + (1 - y) * negative)
  return jnp.sum(jnp.where(mask, per_class, 0), axis=-1)


# ---------------------------------------------------------------------------
# Sparse (Fenchel-Young) and set-overlap losses.
# ---------------------------------------------------------------------------


@REGISTRY.register("sparsemax_loss", kind="classification")
def sparsemax_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
) -> jax.Array:
  """Sparsemax loss, the Fenchel-Young loss of sparsemax.

  loss = sum_k p_k (z_k - z_y) - (||p||^2 - 1) / 2 with p = sparsemax(z);
  its gradient is p - e_y and it is 0 exactly when p = e_y.

  Args:
    logits: [..., K] scores.
    labels: [...] integer class indices.
    where: boolean mask over the class entries, True = keep.
    dtype: computation dtype.

  Returns:
    [...] per-example losses (>= 0).

  References:
    Martins & Astudillo, "From Softmax to Sparsemax", arXiv:1602.02068.
  """
  x, mask, one_hot, valid = prepare_classification(logits, labels, where, dtype)
  probs = normalizers.sparsemax(x, where=mask)
  omega = lambda p: (jnp.sum(p * p, axis=-1) - 1) / 2
  return jnp.where(valid, _fenchel_young(x, mask, one_hot, probs, omega), 0)


@REGISTRY.register("multilabel_sparsemax_loss", kind="multilabel")
def multilabel_sparsemax_loss(
    logits: ArrayLike,
    label_matrix: ArrayLike,
    *,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
) -> jax.Array:
  """Multi-label sparsemax loss: <z, p - q> - (||p||^2 - ||q||^2) / 2.

  p = sparsemax(z) and q = y / ||y||_1 the label set as a distribution (over
  the kept classes): the paper's multi-label sparsemax loss (Section 3.3,
  Eq. 22), whose gradient is p - q and which is 0 exactly when p = q. A
  one-hot row gives `sparsemax_loss`. Rows with no positive kept label get 0.

  Args:
    logits: [..., K] scores.
    label_matrix: [..., K] label indicators (or nonnegative weights).
    where: boolean mask over the class entries, True = keep.
    dtype: computation dtype.

  Returns:
    [...] per-example losses (>= 0).

  References:
    Martins & Astudillo, "From Softmax to Sparsemax", arXiv:1602.02068.
  """
  x, mask = prepare_logits(logits, where, dtype)
  y = jnp.where(mask, broadcast_to_logits(label_matrix, x, "label_matrix"), 0)
  total = jnp.sum(y, axis=-1, keepdims=True)
  valid = total[..., 0] > 0
  q = y / jnp.where(total > 0, total, 1)
  p = normalizers.sparsemax(x, where=mask)
  # <z, p - q> with z shifted by its row max (p and q both sum to 1): exact at |z| ~ 1e4.
  loss = jnp.sum(_shifted_by_max(x, mask) * (p - q), axis=-1) - (jnp.sum(p * p, -1) - jnp.sum(q * q, -1)) / 2
  return jnp.where(valid, loss, 0)


@REGISTRY.register("entmax15_loss", kind="classification")
def entmax15_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
) -> jax.Array:
  """1.5-entmax loss, the Fenchel-Young loss of the Tsallis 1.5-entropy.

  loss = sum_k p_k (z_k - z_y) - (4/3)(sum_k p_k^1.5 - 1) with p = entmax15(z)
  (= relu(z/2 - tau)^2); its gradient is p - e_y.

  Args:
    logits: [..., K] scores.
    labels: [...] integer class indices.
    where: boolean mask over the class entries, True = keep.
    dtype: computation dtype.

  Returns:
    [...] per-example losses (>= 0).

  References:
    Peters, Niculae & Martins, "Sparse Sequence-to-Sequence Models",
    arXiv:1905.05702.
  """
  x, mask, one_hot, valid = prepare_classification(logits, labels, where, dtype)
  probs = normalizers.entmax15(x, where=mask)
  omega = lambda p: (jnp.sum(safe_pow(p, 1.5), axis=-1) - 1) * (4 / 3)
  return jnp.where(valid, _fenchel_young(x, mask, one_hot, probs, omega), 0)


def _metric_loss_parts(logits, labels, where, dtype):
  """(||x||_1, ||y||_1, ||x - y||_1, valid) with x = softmax(z), y the targets."""
  x, mask = prepare_logits(logits, where, dtype)
  targets, valid = _targets(labels, x, mask)
  targets = jnp.where(mask, targets, 0)
  probs = normalizers.softmax(x, where=mask)
  norm = lambda v: jnp.sum(jnp.abs(v), axis=-1)
  return norm(probs), norm(targets), norm(probs - targets), valid


@REGISTRY.register("jaccard_metric_loss", kind="classification")
def jaccard_metric_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
) -> jax.Array:
  """Jaccard metric loss (JML): 1 - (|x| + |y| - |x - y|) / (|x| + |y| + |x - y|).

  |.| is the l1 norm over the classes, x = softmax(z) and y the (soft) target.
  A metric on [0, 1]^K, so it is compatible with soft labels (label
  smoothing, distillation). The set is the class axis of one example; the
  paper's segmentation form, which takes the pixels of a class as the set, is
  not this function.

  Args:
    logits: [..., K] scores.
    labels: [...] integer class indices, or [..., K] target probabilities
      (a floating array).
    where: boolean mask over the class entries, True = keep.
    dtype: computation dtype.

  Returns:
    [...] per-example losses in [0, 1].

  References:
    Wang et al., "Jaccard Metric Losses: Optimizing the Jaccard Index with
    Soft Labels", arXiv:2302.05666.
  """
  x_norm, y_norm, diff, valid = _metric_loss_parts(logits, labels, where, dtype)
  total = x_norm + y_norm + diff
  return jnp.where(valid, 2 * diff / jnp.where(valid, total, 1), 0)


@REGISTRY.register("dice_metric_loss", kind="classification")
def dice_metric_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
) -> jax.Array:
  """Dice metric loss (DML): |x - y| / (|x| + |y|), l1 norms over the classes.

  x = softmax(z), y the (soft) target. For hard x and y it is 1 - Dice
  coefficient; unlike the usual soft Dice loss it stays 0 only at x = y, so it
  is compatible with soft labels. Same set convention as
  `jaccard_metric_loss`.

  Args:
    logits: [..., K] scores.
    labels: [...] integer class indices, or [..., K] target probabilities
      (a floating array).
    where: boolean mask over the class entries, True = keep.
    dtype: computation dtype.

  Returns:
    [...] per-example losses in [0, 1].

  References:
    Wang et al., "Jaccard Metric Losses: Optimizing the Jaccard Index with
    Soft Labels", arXiv:2302.05666.
  """
  x_norm, y_norm, diff, valid = _metric_loss_parts(logits, labels, where, dtype)
  return jnp.where(valid, diff / jnp.where(valid, x_norm + y_norm, 1), 0)
