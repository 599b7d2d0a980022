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
- NaN in, NaN out: a NaN or +inf among a row's kept entries makes every kept
  weight of that row NaN (`kept_scores`), since weights from the row's other
  entries would hide the fault from non-finite checks downstream. Masked
  entries keep weight 0 (log-normalizers: -inf), and a NaN in a masked entry
  changes nothing.
- Computation happens in float32, or in the input dtype if wider; the result is
  cast back to the input dtype (bf16/f16/f32/f64 are accepted).
- Per-row quantities (`n`) are scalars or arrays broadcastable to the rows,
  i.e. to `x.shape` with `axis` removed; elementwise hyperparameters (`s`,
  `bias`, `scale`) broadcast against `x` itself, so a per-head value of shape
  [N, 1, 1] works on [B, N, T, S] scores.

Attention reads how to use each normalizer from its `AttentionSpec`, given at
registration beside the function (`register(name, attention=...)`); the
normalizers that give no attention weights say why (`not_weights=...`).
"""

import dataclasses
import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

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
  """(x in compute dtype by `kept_scores` (masked entries 0), mask, axis, out dtype)."""
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
  return kept_scores(x, mask, axis), mask, axis, out_dtype


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


def nonfinite_rows(x: jax.Array, mask: jax.Array, axis) -> jax.Array:
  """+0 for each row whose kept entries are all finite, NaN for one that keeps a NaN or +-inf.

  x - x is +0 for a finite entry and NaN otherwise; its sum over the kept
  entries of a row (kept dims) carries no gradient. Subtracting it from a
  value leaves the value as it is (-0 included) unless the row is not finite.

  Args:
    x: the scores.
    mask: the kept entries, broadcastable to x (masked entries are ignored).
    axis: the axis (or axes) of a row.
  """
  x = jnp.where(mask, x, 0)
  return jax.lax.stop_gradient(jnp.sum(x - x, axis=axis, keepdims=True))


def kept_scores(x: jax.Array, mask: jax.Array, axis) -> jax.Array:
  """x on kept entries, 0 on masked ones; all kept entries NaN in a row that keeps a non-finite one.

  A row with a NaN or infinite score has no meaningful weights, and weights
  (or a loss) computed from its other entries would be finite numbers that
  hide the fault from non-finite checks downstream, such as the training
  loop's stop on a non-finite loss. So the row is made NaN at the source, by
  subtracting `nonfinite_rows` from its kept entries: a finite row keeps its
  values and gradients exactly. Masked entries, NaN ones included, are 0 and
  never spread. With a mask from `keep_mask`, -inf entries are masked, so
  only NaN and +inf make a row NaN.

  Args:
    x: the scores.
    mask: the kept entries (e.g. `keep_mask`'s), broadcastable to x.
    axis: the axis (or axes) of a row.
  """
  x = jnp.where(mask, x, 0)
  return jnp.where(mask, x - nonfinite_rows(x, mask, axis), 0)


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
  """A constant per row (the finite row max, else 0) for shift-invariant maps.

  Masked entries enter the max as the dtype's lowest finite number, not -inf,
  so no intermediate is infinite (`jax.debug_infs` holds on masked rows).
  """
  lowest = jnp.finfo(x.dtype).min
  m = jnp.max(jnp.where(mask, x, lowest), axis=axis, keepdims=True)
  kept = jnp.any(mask, axis=axis, keepdims=True) & jnp.isfinite(m)
  return jax.lax.stop_gradient(jnp.where(kept, m, 0))


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


def log_count(n):
  """log n with n < 1 (a row with no entry) counted as 1, so the log is finite (0)."""
  return jnp.log(jnp.maximum(n, 1))


# ---------------------------------------------------------------------------
# Attention specs: how softlab.attention uses each normalizer.
# ---------------------------------------------------------------------------


def _unchanged_qk(query, key):
  return query, key


def inverse_sqrt_scale(head_dim: int) -> float:
  """1 / sqrt(d), the usual multiplier of q.k."""
  return 1 / math.sqrt(head_dim)


def _identity(x):
  return x


def _never(kwargs) -> bool:
  return False


def _always(kwargs) -> bool:
  return True


def _positive_or_one(total, hyper):
  """The accumulated row sum as divisor; 1 where it is 0 (those rows are all 0)."""
  return jnp.where(total > 0, total, 1)


def head_values(value: jax.Array, head_shape: tuple[int, ...]) -> jax.Array:
  """A per-head hyperparameter ([] or [N]) reshaped to broadcast over rows."""
  return value if value.ndim == 0 else value.reshape(head_shape)


@dataclasses.dataclass(frozen=True)
class Rows:
  """What a spec's per-row terms are computed from (the attention builds it).

  Attributes:
    kwargs: the hyperparameters the caller gave (per-head ones as arrays of
      shape [] or [N]).
    defaults: the normalizer's keyword defaults.
    n: keys each query row may attend, in the attention's row layout; None
      when the spec's `needs_row_counts` says it is not needed.
    head_shape: the shape a per-head value [N] takes to broadcast over the
      rows, e.g. (N, 1) for rows [B, N, T].
    head_dim: d, the size of q and k.
    num_keys: S, the number of keys of a sequence.
    dtype: the compute dtype.
  """

  kwargs: Mapping[str, Any]
  defaults: Mapping[str, Any]
  n: jax.Array | None
  head_shape: tuple[int, ...]
  head_dim: int
  num_keys: int
  dtype: Any

  def given(self, name: str) -> bool:
    """Whether the caller gave hyperparameter `name`."""
    return name in self.kwargs

  def value(self, name: str) -> jax.Array:
    """Hyperparameter `name` (given, else its default), shaped per head."""
    value = self.kwargs.get(name, self.defaults.get(name))
    return head_values(jnp.asarray(value, self.dtype), self.head_shape)


@dataclasses.dataclass(frozen=True)
class LayerParam:
  """A hyperparameter that the Flax attention layer holds for its normalizer.

  With name = "<normalizer>_<kwarg>" (also the name of the learned parameter,
  one value per head), the layer and the model config get the fields:
  - always_learned: `<name>_init`, the initial value (default: the function's
    default of `kwarg`);
  - otherwise: `<name>`, a fixed value, and `<name>_learnable` (default
    False), which makes that value the initial one of a learned parameter.
    With `automatic` set, `<name>` defaults to that string, which leaves the
    hyperparameter to the attention's own default (it cannot be learned).

  Attributes:
    kwarg: the normalizer keyword it sets.
    always_learned: see above.
    automatic: see above.
    doc: what the field means, one line for the layer's docstring.
  """

  kwarg: str
  always_learned: bool = False
  automatic: str | None = None
  doc: str = ""


@dataclasses.dataclass(frozen=True)
class Reweighting:
  """A second pass over the keys, for numerators that need the row sum first.

  Enabled when the static hyperparameter `switch` is not None; its value must
  be > 0. numerators(e, valid, l, n, value) -> the second pass's numerators
  of a block, where e are the first pass's numerators given the final row
  shift (e = exp(t - m), so max e = 1 on every row with an entry), l the first
  pass's row divisor and n the keys per row (both [rows]). The second pass
  sums its numerators into the new row sum.
  """

  switch: str
  numerators: Callable[..., jax.Array]


@dataclasses.dataclass(frozen=True)
class OnlineForm:
  """How chunked attention computes a normalizer block by block.

  In each block the scores x of row i become t = transform(c_i x + b_i)
  (c, b the spec's row terms, left out when None). The online state per row is
  a shift m and a row total:
  - terms(t, m, valid, hyper) -> (numerators, row-sum terms): arrays of t's
    shape, 0 where `valid` is False, m broadcast to the block; the row-sum
    terms are None when rows are not divided by a sum (`row_sums` False), and
    may be the numerators object itself.
  - running_max: m is the running max of t (from `initial_shift`), and the
    total and the output are rescaled by exp(m_old - m_new) as it grows
    (terms must scale that way); otherwise m stays 0.
  - shift_invariant: with a running max, whether the output is the same for
    any m (the denominator scales with the sums, as softmax's). False when the
    normalizer uses m = max(initial_shift, row max of t) itself (softpick adds
    eps in shifted units): the backward pass then differentiates through m
    too, passing its gradient to the first key where t is largest. Not with a
    reweighting.
  - denominator(total, hyper) -> the divisor of the numerators per row, total
    plus a constant (the backward pass takes its derivative in total as 1).
  - static: the hyperparameters the form reads. `hyper` is a dict holding
    each with the value the dense path gives the function (the one in
    normalizer_kwargs, else the function's default) as a Python number or
    None: the loops are compiled around them, so chunked attention refuses a
    traced or per-head value for them (implementation=None then runs dense).
    Hyperparameters that are learned or given per head reach the form
    through the row terms c and b instead.
  - reweighting: an optional second pass (see `Reweighting`).

  The custom VJP recomputes blocks with these functions, so they need only be
  differentiable by JAX.
  """

  terms: Callable[..., tuple[jax.Array, jax.Array | None]]
  transform: Callable[[jax.Array], jax.Array] = _identity
  running_max: bool = False
  initial_shift: float = -math.inf
  shift_invariant: bool = True
  row_sums: bool = True
  denominator: Callable[..., jax.Array] = _positive_or_one
  static: tuple[str, ...] = ()
  reweighting: Reweighting | None = None

  def __post_init__(self):
    if self.reweighting is not None and not self.shift_invariant:
      raise ValueError("an OnlineForm with a reweighting must be shift invariant")


@dataclasses.dataclass(frozen=True)
class AttentionSpec:
  """How softlab.attention uses a normalizer; given once, at its registration.

  Attributes:
    prepare_qk: (q, k) -> (q, k) as they enter q.k (e.g. LSSA's per-row L2
      normalization).
    default_scale: head dim d -> the multiplier of q.k when none is given.
    row_terms: Rows -> (c, b), a per-row multiplier and offset of the scores
      (x -> c x + b), each broadcastable to the rows, or None where unused;
      None for no row terms.
    needs_row_counts: the given hyperparameters -> whether `row_terms` or the
      online form need n, the number of keys per row.
    multiplier_kwarg, offset_kwarg: the normalizer keyword through which dense
      attention passes c (b); None when the normalizer computes it itself from
      its hyperparameters and its own row count (ssmax), or has none.
    per_head: hyperparameters that may be given per head (shape [] or [N]).
    layer_params: what a Flax attention layer holds for it (`LayerParam`).
    online: its form for chunked attention (`OnlineForm`); None: dense only.
    rows_sum_to_one: the weights of every row with a key to attend sum to 1.
    examples: (keyword, value) pairs: a value other than the default of each
      hyperparameter whose default is not a number (e.g. None), for the tests
      that run attention away from the defaults (they vary numbers and bools
      themselves).
  """

  prepare_qk: Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]] = _unchanged_qk
  default_scale: Callable[[int], float] = inverse_sqrt_scale
  row_terms: Callable[[Rows], tuple[jax.Array | None, jax.Array | None]] | None = None
  needs_row_counts: Callable[[Mapping[str, Any]], bool] = _never
  multiplier_kwarg: str | None = None
  offset_kwarg: str | None = None
  per_head: tuple[str, ...] = ()
  layer_params: tuple[LayerParam, ...] = ()
  online: OnlineForm | None = None
  rows_sum_to_one: bool = True
  examples: tuple[tuple[str, Any], ...] = ()


_SPECS: dict[str, AttentionSpec] = {}
_NOT_WEIGHTS: dict[str, str] = {}


def register(
    name: str, *, attention: AttentionSpec | None = None, not_weights: str | None = None
) -> Callable[[Any], Any]:
  """Decorator registering normalizer `name` with how attention may use it.

  Args:
    name: the registry name.
    attention: its AttentionSpec; or
    not_weights: why it gives no attention weights (e.g. "returns log-weights").
  """
  if (attention is None) == (not_weights is None):
    raise ValueError(f"normalizer {name!r}: give exactly one of attention= and not_weights=")
  add = _REGISTRY.register(name)

  def decorator(fn):
    if attention is not None:
      _check_spec_keywords(name, attention, fn)
    add(fn)
    if attention is None:
      _NOT_WEIGHTS[name] = not_weights
    else:
      _SPECS[name] = attention
    return fn

  return decorator


def _keyword_only(fn) -> dict[str, Any]:
  """fn's keyword-only parameters with their defaults."""
  params = inspect.signature(fn).parameters.values()
  return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _check_spec_keywords(name: str, spec: AttentionSpec, fn) -> None:
  """ValueError if `spec` names a keyword that `fn` does not take.

  The dense path hands every hyperparameter to the function, so a keyword
  that only the spec knows could never be given.
  """
  named = {spec.multiplier_kwarg, spec.offset_kwarg, *spec.per_head,
           *(param.kwarg for param in spec.layer_params), *(key for key, _ in spec.examples)}
  if spec.online is not None:
    named.update(spec.online.static)
    if spec.online.reweighting is not None:
      named.add(spec.online.reweighting.switch)
  keywords = _keyword_only(fn)
  unknown = sorted(key for key in named - {None} if key not in keywords)
  if unknown:
    raise ValueError(
        f"normalizer {name!r}: its spec names {', '.join(map(repr, unknown))}, not a"
        f" keyword-only parameter of its function; valid: {', '.join(keywords) or 'none'}"
    )


def unregister(name: str) -> None:
  """Removes normalizer `name` and its spec (tests register temporary ones)."""
  _REGISTRY.unregister(name)
  _SPECS.pop(name, None)
  _NOT_WEIGHTS.pop(name, None)


def attention_names() -> tuple[str, ...]:
  """Names of the registered normalizers usable as attention weights, sorted."""
  return tuple(name for name in names() if name in _SPECS)


def attention_spec(name: Any) -> AttentionSpec:
  """The AttentionSpec of `name`; ValueError if it gives no attention weights."""
  valid = ", ".join(attention_names())
  if isinstance(name, str) and name in _NOT_WEIGHTS:
    raise ValueError(
        f"normalizer {name!r} {_NOT_WEIGHTS[name]}, not attention weights;"
        f" valid: {valid}"
    )
  if not isinstance(name, str) or name not in _SPECS:
    raise ValueError(f"unknown normalizer {name!r}; valid: {valid}")
  return _SPECS[name]


def keyword_defaults(name: str) -> dict[str, Any]:
  """The keyword-only hyperparameters of normalizer `name` with their defaults."""
  return _keyword_only(get(name))


def _exp_terms(t, m, valid, hyper):
  """exp(t - m) on valid entries, else 0: numerators and row-sum terms alike."""
  e = jnp.exp(jnp.where(valid, t - m, -jnp.inf))
  return e, e


# Softmax's online form (Milakov & Gimelshein, "Online normalizer calculation
# for softmax", arXiv:1805.02867): a running row max, sums rescaled as it grows.
SOFTMAX_ONLINE = OnlineForm(terms=_exp_terms, running_max=True)


# ---------------------------------------------------------------------------
# Math on prepared arrays (compute dtype, masked entries already 0).
# ---------------------------------------------------------------------------


def _softmax(x, mask, axis):
  e = jnp.where(mask, jnp.exp(jnp.where(mask, x - _shift(x, mask, axis), 0)), 0)
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


def _support(u, tau, mask):
  """The kept entries above the threshold: mask & not (u <= tau).

  Written so that a NaN row (`kept_scores`), whose u and tau are NaN, keeps
  all its kept entries and so gets NaN weights rather than zeros.
  """
  return mask & ~(u <= tau)


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


def _mantissa_exponent_sum(m, n, axis):
  """(S, N) with sum_i m_i 2^n_i = S 2^N, accumulated pairwise in one reduction.

  Combining (m1, n1) and (m2, n2) keeps the larger exponent N = max(n1, n2)
  and rescales the other mantissa by 2^(n - N) <= 1, so no partial sum grows
  past (number of entries) x max m. Pairs with n = -inf (masked) add 0.
  """

  def combine(a, b):
    (m1, n1), (m2, n2) = a, b
    top = jnp.maximum(n1, n2)
    scale = lambda e: jnp.exp2(jnp.where(e == top, 0, e - top))
    return m1 * scale(n1) + m2 * scale(n2), top

  zero = jnp.zeros((), m.dtype)
  total, top = jax.lax.reduce((m, n), (zero, zero - jnp.inf), combine, (axis,))
  return jnp.expand_dims(total, axis), jnp.expand_dims(top, axis)


# ln 2 = hi + lo with hi's low bits zero, so n * hi is exact for |n| < 2^15
# (float32) or 2^20 (float64): Cody-Waite range reduction, as the paper's kernels.
_LN2_SPLIT = {
    jnp.dtype(jnp.float32): (0.693359375, -2.12194440e-4),
    jnp.dtype(jnp.float64): (6.93147180369123816490e-01, 1.90821492927058770002e-10),
}


def _reduce_by_ln2(x, n):
  """x - n ln 2 without the rounding error of n * ln 2 (x ~ 1e4 keeps 7 digits)."""
  hi, lo = _LN2_SPLIT[jnp.dtype(x.dtype)]
  return (x - n * hi) - n * lo


def _two_pass_softmax(x, mask, axis):
  """Softmax by the two-pass algorithm; its Jacobian is softmax's (custom JVP).

  Pass 1 writes exp(x_i) = m_i 2^n_i with n_i = round(x_i / ln 2) and
  m_i = exp(x_i - n_i ln 2) in [2^-1/2, 2^1/2] (never overflows) and sums the
  pairs (`_mantissa_exponent_sum`); pass 2 gives y_i = (m_i / S) 2^(n_i - N).
  No row max is needed first.
  """

  @jax.custom_jvp
  def normalize(x):
    n = jnp.where(mask, jnp.round(x / math.log(2)), -jnp.inf)
    m = jnp.where(mask, jnp.exp(_reduce_by_ln2(x, jnp.where(mask, n, 0))), 0)
    total, top = _mantissa_exponent_sum(m, n, axis)
    gap = jnp.where(mask & jnp.isfinite(top), n - jnp.where(jnp.isfinite(top), top, 0), -jnp.inf)
    return _safe_divide_rows(m * jnp.exp2(gap), total)

  @normalize.defjvp
  def _(primals, tangents):
    y = normalize(*primals)
    t = jnp.where(mask, tangents[0], 0)
    return y, y * (t - jnp.sum(y * t, axis=axis, keepdims=True))

  return normalize(x)


@register("softmax", attention=AttentionSpec(online=SOFTMAX_ONLINE))
def softmax(
    x: ArrayLike, axis: int = -1, where: ArrayLike | None = None, *, two_pass: bool = False
):
  """Softmax: exp(x_i - max x) / sum_j exp(x_j - max x).

  two_pass=True computes the same weights by the Two-Pass Softmax algorithm:
  exp(x_i) is held as a (mantissa, exponent) pair m_i 2^n_i, the pairs are
  summed in one reduction that keeps the largest exponent (Algorithm 3 of the
  paper; no separate pass for the row max), and a second pass divides. Its
  results match the max-shift form to float rounding and stay finite for
  scores of any size (|x| = 1e4 included). Chunked attention always uses the
  online form (SOFTMAX_ONLINE); the option concerns this function.

  Args:
    x: scores.
    axis: the axis to normalize over.
    where: boolean mask, True = keep.
    two_pass: use the (mantissa, exponent) two-pass algorithm.

  Returns:
    Weights summing to 1 over each row with an unmasked entry.

  References:
    Dukhan & Ablavatski, "The Two-Pass Softmax Algorithm", arXiv:2001.04438.
  """
  x, mask, axis, out_dtype = _prepare(x, axis, where)
  if two_pass:
    return _two_pass_softmax(x, mask, axis).astype(out_dtype)
  return _softmax(x, mask, axis).astype(out_dtype)


def top_k_mask(x, mask, axis, k):
  """The k largest kept entries of each row along axis (all kept ones if fewer).

  Ties go to the lower index (jax.lax.top_k's order), so exactly min(k, kept)
  entries are selected; masked entries never are. A NaN score has no rank, so
  it is always selected: `kept_scores` makes every kept entry of a row with a
  NaN or +inf NaN, so such a row keeps them all and its weights are NaN. k
  must be a Python int (shapes depend on it).
  """
  if isinstance(k, bool) or not isinstance(k, int) or k < 1:
    raise ValueError(f"k must be a positive int, got {k!r}")
  k = min(k, x.shape[axis])
  scores = jnp.moveaxis(jnp.where(mask, x, -jnp.inf), axis, -1)
  _, indices = jax.lax.top_k(scores, k)
  chosen = jnp.put_along_axis(jnp.zeros(scores.shape, bool), indices, True, axis=-1,
                              inplace=False)
  return jnp.moveaxis(chosen | jnp.isnan(scores), -1, axis) & mask


@register("log_softmax", not_weights="returns log-weights")
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


def _stablemax_terms(t, m, valid, hyper):
  """s(t) on valid entries, else 0: s(t) <= 1 + t cannot overflow, so no shift."""
  s = jnp.where(valid, stablemax_s(t), 0)
  return s, s


@register("stablemax", attention=AttentionSpec(online=OnlineForm(terms=_stablemax_terms)))
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


@register("log_stablemax", not_weights="returns log-weights")
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


def _ssmax_row_terms(rows: Rows):
  """c = s log n per row (n the keys the row may attend)."""
  return rows.value("s") * log_count(rows.n), None


# Dense attention hands SSMax s per head and lets it count n itself; the
# chunked form is softmax's on c x.
_SSMAX_ATTENTION = AttentionSpec(
    row_terms=_ssmax_row_terms,
    needs_row_counts=_always,
    per_head=("s",),
    layer_params=(
        LayerParam("s", always_learned=True, doc="initial s of ssmax, learned per head"),
    ),
    online=SOFTMAX_ONLINE,
)


@register("ssmax", attention=_SSMAX_ATTENTION)
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
  scale = s * log_count(n)
  return _softmax(scale * _centered(x, mask, axis), mask, axis).astype(out_dtype)


def _sigmoid_row_terms(rows: Rows):
  """b = the given bias, else -log S: the paper's -log n, one value per sequence."""
  if rows.given("bias"):
    return None, rows.value("bias")
  return None, jnp.asarray(-math.log(rows.num_keys), rows.dtype)


def _sigmoid_terms(t, m, valid, hyper):
  """sigmoid(t) on valid entries, else 0; rows are not normalized."""
  return jnp.where(valid, jax.nn.sigmoid(t), 0), None


_SIGMOID_ATTENTION = AttentionSpec(
    row_terms=_sigmoid_row_terms,
    offset_kwarg="bias",
    per_head=("bias",),
    layer_params=(
        LayerParam(
            "bias",
            automatic="-log n",
            doc='"-log n" (b = -log S, S the number of keys, fixed) or a float',
        ),
    ),
    online=OnlineForm(terms=_sigmoid_terms, row_sums=False),
    rows_sum_to_one=False,
)


@register("sigmoid", attention=_SIGMOID_ATTENTION)
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


# q and k are divided by sqrt(max(|x|^2, this)) for LSSA, so zero vectors stay 0.
L2_NORM_FLOOR = 1e-12


def l2_normalize_qk(query, key):
  """(query, key) L2-normalized over the last (head) dim, as LSSA's q.k takes them.

  Zero vectors stay 0 (the squared norm is floored at L2_NORM_FLOOR).
  """
  normalize = lambda x: x * jax.lax.rsqrt(
      jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), L2_NORM_FLOOR)
  )
  return normalize(query), normalize(key)


def _unit_scale(head_dim: int) -> float:
  return 1.0


def _lssa_row_terms(rows: Rows):
  """c = the given scale, else (ln d)(ln n) per row (LSSA)."""
  if rows.given("scale"):
    return rows.value("scale"), None
  return math.log(rows.head_dim) * log_count(rows.n), None


def _lssa_needs_row_counts(kwargs) -> bool:
  return "scale" not in kwargs or "sharpen_power" in kwargs


def _lssar_numerators(e, valid, l, n, sharpen_power):
  """LSSAR's (relu(n w - o) / peak)^p, w = e / l; rows with peak 0 keep w.

  o = 0 for rows with n <= 3, else 1, as in `softplus`. The peak of
  relu(n w - o) is relu(n / l - o), since max e = 1.
  """
  w = e / l[..., None]
  offset = jnp.where(n <= 3, 0.0, 1.0).astype(e.dtype)
  peak = jax.lax.stop_gradient(jax.nn.relu(n / l - offset))[..., None]
  excess = jnp.where(valid, jax.nn.relu(w * n[..., None] - offset[..., None]), 0)
  ratio = excess / jnp.where(peak > 0, peak, 1)
  positive = ratio > 0
  powered = jnp.where(positive, jnp.where(positive, ratio, 1) ** sharpen_power, 0)
  return jnp.where(peak > 0, powered, w)


# LSSA: q and k L2-normalized, q.k unscaled, scores times (ln d)(ln n) per
# row; online as softmax(log softplus(c x)), like the function. LSSAR adds a
# second pass for the re-weighting.
_LSSA_ATTENTION = AttentionSpec(
    prepare_qk=l2_normalize_qk,
    default_scale=_unit_scale,
    row_terms=_lssa_row_terms,
    needs_row_counts=_lssa_needs_row_counts,
    multiplier_kwarg="scale",
    per_head=("scale",),
    online=OnlineForm(
        terms=_exp_terms,
        transform=log_softplus,
        running_max=True,
        static=("sharpen_power",),
        reweighting=Reweighting("sharpen_power", _lssar_numerators),
    ),
    examples=(("sharpen_power", 3.0),),
)


@register("softplus", attention=_LSSA_ATTENTION)
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


def _softpick_terms(t, m, valid, hyper):
  """(relu(e), |e|), e = exp(t - m) - exp(-m) on valid entries, else 0."""
  e = jnp.where(valid, softpick_shifted(jnp.where(valid, t, 0), m), 0)
  return jax.nn.relu(e), jnp.abs(e)


def _softpick_denominator(total, hyper):
  return total + hyper["eps"]


# The running max starts at 0: m = max(0, row max), as in the function, whose
# eps in shifted units makes the weights depend on m.
_SOFTPICK_ATTENTION = AttentionSpec(
    online=OnlineForm(
        terms=_softpick_terms,
        running_max=True,
        initial_shift=0.0,
        shift_invariant=False,
        denominator=_softpick_denominator,
        static=("eps",),
    ),
    rows_sum_to_one=False,
)


@register("softpick", attention=_SOFTPICK_ATTENTION)
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
  return jnp.where(mask, weights, 0).astype(out_dtype)


@register("topk_softmax", attention=AttentionSpec())
def topk_softmax(x: ArrayLike, axis: int = -1, where: ArrayLike | None = None, *, k: int = 5):
  """Top-k (sparse) softmax: softmax over the k largest entries of a row, 0 elsewhere.

  w_i = exp(x_i) / sum_{j in T} exp(x_j) for i in T, the k largest kept
  entries; ties at the k-th place go to the lower index (so exactly k entries
  are kept, as in a top-k mixture-of-experts gate); masked and -inf entries
  are never selected. k >= the number of kept entries gives softmax, k = 1 the
  one-hot argmax. The selection carries no gradient; within T it is softmax's.

  Args:
    x: scores.
    axis: the axis to normalize over.
    where: boolean mask, True = keep.
    k: number of entries kept per row (a positive Python int); the default 5
      is ours (the paper sets k per task).

  Returns:
    Weights summing to 1 over each row with an unmasked entry, at most k nonzero.

  References:
    Sun et al., "Sparse-softmax: A Simpler and Faster Alternative Softmax
    Transformation", arXiv:2112.12433; Shazeer et al., "Outrageously Large
    Neural Networks: The Sparsely-Gated Mixture-of-Experts Layer" (top-k
    gate), arXiv:1701.06538.
  """
  x, mask, axis, out_dtype = _prepare(x, axis, where)
  return _softmax(x, top_k_mask(x, mask, axis, k), axis).astype(out_dtype)


@register("sparsemax", attention=AttentionSpec())
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
  support = _support(u, tau, mask)
  # Differentiable tau from the support (u is x - const there).
  u = x - _shift(x, mask, axis)
  size = jnp.sum(support, axis=axis, keepdims=True, dtype=x.dtype)
  tau = (jnp.sum(jnp.where(support, u, 0), axis=axis, keepdims=True) - 1) / (
      jnp.maximum(size, 1)
  )
  return jnp.where(support, jax.nn.relu(u - tau), 0).astype(out_dtype)


@register("entmax15", attention=AttentionSpec())
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
  support = _support(u, tau, mask)
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


@register("sa_softmax", attention=AttentionSpec(rows_sum_to_one=False))
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
  weights = (x - lo) / jnp.where(span > 0, span, 1) * probs
  return jnp.where(mask, weights, 0).astype(out_dtype)


@register("gumbel_softmax", not_weights="draws a random sample per call (it needs a PRNG key)")
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


@register("adaptive_softmax", attention=AttentionSpec())
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


def gaussian_kernel_qk(query, key):
  """(q, k) -> ([q, 1], [k, -|k|^2 / 2]) over the last dim, so q'.k' = q.k - |k|^2 / 2.

  -|q - k|^2 / 2 = q.k - |k|^2 / 2 - |q|^2 / 2, and the last term is the same
  for every key of a row, so a softmax over q'.k' gives the normalized Gaussian
  kernel. The extra coordinate is a per-key bias carried inside q.k, which is
  how the dense and the chunked attention both compute it unchanged.
  """
  ones = jnp.ones(query.shape[:-1] + (1,), query.dtype)
  half_norm = 0.5 * jnp.sum(key * key, axis=-1, keepdims=True)
  return jnp.concatenate([query, ones], axis=-1), jnp.concatenate([key, -half_norm], axis=-1)


# Gaussian-kernel attention: softmax of scale * (q.k - |k|^2 / 2), i.e. weights
# proportional to exp(-|q_i - k_j|^2 / (2 sigma^2)) with sigma^2 = 1 / scale
# (default scale 1 / sqrt(d): sigma^2 = sqrt(d), SOFT's bandwidth); online as
# softmax.
_GAUSSIAN_ATTENTION = AttentionSpec(prepare_qk=gaussian_kernel_qk, online=SOFTMAX_ONLINE)


@register("gaussian", attention=_GAUSSIAN_ATTENTION)
def gaussian(x: ArrayLike, axis: int = -1, where: ArrayLike | None = None):
  """Gaussian-kernel attention weights: softmax of scores that carry the kernel's key term.

  In attention the spec turns q.k into q.k - |k|^2 / 2 (`gaussian_kernel_qk`),
  so with scale = 1 / sigma^2 the weights of row i are
    w_ij = exp(-|q_i - k_j|^2 / (2 sigma^2)) / sum_l exp(-|q_i - k_l|^2 / (2 sigma^2)),
  the row-normalized Gaussian kernel, which is invariant to translating q and
  k together. The default scale 1 / sqrt(d) gives sigma^2 = sqrt(d), the
  bandwidth of SOFT (arXiv:2110.11945, exp(-|q - k|^2 / (2 sqrt d)), checked
  against SOFT's released code). On plain scores this function is the
  softmax.

  Not verified against the NeurIPS paper (arXiv:2411.07538): its text was
  not reachable here (only its abstract and a review page that names a
  "Gaussian attention kernel" without its formula), so neither its equation
  numbers, nor its bandwidth sigma, nor whether it normalizes the kernel's
  rows (as here) could be checked; no released code was found.

  Args:
    x: scores (in attention: scale * (q.k - |k|^2 / 2)).
    axis: the axis to normalize over.
    where: boolean mask, True = keep.

  Returns:
    Weights summing to 1 over each row with an unmasked entry.

  References:
    Song, Han, Zhang, Ding & Hong, "Unraveling the Gradient Descent Dynamics
    of Transformers", NeurIPS 2024.
  """
  x, mask, axis, out_dtype = _prepare(x, axis, where)
  return _softmax(x, mask, axis).astype(out_dtype)
