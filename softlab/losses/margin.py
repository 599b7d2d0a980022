"""Margin losses on cosine logits (face recognition) and Partial FC.

Every loss takes `cos`, the cosines between L2-normalized embeddings and
L2-normalized class centers (`cosine_logits`), and integer labels, and returns
one value per example. The softmax losses change the target logit
(cos theta_y -> a margin version of it), scale by s and apply cross-entropy;
SphereFace2 uses one binary loss per class instead.

Class-sharded form: with `axis_name`, the class axis of `cos` is split over
that mesh or pmap axis (each device holds the cosines to its own centers and
`labels` index its own classes, with a label outside [0, C_local) meaning the
class lives on another device); every sum over classes is combined across the
devices (the softmax as pmax of the maxes and psum of the rescaled exp-sums).
This is what `partial_fc` uses.
"""

import math
import inspect
from collections.abc import Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from softlab import normalizers
from softlab.losses._common import (
    class_labels,
    compute_dtype,
    l2_normalize,
    label_value,
    logsumexp,
)
from softlab.losses._registry import REGISTRY, StatefulLoss
from softlab.validation import check_number, check_positive

__all__ = [
    "ADAFACE_INITIAL_NORM_STATS",
    "adaface",
    "adaface_norm_stats",
    "adaface_stateful",
    "arcface",
    "circle_loss",
    "circle_pairs",
    "cosface",
    "cr_fiqa",
    "certainty_ratio",
    "cosine_logits",
    "elasticface",
    "elasticface_cos",
    "madacos",
    "margin_inputs",
    "nbc_softmax",
    "normalized_softmax",
    "pairwise_circle_loss",
    "partial_fc",
    "sphereface2",
    "SphereFace2Bias",
    "sphereface2_bias_init",
    "subcenter_arcface",
    "unicom",
    "unpg",
    "unpg_negatives",
]

# AdaFace's running (mean, std) of the feature norms before the first batch.
ADAFACE_INITIAL_NORM_STATS = (20.0, 100.0)


def cosine_logits(embeddings: ArrayLike, centers: ArrayLike) -> jax.Array:
  """cos[n, ...] = <e_n / |e_n|, w / |w|> for every center w of `centers`.

  Args:
    embeddings: [N, d] features.
    centers: [C, d] class centers, or [C, K, d] with K sub-centers per class.

  Returns:
    [N, C] (or [N, C, K]) cosines in float32 (or the inputs' wider dtype).
  """
  embeddings, centers = jnp.asarray(embeddings), jnp.asarray(centers)
  if embeddings.ndim != 2 or centers.ndim not in (2, 3):
    raise ValueError(
        f"embeddings must be [N, d] and centers [C, d] or [C, K, d], got"
        f" {embeddings.shape} and {centers.shape}"
    )
  if centers.shape[-1] != embeddings.shape[-1]:
    raise ValueError(
        f"centers of shape {centers.shape} must end in d ="
        f" {embeddings.shape[-1]}"
    )
  cdtype = compute_dtype(embeddings, centers)
  e = l2_normalize(embeddings.astype(cdtype))
  w = l2_normalize(centers.astype(cdtype))
  return jnp.tensordot(e, w, axes=((1,), (w.ndim - 1,)))


# ---------------------------------------------------------------------------
# Shared plumbing.
# ---------------------------------------------------------------------------


def _check_cos(cos, ndim=2):
  cos = jnp.asarray(cos)
  if cos.ndim != ndim:
    shape = "[N, C]" if ndim == 2 else "[N, C, K]"
    raise ValueError(f"cos must be {shape}, got shape {cos.shape}")
  return cos.astype(compute_dtype(cos))


def _prepare(cos, labels):
  """(cos in the compute dtype, target mask [N, C]).

  Concrete labels must lie in [0, C); traced ones may also point to classes on
  other devices (class-sharded form), which marks no target here. A cosine
  outside [-1, 1] that is not even finite (NaN, +-inf) makes every cosine of
  its example NaN (`normalizers.kept_scores`), so the example's loss is NaN.
  """
  cos = normalizers.kept_scores(_check_cos(cos), True, 1)
  labels = class_labels(labels, cos)
  return cos, labels[:, None] == jnp.arange(cos.shape[1])


def _target(values, is_target, axis_name):
  """values[i, y_i] (0 on devices without class y_i), summed over devices."""
  target = label_value(values, is_target)
  return target if axis_name is None else jax.lax.psum(target, axis_name)


def _softmax_loss(target_logit, other_logits, is_target, axis_name):
  """Cross-entropy of logits other_logits[i, j], but target_logit[i] at y_i."""
  logits = jnp.where(is_target, target_logit[:, None], other_logits)
  return logsumexp(logits, axis_name=axis_name) - _target(
      logits, is_target, axis_name
  )


def _real_examples(embeddings, where):
  """(embeddings with the padding examples' rows 0, real-example mask [N]).

  Losses that compare the batch's examples with each other leave padding
  (where = False) out of their pairs; zeroing its rows also keeps a NaN there
  out of the other examples' values and gradients (0 * NaN is NaN).
  """
  embeddings = jnp.asarray(embeddings)
  real = jnp.ones(embeddings.shape[:1], bool) if where is None else jnp.asarray(where, bool)
  return jnp.where(real[:, None], embeddings, 0), real


def _real_rows(cos, where):
  """(cos with the padding examples' rows 0, [N] real-example mask; None: all real).

  Zeroing the rows keeps a NaN there out of the padding examples' zero
  gradients (the double-where trick) and out of batch statistics.
  """
  real = jnp.ones(cos.shape[:1], bool) if where is None else jnp.asarray(where, bool)
  return jnp.where(real[:, None], cos, 0), real


def _angle(cos):
  """theta = arccos(cos) in [0, pi], exact, finite gradients at cos = +-1.

  Computed as atan2(sin theta, cos) with sin theta = sqrt((1 - cos)(1 + cos)),
  taken as 0 (with zero gradient) where (1 - cos)(1 + cos) <= 0; arccos of a
  clipped cosine would be off by sqrt(2 eps) at +-1 instead.
  """
  u = (1 - cos) * (1 + cos)
  positive = u > 0
  sin = jnp.where(positive, jnp.sqrt(jnp.where(positive, u, 1)), 0)
  return jnp.arctan2(sin, cos)


def _combined_margin(cos, m1, m2, m3):
  """cos(m1 theta + m2) - m3 while m1 theta + m2 < pi, else linear in cos.

  Past pi the margin angle would wrap around and the logit grow again with
  theta; there the target is cos theta - m2 sin(m2) - m3 (insightface's rule).
  """
  theta = _angle(cos)
  angle = m1 * theta + m2
  monotone = angle < math.pi
  return jnp.where(monotone, jnp.cos(angle), cos - m2 * jnp.sin(m2)) - m3


# ---------------------------------------------------------------------------
# Softmax margin losses.
# ---------------------------------------------------------------------------


@REGISTRY.register("normalized_softmax", kind="margin")
def normalized_softmax(
    cos: ArrayLike, labels: ArrayLike, *, s: float = 64.0, axis_name=None
) -> jax.Array:
  """Normalized softmax (NormFace) loss: -log softmax(s cos)_y.

  Args:
    cos: [N, C] cosine logits (`cosine_logits`).
    labels: [N] integer classes.
    s: scale (insightface: 64).
    axis_name: axis the classes are sharded over (see the module docstring).

  Returns:
    [N] per-example losses in float32 (or the input's wider dtype).

  References:
    Wang et al., "NormFace: L2 Hypersphere Embedding for Face Verification",
    arXiv:1704.06369.
  """
  check_positive(s, "s")
  cos, is_target = _prepare(cos, labels)
  return _softmax_loss(
      s * label_value(cos, is_target), s * cos, is_target, axis_name
  )


@REGISTRY.register("arcface", kind="margin")
def arcface(
    cos: ArrayLike,
    labels: ArrayLike,
    *,
    s: float = 64.0,
    m1: float = 1.0,
    m2: float = 0.5,
    m3: float = 0.0,
    axis_name=None,
) -> jax.Array:
  """ArcFace / combined margin loss: target logit s (cos(m1 theta_y + m2) - m3).

  The other logits are s cos theta_j. theta_y = arccos(cos_y) (computed as
  atan2(sin, cos), so the value is exact and the gradient finite at
  cos = +-1). Decision for m1 theta + m2 >= pi, where cos(m1 theta + m2) stops
  decreasing in theta (insightface's non-easy-margin rule, generalized to m1):
  the target logit there is s (cos theta - m2 sin(m2) - m3). m1 = 1, m3 = 0:
  ArcFace; m1 = 1, m2 = 0: CosFace; m1 > 1: SphereFace's multiplicative
  margin with this linear fallback instead of SphereFace's piecewise psi.

  Which insightface: softlab follows insightface's 2022 ArcFace (the value
  and the gradient of s cos(theta_y + m2), with the cos - m2 sin(m2) fallback
  past pi), which it matches to 1e-14. insightface's current
  CombinedMarginLoss (arcface_torch/losses.py) computes the margin under
  torch.no_grad in place on the cosines, so the value is the same while
  theta_y + m2 < pi, but the target's gradient is that of s cos theta_y (a
  straight-through estimate: d/dcos_y is s (p_y - 1), without the factor
  d cos(theta + m) / d cos theta = sin(theta + m) / sin theta), and past pi it
  keeps cos(theta_y + m2), which wraps around and rises again with theta.
  softlab keeps the 2022 form because it is the gradient of the loss the
  paper writes (arXiv:1801.07698, eq. 3) and the target logit stays
  monotone in theta.

  Args:
    cos: [N, C] cosine logits (`cosine_logits`).
    labels: [N] integer classes.
    s: scale (insightface: 64).
    m1: multiplicative angular margin.
    m2: additive angular margin (ArcFace: 0.5).
    m3: additive cosine margin (CosFace: 0.35).
    axis_name: axis the classes are sharded over (see the module docstring).

  Returns:
    [N] per-example losses in float32 (or the input's wider dtype).

  References:
    Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face
    Recognition", arXiv:1801.07698.
  """
  check_positive(s, "s")
  cos, is_target = _prepare(cos, labels)
  target = _combined_margin(label_value(cos, is_target), m1, m2, m3)
  return _softmax_loss(s * target, s * cos, is_target, axis_name)


@REGISTRY.register("cosface", kind="margin")
def cosface(
    cos: ArrayLike,
    labels: ArrayLike,
    *,
    s: float = 64.0,
    m: float = 0.35,
    axis_name=None,
) -> jax.Array:
  """CosFace (large margin cosine) loss: target logit s (cos theta_y - m).

  The combined margin with m1 = 1, m2 = 0, m3 = m.

  Args:
    cos: [N, C] cosine logits (`cosine_logits`).
    labels: [N] integer classes.
    s: scale (insightface: 64).
    m: cosine margin (paper: 0.35, the value of its main comparisons after
      its study of the effect of m, arXiv:1801.09414 Sec. 4; insightface's
      arcface_torch configs use CosFace with m = 0.40 instead: set m=0.4 to
      match them).
    axis_name: axis the classes are sharded over (see the module docstring).

  Returns:
    [N] per-example losses in float32 (or the input's wider dtype).

  References:
    Wang et al., "CosFace: Large Margin Cosine Loss for Deep Face
    Recognition", arXiv:1801.09414.
  """
  return arcface(cos, labels, s=s, m1=1.0, m2=0.0, m3=m, axis_name=axis_name)


@REGISTRY.register("subcenter_arcface", kind="margin", model_fields=(("subcenters", 3),))
def subcenter_arcface(
    cos: ArrayLike,
    labels: ArrayLike,
    *,
    s: float = 64.0,
    m1: float = 1.0,
    m2: float = 0.5,
    m3: float = 0.0,
    axis_name=None,
) -> jax.Array:
  """Sub-center ArcFace: ArcFace on the closest of each class's K sub-centers.

  The cosine of class c is max_k cos[n, c, k].

  Args:
    cos: [N, C, K] cosines to K sub-centers per class (`cosine_logits` with
      centers [C, K, d]; the paper uses K = 3).
    labels: [N] integer classes.
    s, m1, m2, m3: as in `arcface`.
    axis_name: axis the classes are sharded over (see the module docstring).

  Returns:
    [N] per-example losses in float32 (or the input's wider dtype).

  References:
    Deng et al., "Sub-center ArcFace: Boosting Face Recognition by
    Large-scale Noisy Web Faces", ECCV 2020 (no arXiv id).
  """
  return arcface(
      jnp.max(_check_cos(cos, ndim=3), axis=2),
      labels,
      s=s,
      m1=m1,
      m2=m2,
      m3=m3,
      axis_name=axis_name,
  )


def _elastic_sigma(sigma, plus, plus_sigma):
  """sigma as given; None: the paper's 0.05, or with `plus` the released "+" config's."""
  if sigma is None:
    return plus_sigma if plus else 0.05
  return sigma


def _elastic_margins(key, target_cos, m, sigma, plus):
  """[N] margins m_i ~ N(m, sigma); with `plus`, sorted so that the example with
  the k-th largest target cosine gets the k-th smallest margin."""
  margins = m + sigma * jax.random.normal(key, target_cos.shape, target_cos.dtype)
  if not plus:
    return margins
  rank = jnp.argsort(jnp.argsort(-jax.lax.stop_gradient(target_cos)))
  return jnp.sort(margins)[rank]


@REGISTRY.register("elasticface", kind="margin", inputs=("cos", "labels", "key"))
def elasticface(
    cos: ArrayLike,
    labels: ArrayLike,
    *,
    key: jax.Array,
    s: float = 64.0,
    m: float = 0.5,
    sigma: float | None = None,
    plus: bool = False,
    axis_name=None,
) -> jax.Array:
  """ElasticFace-Arc: ArcFace with a margin m_i ~ N(m, sigma) drawn per example.

  Target logit s cos(theta_y + m_i) (arXiv:2109.09416, eq. 6), with `arcface`'s
  rule where theta_y + m_i >= pi. Defaults are the paper's ElasticFace-Arc
  (s = 64, m = 0.5, sigma = 0.05); with `plus` sigma defaults to 0.0175, the
  released ElasticArcFacePlus setting (github.com/fdbtrs/ElasticFace,
  config/config.py), which keeps 0.05 for the plain loss only. ElasticFace-Arc+
  (`plus`, Sec. 3.3): the
  batch's margins are sorted and the example with the k-th largest target
  cosine gets the k-th smallest margin, so harder examples (smaller cos_y)
  get larger margins. The released code (ElasticArcFace, plus=True) indexes
  the sorted margins by the argsort itself (margin[argsort(-cos_y)]) rather
  than by its inverse, the rank; softlab follows the paper's description
  (the rank), so the margin is monotone in the cosine. sigma = 0: ArcFace.
  Draw a new key every step; with `axis_name` every device must get the same
  key.

  Args:
    cos: [N, C] cosine logits (`cosine_logits`).
    labels: [N] integer classes.
    key: PRNG key for the N margins.
    s: scale.
    m: mean margin.
    sigma: standard deviation of the margin (None: 0.05, with `plus` 0.0175).
    plus: ElasticFace-Arc+ (larger margins for harder examples).
    axis_name: axis the classes are sharded over (see the module docstring).

  Returns:
    [N] per-example losses in float32 (or the input's wider dtype).

  References:
    Boutros et al., "ElasticFace: Elastic Margin Loss for Deep Face
    Recognition", arXiv:2109.09416.
  """
  check_positive(s, "s")
  cos, is_target = _prepare(cos, labels)
  target_cos = _target(cos, is_target, axis_name)
  margins = _elastic_margins(key, target_cos, m, _elastic_sigma(sigma, plus, 0.0175), plus)
  target = _combined_margin(label_value(cos, is_target), 1.0, margins, 0.0)
  return _softmax_loss(s * target, s * cos, is_target, axis_name)


@REGISTRY.register("elasticface_cos", kind="margin", inputs=("cos", "labels", "key"))
def elasticface_cos(
    cos: ArrayLike,
    labels: ArrayLike,
    *,
    key: jax.Array,
    s: float = 64.0,
    m: float = 0.35,
    sigma: float | None = None,
    plus: bool = False,
    axis_name=None,
) -> jax.Array:
  """ElasticFace-Cos: CosFace with a margin m_i ~ N(m, sigma) drawn per example.

  Target logit s (cos theta_y - m_i) (arXiv:2109.09416, eq. 7); `plus`
  (ElasticFace-Cos+) sorts the margins as in `elasticface`. Defaults: the
  paper's ElasticFace-Cos (s = 64, m = 0.35, sigma = 0.05); with `plus` sigma
  defaults to 0.02, the released ElasticCosFacePlus setting
  (github.com/fdbtrs/ElasticFace, config/config.py; that file's plain
  ElasticCosFace keeps 0.05, its ElasticCosFace class's own default is
  0.0125). sigma = 0: CosFace.

  Args:
    cos: [N, C] cosine logits (`cosine_logits`).
    labels: [N] integer classes.
    key: PRNG key for the N margins.
    s: scale.
    m: mean margin.
    sigma: standard deviation of the margin (None: 0.05, with `plus` 0.02).
    plus: ElasticFace-Cos+ (larger margins for harder examples).
    axis_name: axis the classes are sharded over (see the module docstring).

  Returns:
    [N] per-example losses in float32 (or the input's wider dtype).

  References:
    Boutros et al., "ElasticFace: Elastic Margin Loss for Deep Face
    Recognition", arXiv:2109.09416.
  """
  check_positive(s, "s")
  cos, is_target = _prepare(cos, labels)
  target_cos = _target(cos, is_target, axis_name)
  margins = _elastic_margins(key, target_cos, m, _elastic_sigma(sigma, plus, 0.02), plus)
  return _softmax_loss(s * (label_value(cos, is_target) - margins), s * cos, is_target,
                       axis_name)


def adaface_norm_stats(
    norms: ArrayLike,
    batch_mean: ArrayLike,
    batch_std: ArrayLike,
    *,
    momentum: float = 0.01,
    where: ArrayLike | None = None,
) -> tuple[jax.Array, jax.Array]:
  """AdaFace's running feature-norm statistics, updated with this batch.

  mean <- momentum * mean(n) + (1 - momentum) * mean, the same for std(n)
  (sample std, ddof = 1), with n = clip(norms, 0.001, 100), no gradient. The
  caller keeps (mean, std) as state, starts from ADAFACE_INITIAL_NORM_STATS
  = (20, 100), and passes the updated values to `adaface` (AdaFace updates
  before computing the margins). With a batch split over devices, pass the
  all-gathered norms.

  Args:
    norms: [N] feature norms |e_n| (before normalization).
    batch_mean: running mean.
    batch_std: running standard deviation.
    momentum: weight of the new batch (AdaFace: 0.01).
    where: [N] True for the norms that count (None: all), e.g. not padding.

  Returns:
    (new mean, new std).
  """
  n = jax.lax.stop_gradient(_clipped_norms(norms))
  keep = jnp.ones(n.shape, bool) if where is None else jnp.asarray(where, bool)
  count = jnp.sum(keep)
  n_mean = jnp.sum(jnp.where(keep, n, 0)) / count
  n_std = jnp.sqrt(jnp.sum(jnp.where(keep, (n - n_mean) ** 2, 0)) / (count - 1))
  mean = momentum * n_mean + (1 - momentum) * jnp.asarray(batch_mean, n.dtype)
  std = momentum * n_std + (1 - momentum) * jnp.asarray(batch_std, n.dtype)
  return mean, std


def _clipped_norms(norms):
  norms = jnp.asarray(norms)
  return jnp.clip(norms.astype(compute_dtype(norms)), 0.001, 100)


def adaface_stateful(
    *,
    s: float = 64.0,
    m: float = 0.4,
    h: float = 0.333,
    momentum: float = 0.01,
    reference_clamp: bool = False,
) -> StatefulLoss:
  """AdaFace with its running norm statistics as state (a trainer keeps them).

  init(num_examples, dtype) -> {"norm_mean": 20, "norm_std": 100} (scalars,
  ADAFACE_INITIAL_NORM_STATS); apply(cos, labels, state, ids, *, norms,
  where=None) updates them with this batch's norms (`adaface_norm_stats`,
  only where `where`) and returns (`adaface` with the updated values, new
  state), as AdaFace's head does each forward pass. `ids` are unused.

  Args:
    s, m, h, reference_clamp: as in `adaface`.
    momentum: as in `adaface_norm_stats`.

  Returns:
    A StatefulLoss.
  """
  check_positive(s, "s")

  def init(num_examples, dtype=jnp.float32):
    mean, std = ADAFACE_INITIAL_NORM_STATS
    return {"norm_mean": jnp.asarray(mean, dtype), "norm_std": jnp.asarray(std, dtype)}

  def apply(cos, labels, state, ids, *, norms, where=None):
    mean, std = adaface_norm_stats(norms, state["norm_mean"], state["norm_std"],
                                   momentum=momentum, where=where)
    values = adaface(cos, labels, norms, batch_mean=mean, batch_std=std, s=s, m=m, h=h,
                     reference_clamp=reference_clamp)
    new = {"norm_mean": mean.astype(state["norm_mean"].dtype),
           "norm_std": std.astype(state["norm_std"].dtype)}
    return values, new

  return StatefulLoss(init, apply)


@REGISTRY.register("adaface", kind="margin", stateful=adaface_stateful,
                   inputs=("cos", "labels", "norms"))
def adaface(
    cos: ArrayLike,
    labels: ArrayLike,
    norms: ArrayLike,
    *,
    batch_mean: ArrayLike,
    batch_std: ArrayLike,
    s: float = 64.0,
    m: float = 0.4,
    h: float = 0.333,
    reference_clamp: bool = False,
    axis_name=None,
) -> jax.Array:
  """AdaFace: a margin that adapts to image quality through the feature norm.

  z_i = clip(h (n_i - mean) / (std + 0.001), -1, 1) with n_i the clipped
  feature norm (no gradient); target logit
  s (cos(clip(theta_y - m z_i, 0.001, pi - 0.001)) - (m + m z_i)).
  Low-norm (low-quality) examples, z = -1, get ArcFace's angular margin m;
  z = 0 gives CosFace's additive margin m; high-norm ones, z = 1, get
  cos(theta - m) - 2m, which emphasizes their hard examples. The other logits
  are s cos theta_j. Pure function: the running (mean, std) come in as
  arguments (see `adaface_norm_stats`; `adaface_stateful` keeps them).

  AdaFace's released head.py first clamps every cosine, target and
  non-target, to [-1 + 0.001, 1 - 0.001] "for stability", then takes arccos
  and the angle clip above; so the released non-target logits are
  s clip(cos_j, -0.999, 0.999) (no gradient beyond the clamp) and the target
  angle is at least arccos(0.999) = 0.045 before the margin. By default this
  function does not clamp (theta is exact, every gradient flows);
  `reference_clamp=True` applies the released clamp, to match its runs.

  Args:
    cos: [N, C] cosine logits (`cosine_logits`).
    labels: [N] integer classes.
    norms: [N] feature norms |e_n| of the embeddings.
    batch_mean: running mean of the clipped norms (this step's value).
    batch_std: running std of the clipped norms (this step's value).
    s: scale (paper: 64).
    m: margin (paper: 0.4).
    h: scale of the normalized norm (paper: 0.333, so that norms within 3
      standard deviations of the mean map into [-1, 1]).
    reference_clamp: clamp every cosine to [-1 + 0.001, 1 - 0.001] first, as
      the released head.py does.
    axis_name: axis the classes are sharded over (see the module docstring).

  Returns:
    [N] per-example losses in float32 (or the input's wider dtype).

  References:
    Kim, Jain & Liu, "AdaFace: Quality Adaptive Margin for Face Recognition",
    arXiv:2204.00964.
  """
  check_positive(s, "s")
  cos, is_target = _prepare(cos, labels)
  norms = jax.lax.stop_gradient(_clipped_norms(norms))
  if norms.shape != cos.shape[:1]:
    raise ValueError(
        f"norms must have shape {cos.shape[:1]}, got {norms.shape}"
    )
  eps = 1e-3
  if reference_clamp:
    cos = jnp.clip(cos, -1 + eps, 1 - eps)
  z = jnp.clip(h * (norms - batch_mean) / (batch_std + eps), -1, 1)
  theta = _angle(label_value(cos, is_target))
  target = jnp.cos(jnp.clip(theta - m * z, eps, math.pi - eps)) - (m + m * z)
  return _softmax_loss(s * target, s * cos, is_target, axis_name)


@REGISTRY.register("circle_loss", kind="margin")
def circle_loss(
    cos: ArrayLike,
    labels: ArrayLike,
    *,
    m: float = 0.25,
    gamma: float = 256.0,
    axis_name=None,
) -> jax.Array:
  """Circle loss, class-level (proxy) form on cosine logits.

  L = log(1 + sum_{j != y} exp(gamma a_j (s_j - m) - gamma a_p (s_p - 1 + m)))
  with s_p = cos_y, s_j = cos_j, a_p = relu(1 + m - s_p), a_j = relu(s_j + m).
  Decision: the weights a_p, a_j are constants in backpropagation
  (stop_gradient), as in the widely used implementations. Defaults m = 0.25,
  gamma = 256 are the paper's face recognition setting. This is a softmax
  cross-entropy whose target logit is gamma a_p (s_p - 1 + m) and other logits
  gamma a_j (s_j - m).

  Args:
    cos: [N, C] cosine logits (`cosine_logits`).
    labels: [N] integer classes.
    m: relaxation margin.
    gamma: scale.
    axis_name: axis the classes are sharded over (see the module docstring).

  Returns:
    [N] per-example losses in float32 (or the input's wider dtype).

  References:
    Sun et al., "Circle Loss: A Unified Perspective of Pair Similarity
    Optimization", arXiv:2002.10857.
  """
  check_positive(gamma, "gamma")
  cos, is_target = _prepare(cos, labels)
  s_p = label_value(cos, is_target)
  a_p = jax.lax.stop_gradient(jax.nn.relu(1 + m - s_p))
  a_n = jax.lax.stop_gradient(jax.nn.relu(cos + m))
  return _softmax_loss(
      gamma * a_p * (s_p - (1 - m)),
      gamma * a_n * (cos - m),
      is_target,
      axis_name,
  )


def circle_pairs(
    similarity: ArrayLike,
    positive: ArrayLike,
    negative: ArrayLike,
    *,
    m: float = 0.25,
    gamma: float = 256.0,
) -> jax.Array:
  """Circle loss of each anchor over its positive and negative pair similarities.

  L = log(1 + sum_n exp(gamma a_n (s_n - m)) sum_p exp(-gamma a_p (s_p - 1 + m)))
  with a_p = relu(1 + m - s_p), a_n = relu(s_n + m) constants in
  backpropagation (arXiv:2002.10857, eq. 6 with O_p = 1 + m, O_n = -m,
  Delta_p = 1 - m, Delta_n = m, eq. 8). With class centers as the pairs (one
  positive, the other classes negative) it is `circle_loss`. An anchor without
  a positive or a negative gets 0 (NaN if one of its pairs' similarities is).

  Args:
    similarity: [N, M] similarities of N anchors to M others.
    positive: [N, M] True for the positive pairs.
    negative: [N, M] True for the negative pairs.
    m: relaxation margin.
    gamma: scale.

  Returns:
    [N] per-anchor losses in float32 (or the input's wider dtype).

  References:
    Sun et al., "Circle Loss: A Unified Perspective of Pair Similarity
    Optimization", arXiv:2002.10857.
  """
  check_positive(gamma, "gamma")
  s = _check_cos(similarity)
  positive, negative = jnp.asarray(positive, bool), jnp.asarray(negative, bool)
  a_p = jax.lax.stop_gradient(jax.nn.relu(1 + m - s))
  a_n = jax.lax.stop_gradient(jax.nn.relu(s + m))
  total = (logsumexp(gamma * a_n * (s - m), where=negative)
           + logsumexp(-gamma * a_p * (s - (1 - m)), where=positive))
  both = jnp.any(positive, axis=1) & jnp.any(negative, axis=1)
  value = jnp.where(both, jax.nn.softplus(jnp.where(both, total, 0)), 0)
  # An anchor without positives or negatives gets 0 without using its pairs; a NaN there shows.
  return value - normalizers.nonfinite_rows(s, positive | negative, 1)[:, 0]


@REGISTRY.register("pairwise_circle_loss", kind="margin",
                   inputs=("embeddings", "labels", "where"))
def pairwise_circle_loss(
    embeddings: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    m: float = 0.25,
    gamma: float = 256.0,
) -> jax.Array:
  """Circle loss over the batch's pairs: same label positive, different negative.

  `circle_pairs` of the cosine similarities of the L2-normalized embeddings,
  each example an anchor against every other real example (self pairs left
  out). Defaults m = 0.25, gamma = 256 are the paper's face recognition
  setting (arXiv:2002.10857, Sec. 4.2). No class centers: the centers of a
  metric trainer's model are left untrained by this loss.

  Args:
    embeddings: [N, d] embeddings.
    labels: [N] integer classes.
    where: [N] True for the real examples (None: all).
    m: relaxation margin.
    gamma: scale.

  Returns:
    [N] per-example losses (0 where `where` is False).

  References:
    Sun et al., "Circle Loss: A Unified Perspective of Pair Similarity
    Optimization", arXiv:2002.10857.
  """
  embeddings = jnp.asarray(embeddings)
  if embeddings.ndim != 2:
    raise ValueError(f"embeddings must be [N, d], got shape {embeddings.shape}")
  labels = jnp.asarray(labels)
  if labels.shape != embeddings.shape[:1]:
    raise ValueError(f"labels must have shape {embeddings.shape[:1]}, got {labels.shape}")
  embeddings, real = _real_examples(embeddings, where)
  similarity = cosine_logits(embeddings, embeddings)
  pair = real[:, None] & real[None, :] & ~jnp.eye(labels.shape[0], dtype=bool)
  same = labels[:, None] == labels[None, :]
  values = circle_pairs(similarity, pair & same, pair & ~same, m=m, gamma=gamma)
  return jnp.where(real, values, 0)


def unpg_negatives(embeddings: ArrayLike, labels: ArrayLike, *, where: ArrayLike | None = None,
                   wisk: float = 1.5) -> tuple[jax.Array, jax.Array]:
  """UNPG's in-batch negative pairs, noisy ones filtered by the box-and-whisker rule.

  The pairs i < j of real examples with different labels; with q1, q3 the
  lower and upper quartiles of their cosine similarities (the sorted values
  at floor(0.25 n) and floor(0.75 n), n pairs, as the released code takes
  them; no gradient), a pair is kept iff its similarity lies in
  [q1 - wisk (q3 - q1), q3 + wisk (q3 - q1)] (arXiv:2203.11593, Sec. 3.3;
  wisk = 1.5 is the released head.zoo.yaml's "unpg" entry). A pair with a NaN
  similarity is kept, so a NaN embedding reaches the loss instead of being
  filtered out as noise.

  Args:
    embeddings: [N, d] embeddings.
    labels: [N] integer classes.
    where: [N] True for the real examples (None: all).
    wisk: whisker length in interquartile ranges.

  Returns:
    (similarities [N, N], kept [N, N] boolean mask of the kept pairs).
  """
  embeddings, labels = jnp.asarray(embeddings), jnp.asarray(labels)
  if embeddings.ndim != 2 or labels.shape != embeddings.shape[:1]:
    raise ValueError(f"embeddings must be [N, d] and labels [N], got {embeddings.shape} and "
                     f"{labels.shape}")
  embeddings, real = _real_examples(embeddings, where)
  similarity = cosine_logits(embeddings, embeddings)
  count = labels.shape[0]
  upper = jnp.arange(count)[:, None] < jnp.arange(count)[None, :]
  pairs = upper & real[:, None] & real[None, :] & (labels[:, None] != labels[None, :])
  ordered = jnp.sort(jnp.where(pairs, jax.lax.stop_gradient(similarity), jnp.inf).ravel())
  total = jnp.sum(pairs)
  q1 = ordered[jnp.floor(0.25 * total).astype(jnp.int32)]
  q3 = ordered[jnp.floor(0.75 * total).astype(jnp.int32)]
  low, high = q1 - wisk * (q3 - q1), q3 + wisk * (q3 - q1)
  # not low <= s <= high: a NaN similarity (a NaN embedding) is kept, not filtered out
  kept = pairs & ~(similarity < low) & ~(similarity > high)
  return similarity, kept


@REGISTRY.register("unpg", kind="margin", inputs=("cos", "labels", "embeddings", "where"))
def unpg(
    cos: ArrayLike,
    labels: ArrayLike,
    *,
    embeddings: ArrayLike,
    where: ArrayLike | None = None,
    s: float = 64.0,
    m1: float = 1.0,
    m2: float = 0.5,
    m3: float = 0.0,
    wisk: float = 1.5,
    axis_name=None,
) -> jax.Array:
  """UNPG: a combined-margin softmax whose denominator also holds in-batch negative pairs.

  L_i = log(exp(s psi(cos_y)) + sum_{j != y} exp(s cos_j) + sum_{(a, b) in S_n'}
  exp(s cos(e_a, e_b))) - s psi(cos_y), psi the combined margin of `arcface`
  (default ArcFace m2 = 0.5) and S_n' the batch's negative pairs kept by
  `unpg_negatives` (arXiv:2203.11593, eq. 9: the metric-loss negative pairs
  join the classification loss's negatives). The same S_n' enters every
  example's denominator, as in the released code, which appends it to every
  row of logits. With no negative pair kept (a batch of one label) it is the
  base margin loss.

  Args:
    cos: [N, C] cosine logits.
    labels: [N] integer classes.
    embeddings: [N, d] the batch's embeddings (the whole batch on every device
      when the classes are sharded).
    where: [N] True for the real examples (None: all).
    s, m1, m2, m3: scale and combined margin, as in `arcface`.
    wisk: as in `unpg_negatives`.
    axis_name: axis the classes are sharded over.

  Returns:
    [N] per-example losses (0 where `where` is False).

  References:
    Jung et al., "Unified Negative Pair Generation toward Well-discriminative
    Feature Space for Face Recognition", arXiv:2203.11593.
  """
  check_positive(s, "s")
  cos, is_target = _prepare(cos, labels)
  cos, real = _real_rows(cos, where)
  target = s * _combined_margin(label_value(cos, is_target), m1, m2, m3)
  logits = jnp.where(is_target, target[:, None], s * cos)
  similarity, kept = unpg_negatives(embeddings, labels, where=where, wisk=wisk)
  extra = logsumexp((s * similarity.astype(cos.dtype)).ravel(), where=kept.ravel())
  total = jnp.logaddexp(logsumexp(logits, axis_name=axis_name), extra)
  return jnp.where(real, total - _target(logits, is_target, axis_name), 0)


@REGISTRY.register("madacos", kind="margin", inputs=("cos", "labels", "where"))
def madacos(
    cos: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    rho: float = 0.02,
    count: float = 9999999.0,
    min_scale: float = 32.0,
    axis_name=None,
) -> jax.Array:
  """MadaCos: a CosFace loss whose scale and margin come from the batch's median target cosine.

  With c the (lower) median of the real examples' target cosines,
  s = max(log(count (1 - rho) / rho) / (1 - c), min_scale) and
  m = max(c - (log B + log(rho / (1 - rho))) / s, 0), B = sum_{j != y} exp(s cos_j)
  of the median example, so that the median example's target probability is
  about 1 - rho; logits s cos_j and s (cos_y - m). s and m are not
  differentiated. Formula and defaults from the released CFCD code
  (core/model/madacos.py: count 9999999, the scale floored at 32, the margin
  at 0; rho = the configs' ALPHA = 0.02). No equation number is cited: the
  paper's method section could not be read here (the stored copies of
  arXiv:2308.04008 give its abstract and introduction only, which say that
  MadaCos "dynamically tunes its scale and margin within each mini-batch" from
  "the median of cosine logits"), so where the paper's equations may differ
  from the released code is unchecked, and this function follows the code.
  A NaN target cosine of a real example makes the median, and so every
  example's loss, NaN.

  Args:
    cos: [N, C] cosine logits.
    labels: [N] integer classes.
    where: [N] True for the real examples (None: all).
    rho: the median example's target is to keep probability 1 - rho.
    count: the number in the scale's logarithm (the released code's 9999999).
    min_scale: the smallest scale.
    axis_name: axis the classes are sharded over.

  Returns:
    [N] per-example losses (0 where `where` is False).

  References:
    Zhu et al., "Coarse-to-Fine: Learning Compact Discriminative
    Representation for Single-Stage Image Retrieval", arXiv:2308.04008.
  """
  check_number(rho, "rho", lambda v: 0 < v < 1, "in (0, 1)")
  cos, is_target = _prepare(cos, labels)
  cos, real = _real_rows(cos, where)
  target = jax.lax.stop_gradient(_target(cos, is_target, axis_name))
  order = jnp.argsort(jnp.where(real, target, jnp.inf))
  middle = order[(jnp.sum(real) - 1) // 2]
  # NaN if a real target is: argsort alone would rank a NaN last and skip it.
  median = target[middle] - normalizers.nonfinite_rows(target, real, 0)[0]
  scale = jnp.maximum(math.log(count * (1 - rho) / rho) / (1 - median), min_scale)
  others = jax.lax.stop_gradient(scale * cos)
  log_b = logsumexp(others, where=~is_target, axis_name=axis_name)[middle]
  margin = jnp.maximum(median - (log_b + math.log(rho / (1 - rho))) / scale, 0)
  values = _softmax_loss(scale * (label_value(cos, is_target) - margin), scale * cos, is_target,
                         axis_name)
  return jnp.where(real, values, 0)


@REGISTRY.register("nbc_softmax", kind="margin", inputs=("cos", "labels", "embeddings", "where"))
def nbc_softmax(
    cos: ArrayLike,
    labels: ArrayLike,
    *,
    embeddings: ArrayLike,
    where: ArrayLike | None = None,
    s: float = 64.0,
    weight: float = 0.5,
    tau: float = 0.2,
    axis_name=None,
) -> jax.Array:
  """NBC-Softmax: (1 - weight) softmax + weight times the negative block-contrastive term.

  The term, one value per batch (added to every real example's loss, so the
  batch mean is the released combination): with mu_k the mean embedding of
  each class k present in the batch,
  L_NBC = (1 / C) mean_k log sum_{j present} exp(tau cos(mu_k, mu_j) [j != k]),
  the j = k term counting exp(0) = 1, C the number of classes; it pushes the
  batch's class centroids apart (arXiv:2212.08184). Formula as the released
  code computes it (code.py: ProjContrastiveModel_BC1 without the optional
  projection, tau = 0.2, the 1 / C factor and the (1 - ratio, ratio) mix of
  NCE_Combiner2); the softmax here is the normalized softmax on the cosines
  (scale s), the cosine-logit counterpart of the released linear softmax.
  weight = 0: `normalized_softmax`. No equation number is cited: the paper's
  equations could not be read here (the stored copies of arXiv:2212.08184
  give its abstract only: "a contrastive loss based clustering technique for
  softmax loss" using "mini-batch sampling"), so this function follows the
  released code, and any difference from the paper's equations is unchecked.

  Args:
    cos: [N, C] cosine logits.
    labels: [N] integer classes.
    embeddings: [N, d] the batch's embeddings.
    where: [N] True for the real examples (None: all).
    s: scale of the softmax.
    weight: share of the block-contrastive term, in [0, 1].
    tau: multiplier of the centroid cosines.
    axis_name: axis the classes are sharded over.

  Returns:
    [N] per-example losses (0 where `where` is False).

  References:
    Kulatilleke et al., "NBC-Softmax: Darkweb Author fingerprinting and
    migration tracking", arXiv:2212.08184.
  """
  check_number(weight, "weight", lambda v: 0 <= v <= 1, "in [0, 1]")
  cos, _ = _real_rows(_check_cos(cos), where)
  base = normalized_softmax(cos, labels, s=s, axis_name=axis_name)
  embeddings, real = _real_examples(embeddings, where)
  labels = jnp.asarray(labels)
  same = (labels[:, None] == labels[None, :]) & real[:, None] & real[None, :]
  centroids = (same.astype(embeddings.dtype) @ embeddings) / jnp.maximum(
      jnp.sum(same, axis=1, keepdims=True), 1)
  count = labels.shape[0]
  earlier_same = same & (jnp.arange(count)[None, :] < jnp.arange(count)[:, None])
  first = real & ~jnp.any(earlier_same, axis=1)  # one row per class present
  similarity = cosine_logits(centroids, centroids)
  others = jnp.where(jnp.eye(count, dtype=bool), 0, similarity)
  per_class = logsumexp(tau * others, where=first[None, :] & first[:, None])
  num_classes = cos.shape[1] * (1 if axis_name is None else jax.lax.axis_size(axis_name))
  block = jnp.sum(jnp.where(first, per_class, 0)) / jnp.maximum(jnp.sum(first), 1) / num_classes
  return jnp.where(real, (1 - weight) * base + weight * block, 0)


# ---------------------------------------------------------------------------
# CR-FIQA: ArcFace plus a regression head for the certainty ratio.
# ---------------------------------------------------------------------------


def certainty_ratio(cos: ArrayLike, labels: ArrayLike, *, eps: float = 1e-9,
                    axis_name=None) -> jax.Array:
  """CR = CCS / (NNCCS + 1 + eps): the target cosine over the largest other one, shifted.

  CCS = cos theta_y (class center cosine similarity), NNCCS = max_{j != y}
  cos theta_j (nearest negative class center); arXiv:2112.06592, eq. 5. Not
  differentiated (a regression target).

  Args:
    cos: [N, C] cosine logits.
    labels: [N] integer classes.
    eps: keeps the denominator positive at NNCCS = -1.
    axis_name: axis the classes are sharded over.

  Returns:
    [N] certainty ratios.
  """
  cos, is_target = _prepare(jax.lax.stop_gradient(cos), labels)
  ccs = _target(cos, is_target, axis_name)
  nnccs = jnp.max(jnp.where(is_target, -jnp.inf, cos), axis=1)
  if axis_name is not None:
    nnccs = jax.lax.pmax(nnccs, axis_name)
  return ccs / (nnccs + 1 + eps)


@REGISTRY.register("cr_fiqa", kind="margin", inputs=("cos", "labels", "quality"))
def cr_fiqa(
    cos: ArrayLike,
    labels: ArrayLike,
    *,
    quality: ArrayLike,
    s: float = 64.0,
    m: float = 0.5,
    alpha: float = 10.0,
    beta: float = 0.5,
    eps: float = 1e-9,
    axis_name=None,
) -> jax.Array:
  """CR-FIQA: ArcFace plus alpha SmoothL1_beta(quality, certainty ratio).

  L = ArcFace(cos, y) + alpha SmoothL1(P_i, CR_i) (arXiv:2112.06592, eqs. 5-7),
  P_i the quality head's prediction and CR_i = `certainty_ratio` (no
  gradient); SmoothL1_beta(d) = d^2 / (2 beta) for |d| < beta, else
  |d| - beta / 2. The prediction P is the sample's quality score at test
  time. alpha = 10 and beta = 0.5 are the released training script's
  (train_cr_fiqa.py, SmoothL1Loss(beta=0.5)); that script regresses
  CCS / NNCCS, with NNCCS the largest non-target cosine floored near 0,
  instead of the paper's CR; softlab follows the paper. alpha = 0: ArcFace.

  Args:
    cos: [N, C] cosine logits.
    labels: [N] integer classes.
    quality: [N] the quality head's predictions.
    s, m: ArcFace's scale and additive angular margin.
    alpha: weight of the regression term.
    beta: SmoothL1's switch point.
    eps: as in `certainty_ratio`.
    axis_name: axis the classes are sharded over.

  Returns:
    [N] per-example losses.

  References:
    Boutros et al., "CR-FIQA: Face Image Quality Assessment by Learning Sample
    Relative Classifiability", arXiv:2112.06592.
  """
  check_positive(beta, "beta")
  quality = jnp.asarray(quality)
  if quality.shape != jnp.shape(cos)[:1]:
    raise ValueError(f"quality must have shape {jnp.shape(cos)[:1]}, got {quality.shape}")
  ratio = certainty_ratio(cos, labels, eps=eps, axis_name=axis_name)
  gap = jnp.abs(quality.astype(ratio.dtype) - ratio)
  smooth_l1 = jnp.where(gap < beta, 0.5 * gap**2 / beta, gap - 0.5 * beta)
  return arcface(cos, labels, s=s, m2=m, axis_name=axis_name) + alpha * smooth_l1


# ---------------------------------------------------------------------------
# SphereFace2: one binary loss per class.
# ---------------------------------------------------------------------------


def _sphereface2_g(cos, t):
  """Similarity adjustment g(c) = 2 ((c + 1) / 2)^t - 1, c clipped to +-1."""
  return 2 * ((jnp.clip(cos, -1, 1) + 1) / 2) ** t - 1


class SphereFace2Bias(nn.Module):
  """SphereFace2's learnable bias b, started at `sphereface2_bias_init`.

  Attributes:
    num_classes: C.
    r, m, lam, t: as in `sphereface2` (they set the initial value).
  """

  num_classes: int
  r: float = 40.0
  m: float = 0.4
  lam: float = 0.7
  t: float = 3.0

  @nn.compact
  def __call__(self) -> jax.Array:
    start = sphereface2_bias_init(self.num_classes, r=self.r, m=self.m, lam=self.lam, t=self.t)
    return self.param("b", nn.initializers.constant(start), (), jnp.float32)

  def loss_arguments(self) -> dict[str, jax.Array]:
    """The learnable keyword arguments of `sphereface2`: {"b": b}."""
    return {"b": self()}


@REGISTRY.register("sphereface2", kind="margin", logit_params=SphereFace2Bias)
def sphereface2(
    cos: ArrayLike,
    labels: ArrayLike,
    *,
    b: ArrayLike,
    r: float = 40.0,
    m: float = 0.4,
    lam: float = 0.7,
    t: float = 3.0,
    axis_name=None,
) -> jax.Array:
  """SphereFace2 (SphereFace2-C, additive margin): one binary loss per class.

  L = (lam / r) log(1 + exp(-(r (g(cos_y) - m) + b)))
      + ((1 - lam) / r) sum_{j != y} log(1 + exp(r (g(cos_j) + m) + b)),
  g(c) = 2 ((c + 1) / 2)^t - 1. Each class is a one-vs-all binary problem
  with a learnable bias b (start from `sphereface2_bias_init`) and
  lam balancing the one positive against the C - 1 negatives. The gradient
  is that of this formula (g included), as in the authors' current
  SphereFace2-C head; an earlier version of their code applied g and the
  margin as a detached shift of r cos. Defaults are those of the authors'
  released code (github.com/ydwen/opensphere, model/head/sphereface2c.py):
  lam = 0.7 (its `alpha`, "the lambda in paper Eqn. 5"), r = 40, m = 0.4,
  t = 3; r was 30 here before, unchecked. That code also multiplies the loss
  by a weight lw = 50 (and each term by C, which its average over the N x C
  binary terms divides out), so its value is lw times the mean of these
  per-example values (tested against a NumPy transcription of that
  forward); the loss weight is the caller's.

  Args:
    cos: [N, C] cosine logits (`cosine_logits`).
    labels: [N] integer classes.
    b: the learnable bias (scalar).
    r: scale.
    m: additive margin.
    lam: weight of the positive term, in (0, 1).
    t: exponent of the similarity adjustment, >= 1 (1 = none).
    axis_name: axis the classes are sharded over (see the module docstring).

  Returns:
    [N] per-example losses in float32 (or the input's wider dtype).

  References:
    Wen et al., "SphereFace2: Binary Classification is All You Need for Deep
    Face Recognition", arXiv:2108.01513.
  """
  check_positive(r, "r")
  check_number(lam, "lam", lambda v: 0 < v < 1, "in (0, 1)")
  check_number(t, "t", lambda v: v >= 1, ">= 1")
  cos, is_target = _prepare(cos, labels)
  g = _sphereface2_g(cos, t)
  b = jnp.asarray(b, cos.dtype)
  positive = lam / r * jax.nn.softplus(-(r * (g - m) + b))
  negative = (1 - lam) / r * jax.nn.softplus(r * (g + m) + b)
  per_class = jnp.where(is_target, positive, negative)
  loss = jnp.sum(per_class, axis=1)
  return loss if axis_name is None else jax.lax.psum(loss, axis_name)


def sphereface2_bias_init(
    num_classes: int,
    *,
    r: float = 40.0,
    m: float = 0.4,
    lam: float = 0.7,
    t: float = 3.0,
) -> float:
  """The SphereFace2 bias at which dL/db = 0 when all cosines are 0 (its init).

  With z = lam / ((1 - lam)(C - 1)), a_y = r (g(0) - m), a_j = r (g(0) + m):
  b = log(2 z) - a_j - log(1 - z + sqrt((1 - z)^2 + 4 z exp(a_y - a_j))), the
  root of lam sigmoid(-(a_y + b)) = (1 - lam)(C - 1) sigmoid(a_j + b).

  Args:
    num_classes: C, the number of classes (>= 2).
    r, m, lam, t: as in `sphereface2`.

  Returns:
    The initial bias.
  """
  if num_classes < 2:
    raise ValueError(f"num_classes must be >= 2, got {num_classes}")
  g0 = 2 * 0.5**t - 1
  z = lam / ((1 - lam) * (num_classes - 1))
  a_y, a_j = r * (g0 - m), r * (g0 + m)
  root = math.sqrt((1 - z) ** 2 + 4 * z * math.exp(a_y - a_j))
  return math.log(2 * z) - a_j - math.log(1 - z + root)


# ---------------------------------------------------------------------------
# Partial FC.
# ---------------------------------------------------------------------------


# What Partial FC computes for its inner loss; the inner loss's other inputs are forwarded.
_COMPUTED_FOR_INNER = ("cos", "labels")


def _inner_loss(margin_loss) -> tuple[Callable[..., jax.Array], tuple[str, ...]]:
  """(function, the inputs it takes besides cos and labels) of Partial FC's margin_loss.

  A callable takes (cos, labels, axis_name=...) only; a registered name must be
  a margin loss on cosines without state, learnable arguments or centers of its
  own, and takes its other registered inputs (forwarded by Partial FC).
  """
  if callable(margin_loss):
    return margin_loss, ()
  if not isinstance(margin_loss, str):
    raise ValueError(f"margin_loss must be a loss name or a callable, got {margin_loss!r}")
  function, info = REGISTRY.get(margin_loss), REGISTRY.info(margin_loss)
  if not _runs_inside_partial_fc(info):
    valid = [n for n in REGISTRY.names() if _runs_inside_partial_fc(REGISTRY.info(n))]
    raise ValueError(f"margin_loss {margin_loss!r} cannot run inside Partial FC (it needs a "
                     f"margin loss on cosines without state, learnable arguments or centers); "
                     f"valid: {', '.join(valid)}")
  return function, tuple(n for n in info.inputs if n not in _COMPUTED_FOR_INNER)


def _runs_inside_partial_fc(info) -> bool:
  return (info.kind == "margin" and "cos" in info.inputs and "centers" not in info.inputs
          and info.stateful is None and info.logit_params is None)


def margin_inputs(name: str, options: Mapping | None = None) -> tuple[str, ...]:
  """The inputs (MARGIN_INPUTS names) a trainer supplies to margin loss `name`
  run with hyperparameters `options`.

  The registered inputs; for a loss that runs another one (LossInfo.inner,
  e.g. Partial FC's margin_loss, from `options` or its default), also that
  loss's inputs besides the cosines and labels the wrapper computes: the key
  of ElasticFace, the mask of UNPG, the quality of CR-FIQA.
  """
  info = REGISTRY.info(name)
  if info.inner is None:
    return info.inputs
  default = inspect.signature(REGISTRY.get(name)).parameters[info.inner].default
  inner = dict(options or {}).get(info.inner, default)
  extra = _inner_loss(inner)[1]
  return info.inputs + tuple(n for n in extra if n not in info.inputs)


@REGISTRY.register("partial_fc", kind="margin",
                   inputs=("embeddings", "labels", "centers", "key"), inner="margin_loss")
def partial_fc(
    embeddings: ArrayLike,
    labels: ArrayLike,
    centers: ArrayLike,
    *,
    key: jax.Array,
    sample_rate: float = 0.1,
    margin_loss: str | Callable[..., jax.Array] = "arcface",
    axis_name=None,
    **inner_inputs: ArrayLike,
) -> jax.Array:
  """Partial FC: a margin loss over the positive centers plus sampled negatives.

  Each step keeps S = min(C, max(ceil(sample_rate C), N)) centers: every class
  that occurs in the batch, then random others (uniform, without
  replacement) up to S, in increasing class order; labels are remapped into
  the kept set and `margin_loss(cosine_logits(embeddings, kept), labels,
  axis_name=axis_name, **forwarded)` gives the losses. A registered margin_loss
  gets its other registered inputs too (`margin_inputs`): embeddings are
  these embeddings, its key is fold_in(key, 2) (independent of the sampling),
  and the per-example ones (where, norms, quality) come in `inner_inputs`.
  Decision: JAX needs a static S, so
  S is at least the batch size N, which guarantees room for every positive
  (insightface instead keeps only the positives when they outnumber S).
  sample_rate = 1 keeps every center in order: the full loss.

  With `axis_name` (data and model parallel, as in the paper), each device
  holds [C / D, d] centers (device k the classes k C / D ...) and its [b, d]
  embeddings and [b] labels; embeddings and labels are all-gathered, each
  device samples from its own shard (C_local in place of C, the key folded
  with the device index, N the global batch; the inner loss's per-example
  inputs are all-gathered too, its key is the same on every device), and the
  margin loss combines its sums over classes across devices. Each device
  returns the values of its own b examples.

  Args:
    embeddings: [N, d] features (this device's [b, d] when sharded).
    labels: [N] integer classes in [0, C) (global ids).
    centers: [C, d] class centers, or [C, K, d] for sub-center losses (this
      device's [C / D, ...] shard when sharded).
    key: PRNG key for the sampling (the same on every device).
    sample_rate: fraction of the centers to keep, in (0, 1] (paper: 0.1).
    margin_loss: a registered margin loss on cosines, stateless, without
      learnable arguments (its default hyperparameters), or a callable
      f(cos, labels, axis_name=...) -> [N] (functools.partial sets its
      hyperparameters and other arguments).
    axis_name: axis the centers are sharded over, or None.
    **inner_inputs: the registered margin_loss's per-example inputs other
      than cos, labels, embeddings and key, by name ([N], or this device's
      [b] when sharded), exactly those it takes: e.g. where for unpg.

  Returns:
    [N] (or this device's [b]) per-example losses.

  References:
    An et al., "Killing Two Birds with One Stone: Efficient and Robust
    Training of Face Recognition CNNs by Partial FC", arXiv:2203.15565.
  """
  if not (isinstance(sample_rate, (int, float)) and 0 < sample_rate <= 1):
    raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
  loss_fn, takes = _inner_loss(margin_loss)
  per_example = sorted(set(takes) - {"embeddings", "key"})
  if sorted(inner_inputs) != per_example:
    raise ValueError(f"partial_fc with margin_loss {margin_loss!r} takes the inner inputs "
                     f"{per_example or 'none'}, got {sorted(inner_inputs) or 'none'}")
  inner_key = jax.random.fold_in(key, 2)
  embeddings, centers = jnp.asarray(embeddings), jnp.asarray(centers)
  local_batch, classes = embeddings.shape[0], centers.shape[0]
  devices = 1 if axis_name is None else jax.lax.axis_size(axis_name)
  all_logits = jax.ShapeDtypeStruct(
      (local_batch, classes * devices), jnp.float32
  )
  labels = class_labels(labels, all_logits)
  if axis_name is not None:
    embeddings = jax.lax.all_gather(embeddings, axis_name, tiled=True)
    labels = jax.lax.all_gather(labels, axis_name, tiled=True)
    inner_inputs = {name: jax.lax.all_gather(jnp.asarray(value), axis_name, tiled=True)
                    for name, value in inner_inputs.items()}
    labels = labels - jax.lax.axis_index(axis_name) * classes
    key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
  labels = labels.astype(jnp.int32)
  here = (labels >= 0) & (labels < classes)
  num_kept = min(
      classes, max(math.ceil(sample_rate * classes), labels.shape[0])
  )
  # Positives score 2, the others U[0, 1): the top S are the positives + random.
  positive = (
      jnp.zeros(classes, bool)
      .at[jnp.where(here, labels, classes)]
      .set(True, mode="drop")
  )
  score = jnp.where(positive, 2.0, jax.random.uniform(key, (classes,)))
  kept = jnp.sort(jax.lax.top_k(score, num_kept)[1])
  position = jnp.full(classes, -1, jnp.int32).at[kept].set(jnp.arange(num_kept))
  labels = jnp.where(here, position[jnp.where(here, labels, 0)], -1)
  cos = cosine_logits(embeddings, centers[kept])
  forwarded = {**inner_inputs, **{name: value for name, value in
                                  (("embeddings", embeddings), ("key", inner_key))
                                  if name in takes}}
  loss = loss_fn(cos, labels, axis_name=axis_name, **forwarded)
  if axis_name is None:
    return loss
  start = jax.lax.axis_index(axis_name) * local_batch
  return jax.lax.dynamic_slice_in_dim(loss, start, local_batch)


@REGISTRY.register("unicom", kind="margin",
                   inputs=("embeddings", "labels", "centers", "key"), inner="margin_loss")
def unicom(
    embeddings: ArrayLike,
    labels: ArrayLike,
    centers: ArrayLike,
    *,
    key: jax.Array,
    feature_rate: float = 0.5,
    sample_rate: float = 0.1,
    margin_loss: str | Callable[..., jax.Array] = "arcface",
    axis_name=None,
    **inner_inputs: ArrayLike,
) -> jax.Array:
  """Unicom: Partial FC on a random subset of the feature dimensions.

  Each step keeps D' = max(1, round(feature_rate d)) of the d dimensions
  (uniform without replacement, in increasing order, the same on every
  device) of both the embeddings and the centers, then applies `partial_fc`
  to them with the same key, so feature_rate = 1 is exactly `partial_fc`.
  Unicom samples both the features and the negative class centers to reduce
  the conflicts between its many pseudo-classes (arXiv:2304.05884, Sec. 3.2);
  feature_rate 0.5 is our default, not a value we found in the paper.

  The arguments other than feature_rate are `partial_fc`'s (an inner loss
  taking embeddings gets the sampled dimensions).

  Args:
    feature_rate: share of the feature dimensions kept, in (0, 1].

  Returns:
    [N] (or this device's [b]) per-example losses.

  References:
    An et al., "Unicom: Universal and Compact Representation Learning for
    Image Retrieval", arXiv:2304.05884.
  """
  if not (isinstance(feature_rate, (int, float)) and 0 < feature_rate <= 1):
    raise ValueError(f"feature_rate must be in (0, 1], got {feature_rate!r}")
  embeddings, centers = jnp.asarray(embeddings), jnp.asarray(centers)
  dim = embeddings.shape[-1]
  kept = max(1, round(feature_rate * dim))
  dims = jnp.sort(jax.lax.top_k(jax.random.uniform(jax.random.fold_in(key, 1), (dim,)),
                                kept)[1])
  return partial_fc(embeddings[:, dims], labels, centers[..., dims], key=key,
                    sample_rate=sample_rate, margin_loss=margin_loss, axis_name=axis_name,
                    **inner_inputs)
