"""Validation and per-row quantities shared by the dense and chunked attention.

Conventions (those of `jax.nn.dot_product_attention`): query [B, T, N, H],
key [B, S, K, H], value [B, S, K, Hv] with N a multiple of K (query head n
reads key/value head n // (N / K)); a boolean `mask` (True = attend) and an
additive `bias`, each broadcastable to the scores [B, N, T, S]. `is_causal`
lets query t attend keys s <= t (top-left aligned when T != S).

n_i, the number of keys query row i may attend, counts the keys left by the
causal mask, the padding mask and -inf bias entries. The normalizers that need
it (ssmax, softplus's LSSA scale and LSSAR) get it per row from here, never as
one global length. Sigmoid's default bias is the exception: the paper's
b = -log n is one scalar per sequence, n = S, the number of keys.
"""

import inspect
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from softlab import normalizers

# Registered normalizers that do not give attention weights, and why.
NOT_WEIGHTS = {
    "gumbel_softmax": "draws a random sample per call (it needs a PRNG key)",
    "log_softmax": "returns log-weights",
    "log_stablemax": "returns log-weights",
}
# Hyperparameters that may be given per head: a scalar or an array of shape [N].
PER_HEAD = {"ssmax": ("s",), "sigmoid": ("bias",), "softplus": ("scale",)}
# q and k are divided by sqrt(max(|x|^2, this)) for LSSA, so zero vectors stay 0.
L2_NORM_FLOOR = 1e-12


class Problem(NamedTuple):
  """Validated attention inputs in the compute dtype.

  bias and mask are 4-D ([B|1, N|1, T|1, S|1]) or None.
  """

  query: jax.Array
  key: jax.Array
  value: jax.Array | None
  bias: jax.Array | None
  mask: jax.Array | None
  normalizer: str
  kwargs: dict[str, Any]
  scale: float
  is_causal: bool
  out_dtype: Any


def attention_normalizers() -> tuple[str, ...]:
  """Names of the registered normalizers usable as attention weights."""
  return tuple(n for n in normalizers.names() if n not in NOT_WEIGHTS)


def check_normalizer(name: Any) -> None:
  """ValueError unless `name` is a normalizer usable as attention weights."""
  valid = ", ".join(attention_normalizers())
  if isinstance(name, str) and name in NOT_WEIGHTS:
    raise ValueError(
        f"normalizer {name!r} {NOT_WEIGHTS[name]}, not attention weights;"
        f" valid: {valid}"
    )
  if not isinstance(name, str) or name not in attention_normalizers():
    raise ValueError(f"unknown normalizer {name!r}; valid: {valid}")


def keyword_defaults(name: str) -> dict[str, Any]:
  """The keyword-only hyperparameters of normalizer `name` with their defaults."""
  params = inspect.signature(normalizers.get(name)).parameters.values()
  return {
      p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY
  }


def _check_kwargs(name: str, kwargs, num_heads: int) -> dict[str, Any]:
  """Validated normalizer_kwargs; per-head values as arrays of shape () or [N]."""
  kwargs = dict(kwargs or {})
  allowed = sorted(set(keyword_defaults(name)) - {"n"})
  for key in kwargs:
    if key not in allowed:
      raise ValueError(
          f"normalizer_kwargs key {key!r} is not a hyperparameter of {name!r}"
          " in attention (n is supplied per row);"
          f" valid: {', '.join(allowed) or 'none'}"
      )
  for key in PER_HEAD.get(name, ()):
    if key in kwargs:
      value = jnp.asarray(kwargs[key])
      if value.shape not in ((), (num_heads,)):
        raise ValueError(
            f"normalizer_kwargs[{key!r}] must be a scalar or have shape"
            f" [num_heads] = ({num_heads},), got shape {value.shape}"
        )
      kwargs[key] = value
  return kwargs


def _as_scores_shape(x, name: str, shape: tuple[int, ...]) -> jax.Array:
  """x as a 4-D array whose dims are 1 or those of `shape` ([B, N, T, S])."""
  x = jnp.asarray(x)
  full = (1,) * (4 - x.ndim) + x.shape
  if x.ndim > 4 or any(d not in (1, s) for d, s in zip(full, shape)):
    raise ValueError(
        f"{name} of shape {x.shape} does not broadcast to the scores"
        f" [B, N, T, S] = {shape}"
    )
  return x.reshape(full)


def _check_shapes(query, key, value) -> None:
  if query.ndim != 4 or key.ndim != 4:
    raise ValueError(
        "query and key must be 4-D ([B, T, N, H] and [B, S, K, H]), got shapes"
        f" {query.shape} and {key.shape}"
    )
  (b, _, n, h), (bk, s, k, hk) = query.shape, key.shape
  if (bk, hk) != (b, h):
    raise ValueError(
        f"key of shape {key.shape} does not match query of shape"
        f" {query.shape} in batch size and head dim"
    )
  if n % k:
    raise ValueError(
        f"the number of query heads ({n}) must be a multiple of the number of"
        f" key/value heads ({k})"
    )
  if value is not None and (value.ndim != 4 or value.shape[:3] != (b, s, k)):
    raise ValueError(
        f"value of shape {value.shape} must be [B, S, K, Hv] with"
        f" [B, S, K] = {(b, s, k)} as in key"
    )


def qk_for_scores(normalizer: str, query: jax.Array, key: jax.Array):
  """(query, key) as they enter q.k: L2-normalized over the head dim for LSSA.

  Zero vectors stay 0 (the squared norm is floored at L2_NORM_FLOOR).
  """
  if normalizer != "softplus":
    return query, key
  normalize = lambda x: x * jax.lax.rsqrt(
      jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), L2_NORM_FLOOR)
  )
  return normalize(query), normalize(key)


def prepare(
    query: ArrayLike,
    key: ArrayLike,
    value: ArrayLike | None,
    bias: ArrayLike | None,
    mask: ArrayLike | None,
    *,
    normalizer: str,
    normalizer_kwargs,
    scale: float | None,
    is_causal: bool,
) -> Problem:
  """Validates the arguments of the attention functions into a `Problem`."""
  check_normalizer(normalizer)
  query, key = jnp.asarray(query), jnp.asarray(key)
  value = None if value is None else jnp.asarray(value)
  _check_shapes(query, key, value)
  arrays = (query, key) if value is None else (query, key, value)
  for array in arrays:
    if not jnp.issubdtype(array.dtype, jnp.floating):
      raise ValueError(
          f"query, key and value must be floating arrays, got {array.dtype}"
      )
  out_dtype = query.dtype
  dtype = jnp.promote_types(jnp.result_type(*arrays), jnp.float32)
  (b, t, n, h), s = query.shape, key.shape[1]
  shape = (b, n, t, s)
  kwargs = _check_kwargs(normalizer, normalizer_kwargs, n)
  if bias is not None:
    bias = _as_scores_shape(bias, "bias", shape).astype(dtype)
  if mask is not None:
    mask = _as_scores_shape(mask, "mask", shape)
    if mask.dtype != jnp.bool_:
      raise ValueError(f"mask must be a boolean array, got dtype {mask.dtype}")
  query, key = query.astype(dtype), key.astype(dtype)
  if scale is None:
    scale = 1.0 if normalizer == "softplus" else 1 / math.sqrt(h)
  return Problem(
      query=query,
      key=key,
      value=None if value is None else value.astype(dtype),
      bias=bias,
      mask=mask,
      normalizer=normalizer,
      kwargs=kwargs,
      scale=scale,
      is_causal=bool(is_causal),
      out_dtype=out_dtype,
  )


def needs_row_counts(problem: Problem) -> bool:
  """Whether the normalizer needs n per row (beyond what it counts itself)."""
  name, kwargs = problem.normalizer, problem.kwargs
  return (
      name == "ssmax"
      or (name == "softplus" and ("scale" not in kwargs or "sharpen_power" in kwargs))
  )


def _log_count(n: jax.Array) -> jax.Array:
  """log n with n < 1 (fully masked rows) counted as 1, so log is finite (0)."""
  return jnp.log(jnp.maximum(n, 1))


def head_values(value: jax.Array, head_shape: tuple[int, ...]) -> jax.Array:
  """A per-head hyperparameter ([] or [N]) reshaped to broadcast over rows."""
  return value if value.ndim == 0 else value.reshape(head_shape)


def row_terms(
    problem: Problem, n: jax.Array | None, head_shape: tuple[int, ...]
) -> tuple[jax.Array | None, jax.Array | None]:
  """(c, b): per-row score multiplier and offset, or None where unused.

  ssmax: c = s log n; softplus: c = (ln d)(ln n) (LSSA) unless an explicit
  `scale` is given; sigmoid: b = -log S (S keys, the same for every row)
  unless an explicit `bias` is given.
  `n` holds rows in some layout whose head axes `head_shape` describes (a
  per-head value of shape [N] is reshaped to it), e.g. (N, 1) for [B, N, T].
  """
  name, kwargs = problem.normalizer, problem.kwargs
  dtype = problem.query.dtype
  defaults = keyword_defaults(name)

  def per_head(key):
    value = kwargs.get(key, defaults.get(key))
    return head_values(jnp.asarray(value, dtype), head_shape)

  if name == "ssmax":
    return per_head("s") * _log_count(n), None
  if name == "softplus":
    if "scale" in kwargs:
      return per_head("scale"), None
    head_dim = problem.query.shape[-1]
    return math.log(head_dim) * _log_count(n), None
  if name == "sigmoid":
    if "bias" in kwargs:
      return None, per_head("bias")
    return None, jnp.asarray(-math.log(problem.key.shape[1]), dtype)
  return None, None
