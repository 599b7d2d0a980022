"""Metrics: accuracy, top-k, calibration, Softmax Collapse, MSP OOD AUROC.

Per-example metrics return one float per example (of shape
`logits.shape[:-1]`) for the caller to average; scalar metrics reduce over all
kept examples. Every metric takes an optional per-example boolean `where`
(shape `logits.shape[:-1]`, True = keep) so padded examples are excluded:
per-example values are 0 there, scalar ones ignore them (and are 0, or 0.5 for
the AUROC, when none is kept). Logits have the classes on the last axis.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike, DTypeLike

from softlab import normalizers, validation


def _as_logits(logits: ArrayLike, name: str = "logits") -> jax.Array:
  logits = jnp.asarray(logits)
  if logits.ndim == 0:
    raise ValueError(
        f"{name} must have a class axis (the last one), got a scalar"
    )
  return logits


def _labels(labels: ArrayLike, logits: jax.Array) -> jax.Array:
  return validation.check_labels(labels, logits.shape[:-1])


def _keep(where: ArrayLike | None, shape: tuple[int, ...], name: str = "where"):
  """The per-example mask (all True if None)."""
  if where is None:
    return jnp.ones(shape, bool)
  return validation.check_array(where, name, dtype=bool, shape=shape,
                                shape_description=f"the examples' shape {shape}")


def _fraction(hits: jax.Array, keep: jax.Array) -> jax.Array:
  """Share of kept examples with hits (0 if none is kept)."""
  count = jnp.sum(keep, dtype=jnp.float32)
  return jnp.sum(hits & keep, dtype=jnp.float32) / jnp.maximum(count, 1)


def accuracy(
    logits: ArrayLike, labels: ArrayLike, *, where: ArrayLike | None = None
) -> jax.Array:
  """1.0 where argmax_k z_k is the label (ties go to the lowest index), else 0.0.

  Args:
    logits: [..., K] scores.
    labels: [...] integer class indices.
    where: [...] boolean, True = keep; excluded examples give 0.

  Returns:
    [...] float32 0/1 values.
  """
  logits = _as_logits(logits)
  labels = _labels(labels, logits)
  hits = jnp.argmax(logits, axis=-1) == labels
  return (hits & _keep(where, labels.shape)).astype(jnp.float32)


def topk_accuracy(
    logits: ArrayLike, labels: ArrayLike, *, k: int, where: ArrayLike | None = None
) -> jax.Array:
  """1.0 where the label is among the k highest logits (ties: lower index first).

  Args:
    logits: [..., K] scores.
    labels: [...] integer class indices.
    k: 1 <= k <= K.
    where: [...] boolean, True = keep; excluded examples give 0.

  Returns:
    [...] float32 0/1 values; k = 1 equals `accuracy`.
  """
  logits = _as_logits(logits)
  labels = _labels(labels, logits)
  if not isinstance(k, (int, np.integer)) or not 1 <= k <= logits.shape[-1]:
    raise ValueError(
        f"k must be an integer in [1, {logits.shape[-1]}], got {k!r}"
    )
  _, top = jax.lax.top_k(logits, int(k))
  hits = jnp.any(top == labels[..., None], axis=-1)
  return (hits & _keep(where, labels.shape)).astype(jnp.float32)


def expected_calibration_error(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    num_bins: int = 15,
    where: ArrayLike | None = None,
) -> jax.Array:
  """Expected calibration error of the top-1 softmax confidence.

  ECE = sum_b (n_b / n) |accuracy_b - mean confidence_b| over num_bins equal
  bins of (0, 1], bin b holding confidences in ((b - 1) / B, b / B].

  Args:
    logits: [..., K] scores.
    labels: [...] integer class indices.
    num_bins: B >= 1.
    where: [...] boolean, True = keep.

  Returns:
    Scalar float32 ECE in [0, 1].

  References:
    Guo et al., "On Calibration of Modern Neural Networks", arXiv:1706.04599.
  """
  if not isinstance(num_bins, (int, np.integer)) or num_bins < 1:
    raise ValueError(f"num_bins must be an integer >= 1, got {num_bins!r}")
  logits = _as_logits(logits)
  labels = _labels(labels, logits)
  keep = _keep(where, labels.shape).ravel()
  probs = normalizers.softmax(logits.astype(jnp.float32))
  confidence = jnp.max(probs, axis=-1).ravel()
  correct = accuracy(logits, labels).ravel()
  num_bins = int(num_bins)
  bins = jnp.ceil(confidence * num_bins).astype(jnp.int32) - 1
  bins = jnp.clip(bins, 0, num_bins - 1)
  weight = keep.astype(jnp.float32)
  gap = jax.ops.segment_sum(
      weight * (correct - confidence), bins, num_segments=num_bins
  )
  return jnp.sum(jnp.abs(gap)) / jnp.maximum(jnp.sum(weight), 1)


def softmax_collapse_fraction(
    logits: ArrayLike, *, dtype: DTypeLike, where: ArrayLike | None = None
) -> jax.Array:
  """Share of examples in Softmax Collapse: sum_k exp(z_k - max z) is exactly 1.

  Pass the dtype the loss is computed in. In a collapsed row every non-top
  class has rounded away in the normalizer, so the top probability is exactly
  1: a correct example's CE loss is exactly 0 and so is its gradient at the
  label. The onset depends on how the sum is accumulated; with 113 classes
  and all other logits equal, the paper reports collapse from a logit gap of
  about 12.4 (float16), 19.3 (float32), 40.1 (float64); XLA on CPU gives
  12.3, 20.1 and 40.2.

  Args:
    logits: [..., K] scores.
    dtype: the dtype the sum is computed in.
    where: [...] boolean, True = keep.

  Returns:
    Scalar float32 fraction.

  References:
    Prieto et al., "Grokking at the Edge of Numerical Stability",
    arXiv:2501.04697.
  """
  logits = _as_logits(logits)
  z = logits.astype(dtype)
  total = jnp.sum(jnp.exp(z - jnp.max(z, axis=-1, keepdims=True)), axis=-1)
  return _fraction(total == 1, _keep(where, logits.shape[:-1]))


def zero_loss_fraction(
    per_example_loss: ArrayLike, *, where: ArrayLike | None = None
) -> jax.Array:
  """Share of examples whose loss is exactly 0 (Softmax Collapse's other sign).

  Args:
    per_example_loss: [...] losses.
    where: [...] boolean, True = keep.

  Returns:
    Scalar float32 fraction.

  References:
    Prieto et al., "Grokking at the Edge of Numerical Stability",
    arXiv:2501.04697.
  """
  loss = jnp.asarray(per_example_loss)
  return _fraction(loss == 0, _keep(where, loss.shape))


def msp_auroc(
    in_logits: ArrayLike,
    out_logits: ArrayLike,
    *,
    in_where: ArrayLike | None = None,
    out_where: ArrayLike | None = None,
) -> jax.Array:
  """AUROC of the max softmax probability, in- vs out-of-distribution examples.

  AUROC = P(score_in > score_out) + P(score_in = score_out) / 2, computed from
  mid-ranks. The score is max_k log softmax(z)_k (a monotone function of the
  MSP, so the AUROC is the same, with more resolution near 1), in float32.

  Args:
    in_logits: [..., K] logits of in-distribution examples (positives).
    out_logits: [..., K] logits of out-of-distribution examples.
    in_where: in_logits.shape[:-1] boolean, True = keep.
    out_where: out_logits.shape[:-1] boolean, True = keep.

  Returns:
    Scalar float32 AUROC in [0, 1] (0.5 if either side has no kept example).

  References:
    Hendrycks & Gimpel, "A Baseline for Detecting Misclassified and
    Out-of-Distribution Examples in Neural Networks", arXiv:1610.02136.
  """
  scores, keep, is_positive, positives, negatives = _msp_scores(in_logits, out_logits, in_where,
                                                               out_where)
  ranked = jnp.sort(jnp.where(keep, scores, jnp.inf))
  below = jnp.searchsorted(ranked, scores, side="left")
  not_above = jnp.searchsorted(ranked, scores, side="right")
  mid_rank = (below + not_above + 1) / 2
  n_pos = jnp.sum(positives, dtype=jnp.float32)
  n_neg = jnp.sum(negatives, dtype=jnp.float32)
  rank_sum = jnp.sum(jnp.where(is_positive, mid_rank, 0), dtype=jnp.float32)
  pairs = n_pos * n_neg
  auroc = (rank_sum - n_pos * (n_pos + 1) / 2) / jnp.maximum(pairs, 1)
  return jnp.where(pairs > 0, auroc, 0.5)


def msp_aupr(
    in_logits: ArrayLike,
    out_logits: ArrayLike,
    *,
    in_where: ArrayLike | None = None,
    out_where: ArrayLike | None = None,
) -> jax.Array:
  """Area under the precision-recall curve of the max softmax probability, in-
  distribution examples as positives (AUPR-In).

  The average precision AP = sum_t (R_t - R_{t-1}) P_t over the distinct score
  thresholds t (precision P and recall R of "score >= t"), which is the mean
  over positives of the precision at the positive's own score; ties count as
  one threshold (as scikit-learn's average_precision_score). Scores as in
  `msp_auroc`.

  Args:
    in_logits: [..., K] logits of in-distribution examples (positives).
    out_logits: [..., K] logits of out-of-distribution examples.
    in_where: in_logits.shape[:-1] boolean, True = keep.
    out_where: out_logits.shape[:-1] boolean, True = keep.

  Returns:
    Scalar float32 AUPR in [0, 1] (0 if no positive is kept).

  References:
    Hendrycks & Gimpel, "A Baseline for Detecting Misclassified and
    Out-of-Distribution Examples in Neural Networks", arXiv:1610.02136.
  """
  scores, keep, is_positive, positives, _ = _msp_scores(in_logits, out_logits, in_where,
                                                        out_where)
  all_sorted = jnp.sort(jnp.where(keep, scores, -jnp.inf))
  positive_sorted = jnp.sort(jnp.where(is_positive, scores, -jnp.inf))
  n = scores.shape[0]
  at_least = n - jnp.searchsorted(all_sorted, scores, side="left")  # kept with score >= s
  positive_at_least = n - jnp.searchsorted(positive_sorted, scores, side="left")
  precision = positive_at_least / jnp.maximum(at_least, 1)
  n_pos = jnp.sum(positives, dtype=jnp.float32)
  return jnp.sum(jnp.where(is_positive, precision, 0), dtype=jnp.float32) / jnp.maximum(n_pos, 1)


def _msp_scores(in_logits, out_logits, in_where, out_where):
  """(scores, keep, is_positive, positives, negatives): max log-softmax scores of the in- then
  out-of-distribution examples, and which are kept / kept positives."""
  in_logits = _as_logits(in_logits, "in_logits")
  out_logits = _as_logits(out_logits, "out_logits")

  def score(z):
    return jnp.max(normalizers.log_softmax(z.astype(jnp.float32)), axis=-1).ravel()

  positives = _keep(in_where, in_logits.shape[:-1], "in_where").ravel()
  negatives = _keep(out_where, out_logits.shape[:-1], "out_where").ravel()
  scores = jnp.concatenate([score(in_logits), score(out_logits)])
  keep = jnp.concatenate([positives, negatives])
  is_positive = jnp.concatenate([positives, jnp.zeros_like(negatives)])
  return scores, keep, is_positive, positives, negatives
