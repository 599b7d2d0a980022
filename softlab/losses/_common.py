"""Helpers shared by the loss modules."""

import jax
import jax.numpy as jnp

from softlab import normalizers, validation


def compute_dtype(*arrays, dtype=None):
  """The dtype a loss computes in: `dtype` if given, else float32 or wider input."""
  if dtype is not None:
    return jnp.dtype(dtype)
  result = jnp.float32
  for array in arrays:
    if jnp.issubdtype(jnp.asarray(array).dtype, jnp.floating):
      result = jnp.promote_types(result, jnp.asarray(array).dtype)
  return jnp.dtype(result)


# --- Collective-aware log-sum-exp and L2 normalization (contrastive, margin, vocab).


def merge_logsumexp(m, total, axis_name=None):
  """log sum exp from per-device parts: each holds m (its max, -inf if empty) and total.

  total = sum exp(x - m) over the device's part (m = 0 stands in for -inf
  there); with `axis_name` the parts are merged across that axis (pmax of m,
  psum of the rescaled totals). Rows with nothing to sum give -inf, rows with
  a NaN total NaN. m must not carry gradients (it is a shift); total may.
  """
  top = m if axis_name is None else jax.lax.pmax(m, axis_name)
  top = jnp.where(jnp.isfinite(top), top, 0)
  if axis_name is not None:
    total = jax.lax.psum(
        total * jnp.exp(jnp.where(jnp.isfinite(m), m - top, -jnp.inf)), axis_name
    )
  empty = total == 0  # not total > 0: a NaN total (a NaN entry) stays NaN
  return jnp.where(empty, -jnp.inf, top + jnp.log(jnp.where(empty, 1, total)))


def logsumexp(x, where=None, axis_name=None):
  """log sum_j exp(x_j) over the last axis, whose entries may be split over `axis_name`.

  Entries with where = False are left out; a row with none gives -inf (its
  gradient is 0). Differentiable in x.
  """
  keep = jnp.ones(x.shape, bool) if where is None else where
  m = jax.lax.stop_gradient(jnp.max(jnp.where(keep, x, -jnp.inf), axis=-1))
  shift = jnp.where(jnp.isfinite(m), m, 0)[..., None]
  total = jnp.sum(jnp.exp(jnp.where(keep, x - shift, -jnp.inf)), axis=-1)
  return merge_logsumexp(m, total, axis_name)


def l2_normalize(x, axis=-1, eps=1e-12):
  """x / max(||x||, eps) along `axis`: unit rows, finite gradients at x = 0."""
  norm2 = jnp.sum(x * x, axis=axis, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(norm2, eps * eps))


# ---------------------------------------------------------------------------
# Classification plumbing: logits, class masks and integer labels.
# ---------------------------------------------------------------------------


def prepare_logits(logits, where=None, dtype=None):
  """(logits in the compute dtype with masked entries set to 0, class mask).

  The mask is `where` (boolean, broadcast to the logits; True = keep) and
  logits != -inf, as in softlab.normalizers. An example with a kept NaN or
  +inf logit gets NaN in all its kept logits (`normalizers.kept_scores`), so
  its loss is NaN instead of a finite value from its other logits.
  """
  logits = jnp.asarray(logits)
  if logits.ndim == 0:
    raise ValueError("logits must have a class axis (the last one), got a scalar")
  dtype = compute_dtype(logits, dtype=dtype)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f"dtype must be a floating dtype, got {dtype}")
  x = logits.astype(dtype)
  mask = normalizers.keep_mask(
      x, where, name="logits", hint="; a per-example mask needs a trailing axis (where[..., None])")
  return normalizers.kept_scores(x, mask, -1), mask


def class_labels(labels, logits):
  """Integer labels of shape logits.shape[:-1]; range-checked when concrete."""
  return validation.check_labels(
      labels, logits.shape[:-1], logits.shape[-1],
      hint=" (probabilities go to the soft-label losses as label_probs)")


def broadcast_to_logits(value, logits, name):
  """A per-class array (targets, margins) broadcast to the logits, their dtype."""
  return validation.broadcast_to(value, logits.shape, name=name, target="logits of shape",
                                 dtype=logits.dtype)


def prepare_classification(logits, labels, where=None, dtype=None):
  """(x, mask, one_hot, valid) for a loss with integer labels.

  x and mask as from `prepare_logits`; one_hot marks the label's class; valid
  marks the examples whose label class is kept (so not fully masked). Losses
  return 0 for the other examples.
  """
  x, mask = prepare_logits(logits, where, dtype)
  labels = class_labels(labels, x)
  one_hot = labels[..., None] == jnp.arange(x.shape[-1])
  return x, mask, one_hot, jnp.any(one_hot & mask, axis=-1)


def label_value(values, one_hot):
  """values at the label's class (0 where the label indicator is all False)."""
  return jnp.sum(jnp.where(one_hot, values, 0), axis=-1)


def masked_log_softmax(x, mask):
  """Log-softmax over the kept classes; masked entries 0 (finite), not -inf."""
  return jnp.where(mask, normalizers.log_softmax(x, where=mask), 0)


def class_count(mask, dtype):
  """Number of kept classes per example."""
  return jnp.sum(mask, axis=-1, dtype=dtype)


def safe_pow(base, exponent):
  """base ** exponent for base >= 0 with 0 ** 0 = 1 and finite gradients at 0."""
  positive = base > 0
  powered = jnp.where(positive, base, 1) ** exponent
  at_zero = jnp.where(exponent == 0, 1, 0).astype(base.dtype)
  return jnp.where(positive, powered, at_zero)


def normalized_focal(log_probs, one_hot, mask, gamma, detach_weights=False):
  """NFL = FL_y / sum_k FL_k, FL_k = -(1 - p_k)^gamma log p_k, over the kept classes.

  In [0, 1]; gamma = 0 gives NCE; 0 with one kept class. `detach_weights`:
  the factors (1 - p_k)^gamma are constants for the gradient (same value).

  References:
    Ma et al., "Normalized Loss Functions for Deep Learning with Noisy
    Labels", arXiv:2006.13554 (NFL: Section 3, the normalized form of Eq. 5).
  """
  weights = safe_pow(-jnp.expm1(log_probs), gamma)
  if detach_weights:
    weights = jax.lax.stop_gradient(weights)
  focal = -weights * log_probs
  total = jnp.sum(jnp.where(mask, focal, 0), axis=-1)
  single = total == 0  # one kept class; a NaN total (NaN logits) stays NaN
  ratio = label_value(focal, one_hot) / jnp.where(single, 1, total)
  return jnp.where(single, 0, ratio)


def normalized_cross_entropy(log_probs, one_hot, mask):
  """NCE = log p_y / sum_k log p_k over the kept classes (0 with one class).

  The gamma = 0 case of `normalized_focal`.

  References:
    Ma et al., "Normalized Loss Functions for Deep Learning with Noisy
    Labels", arXiv:2006.13554.
  """
  return normalized_focal(log_probs, one_hot, mask, 0.0)
