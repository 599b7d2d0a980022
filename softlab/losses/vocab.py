"""Fused linear cross-entropy for large vocabularies: no N x V logits.

The loss of every token is computed from `hidden @ weight` one block of
vocabulary columns at a time with an online log-sum-exp, and a custom VJP
recomputes each block in the backward pass, so memory grows with N x block
instead of N x V, in the forward and in the backward pass.
"""

import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from softlab import validation
from softlab.losses._common import compute_dtype, merge_logsumexp
from softlab.losses._registry import REGISTRY

__all__ = ["linear_cross_entropy"]

# Elements of one [tokens, block] logits block in the default block size:
# 2^22 float32 values = 16 MiB. On a 2-core CPU (benchmarks/losses.py, N = 2048,
# d = 256, V = 32768), blocks of 2048 and 4096 columns were the fastest
# (0.88x the dense time on one CPU device, about 1.0x with the benchmark's 8
# simulated devices), 1024 and 8192 a few percent slower, 512 and below
# clearly slower. Bounding tokens x block keeps the memory flat as N grows
# (block 512 at N = 8192).
_BLOCK_ELEMENTS = 2**22
_MIN_BLOCK = 128


def _default_block_size(tokens: int, vocab: int) -> int:
  """The largest power of two with tokens x block <= 2^22, in [128, vocab]."""
  block = _MIN_BLOCK
  while block * 2 * max(tokens, 1) <= _BLOCK_ELEMENTS:
    block *= 2
  return min(block, vocab)


def _loop_blocks(body, init, vocab, block):
  """body over the blocks, carrying init.

  Block 0 runs outside the loop so the carry starts with the device-varying
  type its values have under shard_map.
  """
  return jax.lax.fori_loop(1, -(-vocab // block), body, body(0, init))


def _block_start(j, block, vocab):
  """First column of block j; the last block is moved left to end at `vocab`."""
  return jnp.minimum(j * block, vocab - block)


def _soft_cap(raw, cap):
  """(cap tanh(raw / cap), the tanh), NaN where raw is not finite.

  tanh turns an infinite logit into +-cap, a finite loss from an infinite
  input; raw - raw (+0 when finite, so subtracting it changes nothing) makes
  it NaN instead.
  """
  t = jnp.tanh(raw / cap)
  return cap * t - (raw - raw), t


def _block_logits(hidden, weight, j, block, cap, cdtype):
  """(logits, tanh(raw / cap) or None, column ids, valid, weights) of block j.

  The columns a moved last block shares with block j - 1 are not valid, so
  every column counts once.
  """
  start = _block_start(j, block, weight.shape[1])
  w = jax.lax.dynamic_slice_in_dim(weight, start, block, axis=1)
  raw = jnp.dot(hidden, w, preferred_element_type=cdtype)
  columns = start + jnp.arange(block)
  valid = columns >= j * block
  if cap is None:
    return raw, None, columns, valid, w
  return *_soft_cap(raw, cap), columns, valid, w


def _local_labels(labels, vocab, axis_name):
  """labels as column ids of this device's weight; -1 for columns elsewhere."""
  if axis_name is not None:
    labels = labels - jax.lax.axis_index(axis_name) * vocab
  return jnp.where((labels >= 0) & (labels < vocab), labels, -1)


def _varying_axes(x) -> frozenset:
  """The shard_map axes x varies along (none outside shard_map, under pmap)."""
  return frozenset(getattr(getattr(jax.typeof(x), "mat", None), "varying", ()))


def _sum_to_varying_axes_of(cotangent, primal):
  """cotangent summed over the shard_map axes it varies along but primal not.

  Autodiff does this itself (the transpose of the implicit broadcast of an
  invariant value is a psum); a custom VJP must, e.g. for a weight replicated
  across a data-parallel axis while the tokens are split over it.
  """
  extra = _varying_axes(cotangent) - _varying_axes(primal)
  return jax.lax.psum(cotangent, tuple(sorted(extra))) if extra else cotangent


def _forward(hidden, weight, labels, config):
  """(loss of every token, its lse), by blocks over the vocabulary."""
  block, z_loss, cap, axis_name, cdtype, _ = config
  vocab = weight.shape[1]

  def body(j, carry):
    m, total = carry
    logits, _, _, valid, _ = _block_logits(
        hidden, weight, j, block, cap, cdtype
    )
    logits = jnp.where(valid, logits, -jnp.inf)
    m_new = jnp.maximum(m, jnp.max(logits, axis=1))
    total = total * jnp.exp(m - m_new) + jnp.sum(
        jnp.exp(logits - m_new[:, None]), axis=1
    )
    return m_new, total

  tokens = hidden.shape[0]
  init = (jnp.full((tokens,), -jnp.inf, cdtype), jnp.zeros((tokens,), cdtype))
  m, total = _loop_blocks(body, init, vocab, block)
  lse = merge_logsumexp(m, total, axis_name)
  local = _local_labels(labels, vocab, axis_name)
  w_target = jnp.take(weight, jnp.maximum(local, 0), axis=1)
  target = jnp.einsum(
      "nd,dn->n", hidden, w_target, preferred_element_type=cdtype
  )
  if cap is not None:
    target = _soft_cap(target, cap)[0]
  target = jnp.where(local >= 0, target, 0)
  if axis_name is not None:
    target = jax.lax.psum(target, axis_name)
  return lse - target + z_loss * lse * lse, lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _fused(hidden, weight, labels, keep, config):
  return jnp.where(keep, _forward(hidden, weight, labels, config)[0], 0)


def _fused_fwd(hidden, weight, labels, keep, config):
  loss, lse = _forward(hidden, weight, labels, config)
  return jnp.where(keep, loss, 0), (hidden, weight, labels, keep, lse)


def _label_gradients(hidden, weight, local, g, cap, cdtype):
  """(d_hidden, d_weight) of the -[v = y_i] part of d loss_i / d l_iv, times g.

  One gathered column per token (tokens whose label is on another device add
  nothing); under the soft cap times 1 - tanh^2 of the label's logit.
  """
  w_target = jnp.take(weight, jnp.maximum(local, 0), axis=1)
  scale = jnp.where(local >= 0, -g, 0)
  if cap is not None:
    raw = jnp.einsum("nd,dn->n", hidden, w_target, preferred_element_type=cdtype)
    t = jnp.tanh(raw / cap)
    scale = scale * (1 - t * t)
  d_hidden = scale[:, None] * w_target.T.astype(cdtype)
  d_weight = jnp.zeros(weight.shape, weight.dtype).at[:, jnp.maximum(local, 0)].add(
      (hidden.T.astype(cdtype) * scale[None, :]).astype(weight.dtype))
  return d_hidden, d_weight


def _fused_bwd(config, residuals, g):
  """d_hidden and d_weight, recomputing each block's logits.

  d loss_i / d l_iv = (1 + 2 z_loss lse_i) p_iv - [v = y_i], times
  1 - tanh^2 under the soft cap. The softmax part goes block by block; with
  filter_eps, a block whose probabilities p_iv are all below it (for every
  token) skips its two gradient matmuls (Cut Cross-Entropy's gradient
  filtering). The label part is one gathered column per token, never skipped.
  Masked tokens get exactly 0 and add exactly 0, even with NaN hidden states.
  """
  block, z_loss, cap, axis_name, cdtype, filter_eps = config
  hidden, weight, labels, keep, lse = residuals
  vocab = weight.shape[1]
  g = jnp.where(keep, g, 0).astype(cdtype)
  coef = (g * (1 + 2 * z_loss * lse))[:, None]
  local = _local_labels(labels, vocab, axis_name)
  kept_hidden = jnp.where(keep[:, None], hidden, 0)

  def accumulate(j, carry, w, d_logits):
    d_hidden, d_weight = carry
    d_hidden = d_hidden + jnp.dot(d_logits, w.T, preferred_element_type=cdtype)
    # Added to what is there: a moved last block overlaps the previous one.
    start = _block_start(j, block, vocab)
    d_w = jnp.dot(kept_hidden.T, d_logits, preferred_element_type=cdtype)
    d_w = d_w + jax.lax.dynamic_slice_in_dim(d_weight, start, block, axis=1)
    d_weight = jax.lax.dynamic_update_slice_in_dim(d_weight, d_w.astype(weight.dtype), start,
                                                   axis=1)
    return d_hidden, d_weight

  def body(j, carry):
    logits, t, _, valid, w = _block_logits(hidden, weight, j, block, cap, cdtype)
    p = jnp.exp(jnp.where(valid, logits - lse[:, None], -jnp.inf))
    d_logits = coef * p
    if cap is not None:
      d_logits = d_logits * (1 - t * t)
    d_logits = jnp.where(keep[:, None], d_logits, 0)  # 0 * NaN is NaN
    if filter_eps is None:
      return accumulate(j, carry, w, d_logits)
    return jax.lax.cond(jnp.max(p) < filter_eps, lambda: carry,
                        lambda: accumulate(j, carry, w, d_logits))

  d_hidden, d_weight = _label_gradients(kept_hidden, weight, local, g, cap, cdtype)
  d_hidden, d_weight = _loop_blocks(body, (d_hidden, d_weight), vocab, block)
  if axis_name is not None:
    d_hidden = jax.lax.psum(d_hidden, axis_name)
  return (
      _sum_to_varying_axes_of(d_hidden, hidden).astype(hidden.dtype),
      _sum_to_varying_axes_of(d_weight, weight),
      None,
      None,
  )


_fused.defvjp(_fused_fwd, _fused_bwd)


@REGISTRY.register("linear_cross_entropy", kind="vocab_head")
def linear_cross_entropy(
    hidden: ArrayLike,
    weight: ArrayLike,
    labels: ArrayLike,
    *,
    block_size: int | None = None,
    where: ArrayLike | None = None,
    z_loss: float = 0.0,
    logit_soft_cap: float | None = None,
    axis_name=None,
    dtype=None,
    filter_eps: float | None = None,
) -> jax.Array:
  """Per-token cross-entropy of logits = hidden @ weight, without N x V logits.

  loss_i = lse_i - l_{i, y_i} + z_loss * lse_i^2, lse_i = log sum_v exp(l_iv),
  with l = hidden @ weight, or l = c tanh(hidden @ weight / c) with the logit
  soft cap c (Gemma 2). The vocabulary is processed in blocks of `block_size`
  columns: the forward pass keeps a running max and rescaled sum per token
  (online log-sum-exp), and the backward pass (a custom VJP) recomputes each
  block's logits to accumulate d_hidden and write d_weight block by block.
  Memory is O(N x block_size + N d) beyond the inputs and gradients; time is
  four N x d x V matmuls (the dense path: three, but it streams N x V arrays
  through memory several times). The correct-class logit is one gathered dot
  product per token. A vocabulary that is not a multiple of the block is
  covered by moving the last block left to end at V, with the columns it
  shares with the previous block left out. Only reverse-mode differentiation
  is defined (jax.grad, not jax.jvp).

  filter_eps (Cut Cross-Entropy's gradient filtering, Section 4.3): in the
  backward pass a vocabulary block whose softmax probabilities are all below
  filter_eps, for every token, skips its two gradient matmuls (its logits are
  still recomputed to find out). The loss is unchanged; every dropped entry of
  d loss / d logits is below filter_eps times the token's upstream gradient
  (and 1 + 2 z_loss lse). The paper filters at 2^-12 (bfloat16's precision)
  in tiles of tokens x vocabulary; here a block spans all tokens, so it is
  skipped only when no token puts filter_eps on it. Under vmap the skip is
  computed but not taken (lax.cond becomes a select).

  Args:
    hidden: [..., d] final hidden states (any float dtype; bf16 matmuls
      accumulate in the compute dtype).
    weight: [d, V] output projection; with `axis_name`, this device's
      [d, V / D] slice of the vocabulary (device k holds columns
      k V / D ... (k + 1) V / D - 1).
    labels: [...] integer targets in [0, V) (global ids when sharded).
    block_size: vocabulary columns per block. None: the largest power of two
      with tokens x block <= 2^22 (16 MiB of float32 logits), between 128 and
      V (2048 at 2048 tokens): among the fastest on CPU in
      benchmarks/losses.py, with memory flat as the token count grows.
    where: [...] boolean mask, True = keep; masked tokens get loss 0 and zero
      gradient (their labels may be anything, e.g. -100).
    z_loss: weight of the z-loss lse^2 (PaLM uses 1e-4); >= 0.
    logit_soft_cap: c > 0 for c tanh(logits / c) (Gemma 2 uses 30); None for
      raw logits.
    axis_name: mesh or pmap axis over which the vocabulary is sharded; inside
      `shard_map` (hidden and labels replicated) or `pmap`. The max and the sum
      of each token are combined with pmax / psum and the correct-class logit
      with psum; d_hidden is psum-ed, so every device returns the same losses
      and the gradient of one copy of them.
    dtype: compute dtype of the logits and the loss; None for float32 or the
      inputs' wider float dtype.
    filter_eps: None (no filtering) or a threshold in (0, 1) for the backward
      pass's gradient filtering.

  Returns:
    [...] per-token losses in the compute dtype.

  References:
    Wijmans et al., "Cut Your Losses in Large-Vocabulary Language Models",
    arXiv:2411.09009; Milakov & Gimelshein, "Online normalizer calculation
    for softmax", arXiv:1805.02867; Gemma Team, "Gemma 2: Improving Open
    Language Models at a Practical Size", arXiv:2408.00118.
  """
  hidden, weight, labels = (
      jnp.asarray(hidden),
      jnp.asarray(weight),
      jnp.asarray(labels),
  )
  if weight.ndim != 2:
    raise ValueError(f"weight must be [d, V], got shape {weight.shape}")
  if hidden.ndim < 1 or hidden.shape[-1] != weight.shape[0]:
    raise ValueError(
        f"hidden of shape {hidden.shape} must end in d = {weight.shape[0]}"
        f" (weight of shape {weight.shape})"
    )
  labels = validation.check_array(labels, "labels", dtype=int, shape=hidden.shape[:-1])
  keep = jnp.ones(labels.shape, bool) if where is None else where
  keep = validation.check_array(keep, "where", dtype=bool, shape=labels.shape)
  if axis_name is None:
    validation.check_label_range(labels, weight.shape[1], where=keep,
                                 classes="vocabulary entries (where kept)")
  if block_size is not None and not (
      isinstance(block_size, int) and block_size > 0
  ):
    raise ValueError(
        f"block_size must be a positive int or None, got {block_size!r}"
    )
  validation.check_number(z_loss, "z_loss", lambda v: v >= 0, ">= 0")
  if filter_eps is not None:
    validation.check_number(filter_eps, "filter_eps", lambda v: 0 < v < 1, "in (0, 1) or None")
  if logit_soft_cap is not None:
    validation.check_number(logit_soft_cap, "logit_soft_cap", lambda v: v > 0, "> 0 or None")
  tokens, vocab = labels.size, weight.shape[1]
  block = (
      _default_block_size(tokens, vocab) if block_size is None else block_size
  )
  config = (
      min(block, vocab),
      float(z_loss),
      None if logit_soft_cap is None else float(logit_soft_cap),
      axis_name,
      compute_dtype(hidden, weight, dtype=dtype),
      None if filter_eps is None else float(filter_eps),
  )
  loss = _fused(
      hidden.reshape(tokens, -1),
      weight,
      labels.reshape(tokens).astype(jnp.int32),
      keep.reshape(tokens),
      config,
  )
  return loss.reshape(labels.shape)
