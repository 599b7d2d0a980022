"""Attention diagnostics: sink rate, sparsity, row entropy, max weight, kurtosis.

Weights are arrays [..., N, T, S] as returned by attention_weights or sown by
the layers (stack layers in front for model-level numbers).
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike


def _as_float(x: ArrayLike) -> jax.Array:
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _check_weights(weights: jax.Array, name: str = "weights") -> None:
  if weights.ndim < 3:
    raise ValueError(
        f"{name} must have shape [..., N, T, S], got shape {weights.shape}"
    )


def sink_rate(weights: ArrayLike, threshold: float = 0.3) -> jax.Array:
  """Share of (layer, head) units whose mean weight on the first key exceeds threshold.

  alpha = mean over queries t of A[t, 0] for each unit; the rate is the share
  of units with alpha > threshold. Every index of the leading dims and of N is
  one unit. For a batch, compute the rate per example and average the rates
  (Gu et al. threshold each sequence's alpha: vmap over the batch axis).

  Args:
    weights: [..., N, T, S] attention weights, e.g. [layers, N, T, S].
    threshold: epsilon of the definition (0.3).

  Returns:
    A scalar in [0, 1].

  References:
    Gu et al., "When Attention Sink Emerges in Language Models: An Empirical
    View", arXiv:2410.10781; Zuhri et al., "Softpick", arXiv:2504.20966.
  """
  weights = _as_float(weights)
  _check_weights(weights)
  alpha = jnp.mean(weights[..., 0], axis=-1)
  return jnp.mean(alpha > threshold)


def sparsity(
    weights: ArrayLike, mask: ArrayLike | None = None, *, tol: float = 1e-5
) -> jax.Array:
  """Share of attendable entries with |a| <= tol.

  Args:
    weights: [..., N, T, S] attention weights.
    mask: boolean, broadcastable to weights; True = attendable (e.g. the
      causal mask). None counts every entry.
    tol: the zero threshold (1e-5 as in the softpick paper).

  Returns:
    A scalar in [0, 1]; 0 if nothing is attendable.

  References:
    Zuhri et al., "Softpick: No Attention Sink, No Massive Activations with
    Rectified Softmax", arXiv:2504.20966.
  """
  weights = _as_float(weights)
  _check_weights(weights)
  mask = jnp.ones(weights.shape, bool) if mask is None else jnp.broadcast_to(
      jnp.asarray(mask, bool), weights.shape
  )
  zero = mask & (jnp.abs(weights) <= tol)
  return jnp.sum(zero) / jnp.maximum(jnp.sum(mask), 1)


def row_entropy(weights: ArrayLike) -> jax.Array:
  """Entropy in nats of each row: -sum_s p_s log p_s, p = |a| / sum |a|.

  Rows are renormalized first, so rows that do not sum to 1 (sigmoid,
  softpick) are compared by their shape; 0 log 0 = 0 and an all-zero row has
  entropy 0. Masked entries are expected to be 0 (as the attention gives).

  Args:
    weights: [..., N, T, S] attention weights.

  Returns:
    [..., N, T].
  """
  weights = jnp.abs(_as_float(weights))
  _check_weights(weights)
  total = jnp.sum(weights, axis=-1, keepdims=True)
  p = weights / jnp.where(total > 0, total, 1)
  positive = p > 0
  return -jnp.sum(jnp.where(positive, p * jnp.log(jnp.where(positive, p, 1)), 0), -1)


def max_weight(weights: ArrayLike) -> jax.Array:
  """The largest weight of each row (attention fade: it shrinks as rows grow).

  Args:
    weights: [..., N, T, S] attention weights.

  Returns:
    [..., N, T].
  """
  weights = _as_float(weights)
  _check_weights(weights)
  return jnp.max(weights, axis=-1)


def hidden_state_kurtosis(
    hidden: ArrayLike, axis=None, where: ArrayLike | None = None
) -> jax.Array:
  """Plain (Pearson, not excess) kurtosis E[(x - mu)^4] / E[(x - mu)^2]^2.

  A Gaussian gives 3. Computed over all entries by default: massive
  activations in a few positions and channels make it huge (the softpick
  paper reports 33,510 for softmax vs 340 for softpick), which a per-token
  kurtosis over d channels (at most about d) could not show. A constant
  input gives 0.

  Args:
    hidden: hidden states, e.g. [B, T, D] or [layers, B, T, D].
    axis: the axes to compute over; None for all.
    where: boolean, broadcastable to hidden; True = count the entry (e.g.
      leave out padding examples). None counts every entry.

  Returns:
    The kurtosis, reduced over `axis`.

  References:
    Zuhri et al., "Softpick: No Attention Sink, No Massive Activations with
    Rectified Softmax", arXiv:2504.20966.
  """
  hidden = _as_float(hidden)
  if where is not None:
    where = jnp.broadcast_to(jnp.asarray(where, bool), hidden.shape)
  centered = hidden - jnp.mean(hidden, axis=axis, keepdims=True, where=where)
  variance = jnp.mean(centered**2, axis=axis, where=where)
  fourth = jnp.mean(centered**4, axis=axis, where=where)
  return jnp.where(variance > 0, fourth / jnp.where(variance > 0, variance, 1) ** 2, 0)
