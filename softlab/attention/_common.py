"""Validation and per-row quantities shared by the dense and chunked attention.

Conventions (those of `jax.nn.dot_product_attention`): query [B, T, N, H],
key [B, S, K, H], value [B, S, K, Hv] with N a multiple of K (query head n
reads key/value head n // (N / K)); a `mask` (boolean, or numeric with
nonzero = attend, as flax's mask helpers give) and an
additive `bias`, each broadcastable to the scores [B, N, T, S]. `is_causal`
lets query t attend keys s <= t (top-left aligned when T != S).
`position_mask` turns jax's query_seq_lengths, key_value_seq_lengths and
local_window_size into one more boolean mask.

n_i, the number of keys query row i may attend, counts the keys left by the
causal mask, the padding mask and -inf bias entries. How a normalizer is used
(q/k preparation, default scale, per-row terms from n, per-head
hyperparameters) comes from its `softlab.normalizers.AttentionSpec`; nothing
here depends on a normalizer's name.
"""

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from softlab import normalizers
from softlab import validation


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
  spec: normalizers.AttentionSpec
  kwargs: dict[str, Any]
  scale: float
  is_causal: bool
  out_dtype: Any

  def hyperparameter(self, name: str) -> Any:
    """Hyperparameter `name` as the normalizer sees it: given, else its default."""
    return self.kwargs.get(name, hyperparameters(self.normalizer)[name])


def hyperparameters(normalizer: str) -> dict[str, Any]:
  """The hyperparameters normalizer_kwargs may set, with their defaults.

  They are the keyword-only parameters of the normalizer's function but n,
  which the attention supplies per row.
  """
  defaults = normalizers.keyword_defaults(normalizer)
  defaults.pop("n", None)
  return defaults


def _check_kwargs(
    name: str, spec: normalizers.AttentionSpec, kwargs, num_heads: int
) -> dict[str, Any]:
  """Validated normalizer_kwargs; per-head values as arrays of shape () or [N]."""
  kwargs = dict(kwargs or {})
  allowed = sorted(hyperparameters(name))
  for key in kwargs:
    if key not in allowed:
      raise ValueError(
          f"normalizer_kwargs key {key!r} is not a hyperparameter of {name!r}"
          " in attention (n is supplied per row);"
          f" valid: {', '.join(allowed) or 'none'}"
      )
  for key in spec.per_head:
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
  spec = normalizers.attention_spec(normalizer)
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
  kwargs = _check_kwargs(normalizer, spec, normalizer_kwargs, n)
  if bias is not None:
    bias = _as_scores_shape(bias, "bias", shape).astype(dtype)
  if mask is not None:
    mask = _as_scores_shape(validation.boolean_mask(mask, name="mask"), "mask", shape)
  query, key = query.astype(dtype), key.astype(dtype)
  if scale is None:
    scale = spec.default_scale(h)
  return Problem(
      query=query,
      key=key,
      value=None if value is None else value.astype(dtype),
      bias=bias,
      mask=mask,
      normalizer=normalizer,
      spec=spec,
      kwargs=kwargs,
      scale=scale,
      is_causal=bool(is_causal),
      out_dtype=out_dtype,
  )


def window_sizes(local_window_size) -> tuple[int, int] | None:
  """jax's local_window_size (None, w or (left, right)) as (left, right)."""
  if local_window_size is None:
    return None
  if isinstance(local_window_size, int) and not isinstance(local_window_size, bool):
    local_window_size = (local_window_size, local_window_size)
  if not (isinstance(local_window_size, tuple | list) and len(local_window_size) == 2):
    raise ValueError(
        "local_window_size must be an int or a (left, right) pair of ints, got"
        f" {local_window_size!r}"
    )
  return tuple(
      validation.check_integer(w, f"local_window_size {side}", minimum=0)
      for w, side in zip(local_window_size, ("left", "right"))
  )


def _lengths(lengths, name: str, batch: int) -> jax.Array:
  """Per-example valid lengths as an integer array of shape [B, 1, 1]."""
  lengths = validation.check_array(lengths, name, dtype=int, shape=(batch,))
  return lengths[:, None, None]


def position_mask(
    batch: int,
    num_queries: int,
    num_keys: int,
    *,
    query_seq_lengths: ArrayLike | None = None,
    key_value_seq_lengths: ArrayLike | None = None,
    local_window_size: tuple[int, int] | None = None,
) -> jax.Array | None:
  """The [B|1, 1, T, S] mask of jax's length and window arguments, or None.

  Query t of example b takes part if t < query_seq_lengths[b]; key s if
  s < key_value_seq_lengths[b]; with (left, right) = local_window_size, query
  t attends keys t - left <= s <= t + right (top-left aligned like the causal
  mask). A query beyond its length attends nothing, so it outputs 0.
  """
  t = jnp.arange(num_queries)[None, :, None]
  s = jnp.arange(num_keys)[None, None, :]
  masks = []
  if local_window_size is not None:
    left, right = local_window_size
    masks.append((s >= t - left) & (s <= t + right))
  if query_seq_lengths is not None:
    masks.append(t < _lengths(query_seq_lengths, "query_seq_lengths", batch))
  if key_value_seq_lengths is not None:
    masks.append(s < _lengths(key_value_seq_lengths, "key_value_seq_lengths", batch))
  if not masks:
    return None
  mask = functools.reduce(jnp.logical_and, masks)
  return jnp.broadcast_to(mask, (mask.shape[0], num_queries, num_keys))[:, None]


def needs_row_counts(problem: Problem) -> bool:
  """Whether the normalizer needs n per row (beyond what it counts itself)."""
  return problem.spec.needs_row_counts(problem.kwargs)


def row_terms(
    problem: Problem, n: jax.Array | None, head_shape: tuple[int, ...]
) -> tuple[jax.Array | None, jax.Array | None]:
  """(c, b): the spec's per-row score multiplier and offset, None where unused.

  `n` holds rows in some layout whose head axes `head_shape` describes (a
  per-head value of shape [N] is reshaped to it), e.g. (N, 1) for [B, N, T].
  """
  if problem.spec.row_terms is None:
    return None, None
  rows = normalizers.Rows(
      kwargs=problem.kwargs,
      defaults=normalizers.keyword_defaults(problem.normalizer),
      n=n,
      head_shape=head_shape,
      head_dim=problem.query.shape[-1],
      num_keys=problem.key.shape[1],
      dtype=problem.query.dtype,
  )
  return problem.spec.row_terms(rows)
