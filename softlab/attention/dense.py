"""Dense attention: the reference, materializing the [B, N, T, S] weights.

The weights are softlab.normalizers.get(name)(scores, axis=-1, where=mask,
**kwargs), so every normalizer registered there with an AttentionSpec works
here; the spec says how q and k enter q.k and which keywords receive its
per-row terms.
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from softlab import normalizers
from softlab.attention import _common


def _grouped(x: jax.Array, num_kv_heads: int) -> jax.Array:
  """[B, N, ...] -> [B, K, N / K, ...] (query head n uses key/value head n // G)."""
  b, n = x.shape[:2]
  return x.reshape(b, num_kv_heads, n // num_kv_heads, *x.shape[2:])


def attendable(problem: _common.Problem) -> jax.Array:
  """The [B|1, N|1, T, S] boolean mask of entries each query row may attend."""
  t, s = problem.query.shape[1], problem.key.shape[1]
  valid = jnp.ones((1, 1, t, s), bool)
  if problem.is_causal:
    valid = valid & jnp.tril(jnp.ones((t, s), bool))[None, None]
  if problem.mask is not None:
    valid = valid & problem.mask
  if problem.bias is not None:
    valid = valid & (problem.bias > -jnp.inf)
  return valid


def scores(problem: _common.Problem, valid: jax.Array) -> jax.Array:
  """scale * q.k + bias as [B, N, T, S]; 0 where `valid` is False."""
  b, t, n, _ = problem.query.shape
  k = problem.key.shape[2]
  query, key = problem.spec.prepare_qk(problem.query, problem.key)
  x = jnp.einsum("btkgh,bskh->bkgts", query.reshape(b, t, k, n // k, -1), key)
  x = problem.scale * x.reshape(b, n, t, -1)
  if problem.bias is not None:
    x = x + jnp.where(valid, problem.bias, 0)
  return jnp.where(valid, x, 0)


def weights(problem: _common.Problem) -> jax.Array:
  """The [B, N, T, S] attention weights of a validated problem."""
  valid = attendable(problem)
  x = scores(problem, valid)
  valid = jnp.broadcast_to(valid, x.shape)
  spec, kwargs = problem.spec, dict(problem.kwargs)
  for key in spec.per_head:
    if key in kwargs:
      kwargs[key] = normalizers.head_values(kwargs[key], (1, -1, 1, 1))
  n = jnp.sum(valid, axis=-1, dtype=x.dtype)
  c, b = _common.row_terms(problem, n, (1, x.shape[1], 1))
  for keyword, term in ((spec.multiplier_kwarg, c), (spec.offset_kwarg, b)):
    if keyword is not None:
      kwargs[keyword] = term[..., None]
  return normalizers.get(problem.normalizer)(x, axis=-1, where=valid, **kwargs)


def weighted_values(w: jax.Array, value: jax.Array) -> jax.Array:
  """sum_s w[b, n, t, s] value[b, s, n // G, :] as [B, T, N, Hv] (G = N / K)."""
  b, n, t, _ = w.shape
  out = jnp.einsum("bkgts,bskh->btkgh", _grouped(w, value.shape[2]), value)
  return out.reshape(b, t, n, value.shape[-1])


def dense_attention(problem: _common.Problem) -> jax.Array:
  """sum_s weights[b, n, t, s] value[b, s, n // G, :] as [B, T, N, Hv]."""
  return weighted_values(weights(problem), problem.value).astype(problem.out_dtype)


def logsumexp(problem: _common.Problem) -> jax.Array:
  """log sum_s exp(scale * q.k + bias) over the keys each row attends, [B, T, N].

  The residual of jax.nn.dot_product_attention (softmax's log-denominator, as
  FlashAttention-2 keeps it to merge partial results). It is a function of the
  scores, whatever the normalizer; a row that attends nothing gets the lowest
  finite number of the output dtype (jax: a large negative one), so no
  intermediate is infinite. No gradient flows through it, as in jax.
  """
  valid = attendable(problem)
  x = scores(problem, valid)
  valid = jnp.broadcast_to(valid, x.shape)
  lowest = jnp.finfo(problem.out_dtype).min
  m = jnp.max(jnp.where(valid, x, lowest), axis=-1, keepdims=True)
  total = jnp.sum(jnp.where(valid, jnp.exp(jnp.where(valid, x - m, 0)), 0), axis=-1)
  kept = jnp.any(valid, axis=-1)
  lse = jnp.where(kept, jnp.log(jnp.where(kept, total, 1)) + m[..., 0], lowest)
  return jax.lax.stop_gradient(jnp.swapaxes(lse, 1, 2))


def attention_weights(
    query: ArrayLike,
    key: ArrayLike,
    bias: ArrayLike | None = None,
    mask: ArrayLike | None = None,
    *,
    normalizer: str = "softmax",
    normalizer_kwargs=None,
    scale: float | None = None,
    is_causal: bool = False,
) -> jax.Array:
  """Attention weights normalizer(scale * q.k + bias) over the keys, [B, N, T, S].

  Same arguments and conventions as `dot_product_attention` (without value);
  always dense (quadratic memory), for diagnostics and small problems.

  Args:
    query: [B, T, N, H].
    key: [B, S, K, H], N a multiple of K.
    bias: additive, broadcastable to [B, N, T, S]; -inf entries count as masked.
    mask: boolean, broadcastable to [B, N, T, S]; True = attend.
    normalizer: a name from softlab.normalizers (see `dot_product_attention`).
    normalizer_kwargs: its hyperparameters (see `dot_product_attention`).
    scale: multiplier of q.k; default the spec's (1 / sqrt(H); 1 for softplus).
    is_causal: query t attends keys s <= t only.

  Returns:
    Weights of shape [B, N, T, S] in the dtype of query; masked entries and
    fully masked rows are 0.
  """
  problem = _common.prepare(
      query,
      key,
      None,
      bias,
      mask,
      normalizer=normalizer,
      normalizer_kwargs=normalizer_kwargs,
      scale=scale,
      is_causal=is_causal,
  )
  return weights(problem).astype(problem.out_dtype)
