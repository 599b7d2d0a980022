"""dot_product_attention: attention with the normalizer as an argument.

A drop-in for jax.nn.dot_product_attention: the same arguments with the same
meanings, and with normalizer="softmax" the same results; softlab's extras
(normalizer, normalizer_kwargs, block_size, the "dense" / "chunked"
implementations) are added keywords.
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from softlab import normalizers
from softlab import validation
from softlab.attention import _common
from softlab.attention import chunked
from softlab.attention import dense

# "xla" is jax's name for the plain XLA computation, softlab's "dense";
# "cudnn" hands softmax attention on a GPU to jax's cuDNN kernel.
IMPLEMENTATIONS = ("dense", "chunked", "xla", "cudnn")
# implementation=None picks "chunked" from this many keys on (when the
# normalizer has a chunked form). On a 2-core CPU (B=4, N=8, H=64, causal,
# fwd+bwd) chunked and dense tie at S=256, chunked is 1.5x faster at 512 and
# 3x at 1024.
AUTO_CHUNKED_MIN_KEYS = 512
# The spec of a normalizer whose attention weights are softmax(scale q.k +
# bias), q and k as given, no per-row terms: what cuDNN's kernel computes.
_SOFTMAX_WEIGHTS = normalizers.AttentionSpec(online=normalizers.SOFTMAX_ONLINE)


def dot_product_attention(
    query: ArrayLike,
    key: ArrayLike,
    value: ArrayLike,
    bias: ArrayLike | None = None,
    mask: ArrayLike | None = None,
    *,
    scale: float | None = None,
    is_causal: bool = False,
    query_seq_lengths: ArrayLike | None = None,
    key_value_seq_lengths: ArrayLike | None = None,
    local_window_size: int | tuple[int, int] | None = None,
    implementation: str | None = None,
    return_residual: bool = False,
    normalizer: str = "softmax",
    normalizer_kwargs=None,
    block_size: int | None = None,
) -> jax.Array | tuple[jax.Array, jax.Array]:
  """Attention sum_s A[t, s] v_s with A = normalizer(scale * q_t.k_s + bias_ts).

  jax.nn.dot_product_attention's signature, layout and results, with the
  normalizer as an argument: dot_product_attention(query, key, value,
  bias=None, mask=None, *, scale=None, is_causal=False,
  query_seq_lengths=None, key_value_seq_lengths=None, local_window_size=None,
  implementation=None, return_residual=False), plus softlab's keywords
  normalizer, normalizer_kwargs and block_size. query [B, T, N, H], key
  [B, S, K, H], value [B, S, K, Hv] (or [T, N, H], [S, K, H], [S, K, Hv]
  without a batch axis), N a multiple of K (MHA, GQA, MQA; query head n reads
  key/value head n // (N / K)). Every query row i has its own n_i, the number
  of keys it may attend after the causal, window, length and explicit masks
  and -inf bias entries. A row with n_i = 0 outputs 0, with zero gradients
  (jax gives such a row, unless it is a padded query, the mean of the values).

  Normalizers (any name of softlab.normalizers.attention_names(): all but
  gumbel_softmax, log_softmax and log_stablemax, which do not give weights)
  and their attention-specific meaning, which each one's AttentionSpec says:
  - softmax; stablemax; softpick (rows need not sum to 1); sparsemax, entmax15,
    sa_softmax, adaptive_softmax (dense only).
  - ssmax: softmax((s log n_i) x). normalizer_kwargs {"s": s}, s a scalar or
    an array of shape [N] (one per head), differentiable (learnable s);
    default 0.43 as in softlab.normalizers.ssmax.
  - sigmoid: sigmoid(x + b). Without "bias" in normalizer_kwargs,
    b = -log S with S the number of keys, one scalar for every row as in the
    paper (b = -log n, n the sequence length; -7.62 at 2,048), unlike
    softlab.normalizers.sigmoid, whose default is 0. An explicit bias (scalar
    or shape [N], differentiable) replaces it.
  - softplus: LSSA. q and k are L2-normalized over the head dim, the default
    `scale` is 1 (no 1/sqrt(d)), and the normalizer multiplies the scores by
    c_i = (ln d)(ln n_i), d = H, with ln n_i taken as 0 for n_i <= 1 (a row
    with one key gets weight 1 whatever c_i). normalizer_kwargs {"scale": c}
    (scalar or shape [N]) replaces (ln d)(ln n_i); {"sharpen_power": p} gives
    LSSAR (see softlab.normalizers.softplus).

  Args:
    query: [B, T, N, H] or [T, N, H].
    key: [B, S, K, H] or [S, K, H].
    value: [B, S, K, Hv] or [S, K, Hv].
    bias: additive, broadcastable to [B, N, T, S]; -inf entries are masked.
      The normalizer's per-row scale (ssmax, LSSA) applies to q.k + bias.
    mask: broadcastable to [B, N, T, S]; boolean, or numeric with nonzero =
      attend (flax's make_attention_mask / make_causal_mask give float 0/1).
    scale: multiplier of q.k; default the spec's (1 / sqrt(H); 1 for softplus).
    is_causal: query t attends keys s <= t only, top-left aligned when T != S
      as in jax (for queries that end a longer key sequence, as when decoding
      with a cache, pass the bottom-right mask explicitly).
    query_seq_lengths: integers [B]: query t of example b takes part only if
      t < query_seq_lengths[b]; the others output 0.
    key_value_seq_lengths: integers [B]: example b attends keys s <
      key_value_seq_lengths[b] only.
    local_window_size: w or (left, right): query t attends keys
      t - left <= s <= t + right only (w = (w, w)); top-left aligned.
    implementation: "xla" or "dense" (the reference: materializes [B, N, T,
      S]), "chunked" (memory linear in T and S, forward and backward; the
      normalizers whose spec has an online form, chunked.supported():
      softmax, ssmax, sigmoid, softplus, softpick, stablemax; the length and
      window arguments become a [B, 1, T, S] mask there), "cudnn" (jax's cuDNN
      kernel: softmax on a GPU only) or None (chunked when the normalizer has
      one, S >= AUTO_CHUNKED_MIN_KEYS, no residual is asked for and the scale
      and the hyperparameters its online form reads (softpick's eps, LSSAR's
      sharpen_power) are concrete scalars: not traced, not per head; else
      dense).
    return_residual: also return the log-sum-exp of the scores over each
      row's attended keys, [B, T, N] (see dense.logsumexp); not "chunked".
    normalizer: the name of the normalizer.
    normalizer_kwargs: its hyperparameters under the names of
      softlab.normalizers (n is supplied per row by the attention).
    block_size: chunked only: at most this many queries and keys per block
      (default chunked.DEFAULT_Q_BLOCK / DEFAULT_K_BLOCK). Lengths need not be
      multiples of it.

  Returns:
    The shape of query with Hv last, in the dtype of query, computed in
    float32 (or wider); with return_residual, (output, residual).

  References:
    Nakanishi, "Scalable-Softmax Is Superior for Attention", arXiv:2501.19399.
    Ramapuram et al., "Theory, Analysis, and Best Practices for Sigmoid
    Self-Attention", arXiv:2409.04431.
    Gao & Spratling, "Softplus Attention with Re-weighting Boosts Length
    Extrapolation in Large Language Models", arXiv:2501.13428.
    Zuhri et al., "Softpick: No Attention Sink, No Massive Activations with
    Rectified Softmax", arXiv:2504.20966.
    Milakov & Gimelshein, "Online normalizer calculation for softmax",
    arXiv:1805.02867.
    Dao et al., "FlashAttention: Fast and Memory-Efficient Exact Attention
    with IO-Awareness", arXiv:2205.14135.
  """
  if implementation is not None and implementation not in IMPLEMENTATIONS:
    raise ValueError(
        f"unknown implementation {implementation!r}; valid: None,"
        f" {', '.join(IMPLEMENTATIONS)}"
    )
  unbatched = jnp.ndim(query) == 3
  window = _common.window_sizes(local_window_size)
  problem = _common.prepare(
      _batched(query),
      _batched(key),
      _batched(value),
      bias,
      mask,
      normalizer=normalizer,
      normalizer_kwargs=normalizer_kwargs,
      scale=scale,
      is_causal=is_causal,
  )
  if implementation == "cudnn":
    _check_cudnn(problem)
    return jax.nn.dot_product_attention(
        query,
        key,
        value,
        bias,
        None if mask is None else validation.boolean_mask(mask, name="mask"),
        scale=scale,
        is_causal=is_causal,
        query_seq_lengths=query_seq_lengths,
        key_value_seq_lengths=key_value_seq_lengths,
        local_window_size=window,
        implementation="cudnn",
        return_residual=return_residual,
    )
  (b, t, _, _), s = problem.query.shape, problem.key.shape[1]
  positions = _common.position_mask(
      b,
      t,
      s,
      query_seq_lengths=query_seq_lengths,
      key_value_seq_lengths=key_value_seq_lengths,
      local_window_size=window,
  )
  if positions is not None:
    mask = positions if problem.mask is None else problem.mask & positions
    problem = problem._replace(mask=mask)
  if implementation is None:
    auto = s >= AUTO_CHUNKED_MIN_KEYS and not return_residual
    implementation = "chunked" if auto and chunked.takes(problem) else "dense"
  if implementation == "chunked":
    if return_residual:
      raise ValueError(
          "return_residual needs implementation 'dense', 'xla' or None, not"
          " 'chunked'"
      )
    out = chunked.chunked_attention(problem, block_size)
  else:
    out = dense.dense_attention(problem)
  if not return_residual:
    return out[0] if unbatched else out
  residual = dense.logsumexp(problem).astype(problem.out_dtype)
  return (out[0], residual[0]) if unbatched else (out, residual)


def _batched(x: ArrayLike) -> jax.Array:
  """x with a batch axis of 1 prepended if it is [T, N, H] (jax's unbatched form)."""
  x = jnp.asarray(x)
  return x[None] if x.ndim == 3 else x


def _check_cudnn(problem: _common.Problem) -> None:
  """ValueError unless jax's cuDNN kernel computes this problem's weights."""
  backend = jax.default_backend()
  if backend != "gpu":
    raise ValueError(
        f"implementation='cudnn' needs a GPU backend, got {backend!r};"
        " use 'xla' or None"
    )
  if problem.spec != _SOFTMAX_WEIGHTS:
    raise ValueError(
        "implementation='cudnn' computes softmax weights only, not"
        f" {problem.normalizer!r}; use 'xla', 'chunked' or None"
    )
