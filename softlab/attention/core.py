"""dot_product_attention: attention with the normalizer as an argument."""

import jax
from jax.typing import ArrayLike

from softlab.attention import _common
from softlab.attention import chunked
from softlab.attention import dense

IMPLEMENTATIONS = ("dense", "chunked")
# implementation=None picks "chunked" from this many keys on (when the
# normalizer has a chunked form). On a 2-core CPU (B=4, N=8, H=64, causal,
# fwd+bwd) chunked and dense tie at S=256, chunked is 1.5x faster at 512 and
# 3x at 1024.
AUTO_CHUNKED_MIN_KEYS = 512


def dot_product_attention(
    query: ArrayLike,
    key: ArrayLike,
    value: ArrayLike,
    bias: ArrayLike | None = None,
    mask: ArrayLike | None = None,
    *,
    normalizer: str = "softmax",
    normalizer_kwargs=None,
    scale: float | None = None,
    is_causal: bool = False,
    implementation: str | None = None,
    block_size: int | None = None,
) -> jax.Array:
  """Attention sum_s A[t, s] v_s with A = normalizer(scale * q_t.k_s + bias_ts).

  Layout and conventions of jax.nn.dot_product_attention: query [B, T, N, H],
  key [B, S, K, H], value [B, S, K, Hv], N a multiple of K (MHA, GQA, MQA;
  query head n reads key/value head n // (N / K)). Every query row i has its
  own n_i, the number of keys it may attend after the causal mask, the mask and
  -inf bias entries. A row with n_i = 0 outputs 0, with zero gradients.

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
    query: [B, T, N, H].
    key: [B, S, K, H].
    value: [B, S, K, Hv].
    bias: additive, broadcastable to [B, N, T, S]; -inf entries are masked.
      The normalizer's per-row scale (ssmax, LSSA) applies to q.k + bias.
    mask: boolean, broadcastable to [B, N, T, S]; True = attend.
    normalizer: the name of the normalizer.
    normalizer_kwargs: its hyperparameters under the names of
      softlab.normalizers (n is supplied per row by the attention).
    scale: multiplier of q.k; default the spec's (1 / sqrt(H); 1 for softplus).
    is_causal: query t attends keys s <= t only (top-left aligned if T != S).
    implementation: "dense" (the reference: materializes [B, N, T, S]),
      "chunked" (memory linear in T and S, forward and backward; the
      normalizers whose spec has an online form, chunked.supported(): softmax,
      ssmax, sigmoid, softplus, softpick, stablemax) or None (chunked when the
      normalizer has one, S >= AUTO_CHUNKED_MIN_KEYS and the scale and the
      hyperparameters its online form reads (softpick's eps, LSSAR's
      sharpen_power) are concrete scalars: not traced, not per head; else
      dense).
    block_size: chunked only: at most this many queries and keys per block
      (default chunked.DEFAULT_Q_BLOCK / DEFAULT_K_BLOCK). Lengths need not be
      multiples of it.

  Returns:
    [B, T, N, Hv] in the dtype of query; computed in float32 (or wider).

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
  problem = _common.prepare(
      query,
      key,
      value,
      bias,
      mask,
      normalizer=normalizer,
      normalizer_kwargs=normalizer_kwargs,
      scale=scale,
      is_causal=is_causal,
  )
  if implementation is None:
    long_enough = problem.key.shape[1] >= AUTO_CHUNKED_MIN_KEYS
    implementation = "chunked" if long_enough and chunked.takes(problem) else "dense"
  if implementation == "chunked":
    return chunked.chunked_attention(problem, block_size)
  return dense.dense_attention(problem)
