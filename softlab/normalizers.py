"""Normalizers: scores -> weights along one axis.

Every function here has the signature `f(x, axis=-1, where=None, *, <hyper>)`
and returns an array of the shape and floating dtype of `x`. They are the
building block of softlab's attention (the normalizer is an argument there) and
of its losses.

Conventions shared by all of them:
- `where` is a boolean mask broadcastable to `x`; True = keep. A masked entry
  gets exactly 0 (log-normalizers: -inf); a fully masked row is all zeros with
  zero gradient, never NaN.
- An entry equal to -inf is treated as masked. This is how additive attention
  masks say "do not attend", and it is the limit of every formula here except
  softpick's, whose reference implementation also excludes -inf entries.
- Computation happens in float32, or in the input dtype if wider; the result is
  cast back to the input dtype (bf16/f16/f32/f64 are accepted).
- Per-row quantities (`n`) are scalars or arrays broadcastable to the rows,
  i.e. to `x.shape` with `axis` removed; elementwise hyperparameters (`s`,
  `bias`, `scale`) broadcast against `x` itself, so a per-head value of shape
  [N, 1, 1] works on [B, N, T, S] scores.
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from softlab import validation
from softlab.registry import Registry
from softlab.validation import check_positive

_REGISTRY = Registry("normalizer")

get = _REGISTRY.get
names = _REGISTRY.names

# Adaptive-temperature polynomial (highest degree first) from "softmax is not
# enough", mapping the entropy (nats) of softmax(x) to an inverse temperature.
ADAPTIVE_TEMPERATURE_POLY = (-0.037, 0.481, -2.3, 4.917, -1.791)


# ---------------------------------------------------------------------------
# Shared plumbing: validation, masks, dtypes, per-row values.
# ---------------------------------------------------------------------------


def _prepare(x: ArrayLike, axis: int, where: ArrayLike | None):
  """(x in compute dtype with masked entries set to 0, mask, axis, out dtype)."""
  x = jnp.asarray(x)
  if x.ndim == 0:
    raise ValueError("x must have at least one dimension to normalize over")
  if not isinstance(axis, int) or not -x.ndim <= axis < x.ndim:
    raise ValueError(
        f"axis={axis!r} is not a valid axis for x of shape {x.shape}"
    )
  axis = axis % x.ndim
  if jnp.issubdtype(x.dtype, jnp.floating):
    out_dtype = x.dtype
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  else:
    out_dtype = jnp.float32
    x = x.astype(jnp.float32)
  mask = keep_mask(x, where)
  return jnp.where(mask, x, 0), mask, axis, out_dtype


def keep_mask(x: jax.Array, where: ArrayLike | None, *, name: str = "x", hint: str = ""):
  """The entries of `x` that take part: x != -inf, and `where` if given.

  Args:
    x: the scores (its shape is the mask's).
    where: None, or a boolean array broadcastable to x.
    name: how error messages call x.
    hint: appended to the shape error (e.g. how to pass a per-example mask).
  """
  mask = x != -jnp.inf
  if where is None:
    return mask
  return mask & validation.check_mask(where, x.shape, target=name, hint=hint)


def _per_row(value: ArrayLike, x: jax.Array, axis: int, name: str):
  """`value` broadcast to the rows of `x`, with a size-1 `axis` kept."""
  rows = x.shape[:axis] + x.shape[axis + 1 :]
  value = validation.broadcast_to(value, rows, name=name, target="the rows", dtype=x.dtype,
                                 hint=f" of x with shape {x.shape} along axis {axis}")
  return jnp.expand_dims(value, axis)


def _row_count(mask: jax.Array, axis: int, dtype) -> jax.Array:
  """Number of unmasked entries of each row (kept dims)."""
  return jnp.sum(mask, axis=axis, keepdims=True, dtype=dtype)


def _masked_max(x: jax.Array, mask: jax.Array, axis: int) -> jax.Array:
  """Row max over unmasked entries; -inf for a fully masked row (kept dims)."""
  return jnp.max(jnp.where(mask, x, -jnp.inf), axis=axis, keepdims=True)


def _shift(x: jax.Array, mask: jax.Array, axis: int) -> jax.Array:
  """A constant per row (the finite row max, else 0) for shift-invariant maps."""
  m = _masked_max(x, mask, axis)
  return jax.lax.stop_gradient(jnp.where(jnp.isfinite(m), m, 0))


def _centered(x: jax.Array, mask: jax.Array, axis: int) -> jax.Array:
  """x minus its row max: exact near the max, so a later scale loses nothing."""
  return x - _shift(x, mask, axis)


def _safe_divide_rows(w: jax.Array, total: jax.Array) -> jax.Array:
  """w / total, with rows whose total is 0 left at w (which is 0 there)."""
  return w / jnp.where(total > 0, total, 1)


def _l1_normalize(w: jax.Array, mask: jax.Array, axis: int) -> jax.Array:
  """Nonnegative w with masked entries zeroed, divided by its row sum."""
  w = jnp.where(mask, w, 0)
  return _safe_divide_rows(w, jnp.sum(w, axis=axis, keepdims=True))


# ---------------------------------------------------------------------------
# Math on prepared arrays (compute dtype, masked entries already 0).
# ---------------------------------------------------------------------------


def _softmax(x, mask, axis):
  e = jnp.exp(jnp.where(mask, x - _shift(x, mask, axis), -jnp.inf))
  return _safe_divide_rows(e, jnp.sum(e, axis=axis, keepdims=True))


def _log_softmax(x, mask, axis):
  shifted = jnp.where(mask, x - _shift(x, mask, axis), -jnp.inf)
  total = jnp.sum(jnp.exp(shifted), axis=axis, keepdims=True)
  return shifted - jnp.log(jnp.where(total > 0, total, 1))


def _stablemax_branches(x):
  """(x >= 0, x clipped to >= 0, x clipped to < 0): both branches stay finite."""
  positive = x >= 0
  return positive, jnp.where(positive, x, 0), jnp.where(positive, 0, x)


def stablemax_s(x):
  """StableMax's s(x): x + 1 for x >= 0, 1 / (1 - x) below; finite gradients everywhere."""
  positive, x_pos, x_neg = _stablemax_branches(x)
  return jnp.where(positive, x_pos + 1, 1 / (1 - x_neg))


def _log_stablemax_s(x):
  """log s(x) without forming s(x): log1p(x) for x >= 0, -log1p(-x) below."""
  positive, x_pos, x_neg = _stablemax_branches(x)
  return jnp.where(positive, jnp.log1p(x_pos), -jnp.log1p(-x_neg))


def log_softplus(x):
  """log softplus(x), = x (to 1e-13 relative) below -30 where softplus underflows.

  Normalizing softplus(x) as softmax(log softplus(x)) keeps rows whose softplus
  values all underflow (x << 0, where softplus(x) ~ exp(x)) exact.
  """
  tail = x < -30
  return jnp.where(tail, x, jnp.log(jax.nn.softplus(jnp.where(tail, 0, x))))


def softpick_shifted(x, m):
  """exp(x - m) - exp(-m) = exp(-m) (exp(x) - 1) without cancellation, for m >= max(x, 0).

  Subtracting the two exponentials loses every digit when x is near 0 (both
  are about exp(-m)); expm1 keeps them: exp(-m) expm1(x) for x < 0 and
  -exp(x - m) expm1(-x) for x >= 0, both finite (each factor is at most 1 in
  size). Unmasked entries only: x must be finite.
  """
  positive, x_pos, x_neg = _stablemax_branches(x)
  return jnp.where(positive, -jnp.exp(x_pos - m) * jnp.expm1(-x_pos),
                   jnp.exp(-m) * jnp.expm1(x_neg))


def _sorted_descending(u, axis):
  return jnp.flip(jnp.sort(u, axis=axis), axis=axis)


def _positions(u, axis):
  """0, 1, ..., d - 1 along `axis`, shaped to broadcast against u."""
  shape = [1] * u.ndim
  shape[axis] = u.shape[axis]
  return jnp.arange(u.shape[axis]).reshape(shape)


def _ranks(u, axis):
  """1, 2, ..., d along `axis` in u's dtype, shaped to broadcast against u."""
  return (_positions(u, axis) + 1).astype(u.dtype)


def _take_at_count(values, count, axis):
  """values[count - 1] along axis (count >= 1), kept dims."""
  index = jnp.maximum(count.astype(jnp.int32) - 1, 0)
  return jnp.take_along_axis(values, index, axis=axis)


def _bounded_scores(x, mask, axis, scale, floor):
  """scale * (x - row max) clipped at `floor`; masked entries at `floor`.

  Sparsemax and entmax are shift invariant and give weight 0 to every entry
  below (row max - 1) in their units, so clipping there changes nothing but
  keeps all arithmetic O(1) (no cancellation at |x| ~ 1e4).
  """
  u = scale * (x - _shift(x, mask, axis))
  return jnp.where(mask, jnp.maximum(u, floor), floor)


# ---------------------------------------------------------------------------
# Public normalizers.
# ---------------------------------------------------------------------------


@_REGISTRY.register("softmax")
def softmax(x: ArrayLike, axis: int = -1, where: ArrayLike | None = None):
  """Softmax: exp(x_i - max x) / sum_j exp(x_j - max x).

  Args:
    x: scores.
    axis: the axis to normalize over.
    where: boolean mask, True = keep.

  Returns:
    Weights summing to 1 over each row with an unmasked entry.
  """
  x, mask, axis, out_dtype = _prepare(x, axis, where)
  return _softmax(x, mask, axis).astype(out_dtype)


@_REGISTRY.register("log_softmax")
def log_softmax(x: ArrayLike, axis: int = -1, where: ArrayLike | None = None):
  """Log-softmax: x_i - max x - log sum_j exp(x_j - max x); masked -> -inf.

  Args:
    x: scores.
    axis: the axis to normalize over.
    where: boolean mask, True = keep.

  Returns:
    Log-weights; masked entries (and every entry of a fully masked row) -inf.
  """
  x, mask, axis, out_dtype = _prepare(x, axis, where)
  return _log_softmax(x, mask, axis).astype(out_dtype)


@_REGISTRY.register("stablemax")
def stablemax(x: ArrayLike, axis: int = -1, where: ArrayLike | None = None):
  """StableMax: s(x_i) / sum_j s(x_j), s(x) = x + 1 (x >= 0), 1 / (1 - x) (x < 0).

  s grows linearly instead of exponentially, so the weights cannot round to
  exactly one-hot (Softmax Collapse). StableMax(x) = softmax(log s(x)). Both
  branches of s are evaluated on clipped inputs, so the gradient is finite
  everywhere, including x = 1 where the published code divides by zero.

  Args:
    x: scores.
    axis: the axis to normalize over.
    where: boolean mask, True = keep.

  Returns:
    Weights summing to 1 over each row with an unmasked entry.

  References:
    Prieto et al., "Grokking at the Edge of Numerical Stability",
    arXiv:2501.04697.
  """
  x, mask, axis, out_dtype = _prepare(x, axis, where)
  return _l1_normalize(stablemax_s(x), mask, axis).astype(out_dtype)


@_REGISTRY.register("log_stablemax")
def log_stablemax(x: ArrayLike, axis: int = -1, where: ArrayLike | None = None):
  """Log-StableMax: log s(x_i) - log sum_j s(x_j); masked -> -inf.

  log s(x) = log1p(x) for x >= 0 and -log1p(-x) for x < 0, so this is the
  log-softmax of log s(x) and stays accurate where StableMax underflows.

  Args:
    x: scores.
    axis: the axis to normalize over.
    where: boolean mask, True = keep.

  Returns:
    Log-weights; masked entries (and every entry of a fully masked row) -inf.

  References:
    Prieto et al., "Grokking at the Edge of Numerical Stability",
    arXiv:2501.04697.
  """
  x, mask, axis, out_dtype = _prepare(x, axis, where)
  return _log_softmax(_log_stablemax_s(x), mask, axis).astype(out_dtype)


@_REGISTRY.register("ssmax")
def ssmax(
    x: ArrayLike,
    axis: int = -1,
    where: ArrayLike | None = None,
    *,
    s: ArrayLike = 0.43,
    n: ArrayLike | None = None,
):
  """Scalable-Softmax: n^(s x_i) / sum_j n^(s x_j) = softmax((s log n) x)_i.

  n is the number of entries the row may attend to, so the weights keep their
  sharpness as the row grows instead of fading like softmax's. The paper
  learns s per layer and head; its initial value is not fixed by the paper, so
  the default 0.43 is the value of its Figure 1 (entries -2 except one +3:
  max weight 0.9996 at n = 1,000 where softmax gives 0.129). s = 1 / log n_train
  makes SSMax equal softmax at the training length.

  Args:
    x: scores.
    axis: the axis to normalize over.
    where: boolean mask, True = keep.
    s: scaling parameter, broadcast against x (e.g. per head).
    n: entries each row may attend to, broadcastable to the rows; defaults to
      the number of unmasked entries of each row. Values below 1 count as 1.

  Returns:
    Weights summing to 1 over each row with an unmasked entry.

  References:
    Nakanishi, "Scalable-Softmax Is Superior for Attention", arXiv:2501.19399.
  """
  x, mask, axis, out_dtype = _prepare(x, axis, where)
  n = _row_count(mask, axis, x.dtype) if n is None else _per_row(n, x, axis, "n")
  s = validation.broadcast_to(s, x.shape, name="s", target="x of shape", dtype=x.dtype)
  scale = s * jnp.log(jnp.maximum(n, 1))
  return _softmax(scale * _centered(x, mask, axis), mask, axis).astype(out_dtype)


@_REGISTRY.register("sigmoid")
def sigmoid(
    x: ArrayLike,
    axis: int = -1,
    where: ArrayLike | None = None,
    *,
    bias: ArrayLike = 0.0,
):
  """Sigmoid weights: sigmoid(x_i + b), elementwise, no row normalization.

  Sigmoid attention recommends b = -log n (n the sequence length) so the
  initial row sums are O(1); the attention layer supplies that value.

  Args:
    x: scores.
    axis: the axis of the rows (only used to validate; weights are elementwise).
    where: boolean mask, True = keep.
    bias: b, broadcast against x.

  Returns:
    Weights in (0, 1); masked entries 0.

  References:
    Ramapuram et al., "Theory, Analysis, and Best Practices for Sigmoid
    Self-Attention", arXiv:2409.04431.
  """
  x, mask, axis, out_dtype = _prepare(x, axis, where)
  weights = jax.nn.sigmoid(
      x + validation.broadcast_to(bias, x.shape, name="bias", target="x of shape", dtype=x.dtype))
  return jnp.where(mask, weights, 0).astype(out_dtype)


@_REGISTRY.register("softplus")
def softplus(
    x: ArrayLike,
    axis: int = -1,
    where: ArrayLike | None = None,
    *,
    scale: ArrayLike = 1.0,
    n: ArrayLike | None = None,
    sharpen_power: float | None = None,
):
  """LSSA weights: softplus(c x_i) / sum_j softplus(c x_j), optionally sharpened.

  With `sharpen_power` p set (LSSAR), the l1-normalized weights w are
  re-weighted as relu(w_i n - o)^p and renormalized, where o = 1, except o = 0
  for rows with n <= 3 (the paper's first three causal query rows). A row
  whose re-weighted values are all 0 (every w_i <= 1/n, i.e. a uniform row)
  keeps its LSSA weights. The l1 step is computed as softmax(log softplus(c x))
  so rows where every softplus value underflows stay exact, and the power is
  taken of relu(.) / max relu(.) so large p cannot overflow; both are the same
  numbers after normalization.

  Args:
    x: scores.
    axis: the axis to normalize over.
    where: boolean mask, True = keep.
    scale: c, broadcast against x; LSSA attention passes (ln d)(ln n_i) with
      L2-normalized q and k.
    n: entries each row attends to (for the sharpening), broadcastable to the
      rows; defaults to the number of unmasked entries of each row.
    sharpen_power: p > 0 for LSSAR (paper: 3 at the training length, 15 for
      long contexts); None for plain LSSA.

  Returns:
    Weights summing to 1 over each row with an unmasked entry.

  References:
    Gao & Spratling, "Softplus Attention with Re-weighting Boosts Length
    Extrapolation in Large Language Models", arXiv:2501.13428.
  """
  x, mask, axis, out_dtype = _prepare(x, axis, where)
  scale = validation.broadcast_to(scale, x.shape, name="scale", target="x of shape", dtype=x.dtype)
  weights = _softmax(log_softplus(scale * x), mask, axis)
  if sharpen_power is None:
    return weights.astype(out_dtype)
  check_positive(sharpen_power, "sharpen_power")
  n = _row_count(mask, axis, x.dtype) if n is None else _per_row(n, x, axis, "n")
  offset = jnp.where(n <= 3, 0.0, 1.0).astype(x.dtype)
  excess = jnp.where(mask, jax.nn.relu(weights * n - offset), 0)
  peak = jnp.max(excess, axis=axis, keepdims=True)
  ratio = excess / jnp.where(peak > 0, peak, 1)
  positive = ratio > 0
  powered = jnp.where(positive, jnp.where(positive, ratio, 1) ** sharpen_power, 0)
  sharpened = _l1_normalize(powered, mask, axis)
  return jnp.where(peak > 0, sharpened, weights).astype(out_dtype)


@_REGISTRY.register("softpick")
def softpick(
    x: ArrayLike,
    axis: int = -1,
    where: ArrayLike | None = None,
    *,
    eps: ArrayLike = 1e-8,
):
  """Softpick: relu(exp(x_i) - 1) / (sum_j |exp(x_j) - 1| + eps).

  Computed in the shifted form e_i = exp(x_i - m) - exp(-m) (with expm1, so
  scores near 0 keep their digits) with m = max(0, max_j x_j): relu(e_i) / (sum_j |e_j| + eps), so eps lives in
  shifted units as in the reference implementation (default 1e-8 there). The
  max with 0 only matters for rows with every x <= 0, whose weights are all 0
  either way; it keeps exp(-m) from overflowing. Rows need not sum to 1, and
  entries with x <= 0 get exactly 0. Masked entries are excluded from the sum.

  Args:
    x: scores.
    axis: the axis to normalize over.
    where: boolean mask, True = keep.
    eps: stabilizer in the denominator (shifted units).

  Returns:
    Nonnegative weights with row sums <= 1.

  References:
    Zuhri et al., "Softpick: No Attention Sink, No Massive Activations with
    Rectified Softmax", arXiv:2504.20966.
  """
  x, mask, axis, out_dtype = _prepare(x, axis, where)
  m = jnp.maximum(_masked_max(x, mask, axis), 0)
  e = jnp.where(mask, softpick_shifted(jnp.where(mask, x, 0), m), 0)
  total = jnp.sum(jnp.abs(e), axis=axis, keepdims=True)
  weights = jax.nn.relu(e) / (total + jnp.asarray(eps, x.dtype))
  return weights.astype(out_dtype)


@_REGISTRY.register("sparsemax")
def sparsemax(x: ArrayLike, axis: int = -1, where: ArrayLike | None = None):
  """Sparsemax: the Euclidean projection of x onto the simplex, max(x_i - tau, 0).

  tau = (sum_{j in S} x_j - 1) / |S| with S the support found exactly by
  sorting (1 + k x_(k) > sum_{j <= k} x_(j)). tau is then recomputed from the
  unsorted support, so autodiff gives the exact Jacobian diag(s) - s s^T / |S|.

  Args:
    x: scores.
    axis: the axis to normalize over.
    where: boolean mask, True = keep.

  Returns:
    Sparse weights summing to 1 over each row with an unmasked entry.

  References:
    Martins & Astudillo, "From Softmax to Sparsemax", arXiv:1602.02068.
  """
  x, mask, axis, out_dtype = _prepare(x, axis, where)
  u = _bounded_scores(x, mask, axis, 1.0, -2.0)
  ranks = _ranks(u, axis)
  u_sorted = _sorted_descending(u, axis)
  cumulative = jnp.cumsum(u_sorted, axis=axis)
  count = jnp.sum(1 + ranks * u_sorted > cumulative, axis=axis, keepdims=True)
  tau = (_take_at_count(cumulative, count, axis) - 1) / count
  support = mask & (u > tau)
  # Differentiable tau from the support (u is x - const there).
  u = x - _shift(x, mask, axis)
  size = jnp.sum(support, axis=axis, keepdims=True, dtype=x.dtype)
  tau = (jnp.sum(jnp.where(support, u, 0), axis=axis, keepdims=True) - 1) / (
      jnp.maximum(size, 1)
  )
  return jnp.where(support, jax.nn.relu(u - tau), 0).astype(out_dtype)


@_REGISTRY.register("entmax15")
def entmax15(x: ArrayLike, axis: int = -1, where: ArrayLike | None = None):
  """1.5-entmax: relu(x_i / 2 - tau)^2 with tau such that the weights sum to 1.

  Exact sort-based algorithm: for the k largest u = x / 2, tau_k = mean_k -
  sqrt((1 - k var_k) / k); the support is the largest k with tau_k <= u_(k).
  tau is recomputed from the unsorted support, so autodiff gives the exact
  Jacobian diag(g) - g g^T / sum(g), g = sqrt(weights).

  Args:
    x: scores.
    axis: the axis to normalize over.
    where: boolean mask, True = keep.

  Returns:
    Sparse weights summing to 1 over each row with an unmasked entry.

  References:
    Peters, Niculae & Martins, "Sparse Sequence-to-Sequence Models",
    arXiv:1905.05702.
  """
  x, mask, axis, out_dtype = _prepare(x, axis, where)
  u = _bounded_scores(x, mask, axis, 0.5, -2.0)
  ranks = _ranks(u, axis)
  u_sorted = _sorted_descending(u, axis)
  mean = jnp.cumsum(u_sorted, axis=axis) / ranks
  mean_square = jnp.cumsum(u_sorted**2, axis=axis) / ranks
  delta = (1 - ranks * (mean_square - mean**2)) / ranks
  tau_k = mean - jnp.sqrt(jnp.maximum(delta, 0))
  count = jnp.sum(tau_k <= u_sorted, axis=axis, keepdims=True)
  tau = _take_at_count(tau_k, count, axis)
  support = mask & (u > tau)
  # Differentiable tau from the support: sum_S (u_i - tau)^2 = 1.
  u = 0.5 * (x - _shift(x, mask, axis))
  size = jnp.maximum(jnp.sum(support, axis=axis, keepdims=True, dtype=x.dtype), 1)
  mean = jnp.sum(jnp.where(support, u, 0), axis=axis, keepdims=True) / size
  variance = (
      jnp.sum(jnp.where(support, (u - mean) ** 2, 0), axis=axis, keepdims=True)
      / size
  )
  radicand = (1 - size * variance) / size
  positive = radicand > 0
  tau = mean - jnp.where(positive, jnp.sqrt(jnp.where(positive, radicand, 1)), 0)
  return jnp.where(support, (u - tau) ** 2, 0).astype(out_dtype)


@_REGISTRY.register("sa_softmax")
def sa_softmax(
    x: ArrayLike,
    axis: int = -1,
    where: ArrayLike | None = None,
    *,
    normalized: bool = True,
):
  """Self-adjusting softmax: x_i softmax(x)_i, or its normalized form.

  normalized=True: (x_i - lo) / (hi - lo) * softmax(x)_i with
  lo = min(min_j x_j, 0) and hi = max(0, max_j x_j) over the unmasked entries;
  a row with hi = lo (all zeros) gets weights 0. normalized=False: x_i
  softmax(x)_i, which can be negative. Neither sums to 1.

  Args:
    x: scores.
    axis: the axis to normalize over.
    where: boolean mask, True = keep.
    normalized: use the min-max normalized form (the paper's recommended one).

  Returns:
    Weights; masked entries 0.

  References:
    Zheng et al., "Self-Adjusting Softmax", arXiv:2502.18277.
  """
  x, mask, axis, out_dtype = _prepare(x, axis, where)
  probs = _softmax(x, mask, axis)
  if not normalized:
    return (x * probs).astype(out_dtype)
  lo = jnp.minimum(-_masked_max(-x, mask, axis), 0)
  hi = jnp.maximum(_masked_max(x, mask, axis), 0)
  span = hi - lo
  return ((x - lo) / jnp.where(span > 0, span, 1) * probs).astype(out_dtype)


@_REGISTRY.register("gumbel_softmax")
def gumbel_softmax(
    x: ArrayLike,
    axis: int = -1,
    where: ArrayLike | None = None,
    *,
    key: jax.Array,
    temperature: ArrayLike = 1.0,
    hard: bool = False,
):
  """Gumbel-softmax sample: softmax((x + g) / temperature), g ~ Gumbel(0, 1).

  With hard=True the forward value is the one-hot of the sample's argmax and
  the gradient is that of the soft sample (straight-through estimator).

  Args:
    x: unnormalized log-probabilities.
    axis: the axis to normalize over.
    where: boolean mask, True = keep.
    key: PRNG key for the Gumbel noise.
    temperature: > 0; lower is closer to one-hot.
    hard: return one-hot samples with straight-through gradients.

  Returns:
    A relaxed (or one-hot) sample per row; masked entries 0.

  References:
    Jang, Gu & Poole, "Categorical Reparameterization with Gumbel-Softmax",
    arXiv:1611.01144.
  """
  check_positive(temperature, "temperature")
  x, mask, axis, out_dtype = _prepare(x, axis, where)
  noise = jax.random.gumbel(key, x.shape, x.dtype)
  temperature = jnp.asarray(temperature, x.dtype)
  soft = _softmax((_centered(x, mask, axis) + noise) / temperature, mask, axis)
  if not hard:
    return soft.astype(out_dtype)
  winner = jnp.argmax(jnp.where(mask, soft, -1), axis=axis, keepdims=True)
  one_hot = jnp.where(mask & (_positions(soft, axis) == winner), 1.0, 0.0)
  return (one_hot + soft - jax.lax.stop_gradient(soft)).astype(out_dtype)


@_REGISTRY.register("adaptive_softmax")
def adaptive_softmax(
    x: ArrayLike, axis: int = -1, where: ArrayLike | None = None
):
  """Adaptive-temperature softmax: softmax(beta(H) x), H = entropy of softmax(x).

  beta = polyval((-0.037, 0.481, -2.3, 4.917, -1.791), H) with H in nats;
  beta = 1 if H <= 0.5, else max(beta, 1). Sharpens rows that have dispersed
  (high entropy) and leaves confident rows alone. Gradients flow through beta.

  Args:
    x: scores.
    axis: the axis to normalize over.
    where: boolean mask, True = keep.

  Returns:
    Weights summing to 1 over each row with an unmasked entry.

  References:
    Velickovic et al., "softmax is not enough (for sharp out-of-distribution)",
    arXiv:2410.01104.
  """
  x, mask, axis, out_dtype = _prepare(x, axis, where)
  probs = _softmax(x, mask, axis)
  log_probs = jnp.where(mask, _log_softmax(x, mask, axis), 0)
  entropy = -jnp.sum(probs * log_probs, axis=axis, keepdims=True)
  beta = jnp.polyval(jnp.asarray(ADAPTIVE_TEMPERATURE_POLY, x.dtype), entropy)
  beta = jnp.where(entropy > 0.5, jnp.maximum(beta, 1), 1)
  return _softmax(beta * _centered(x, mask, axis), mask, axis).astype(out_dtype)
