"""Chunked attention: memory linear in sequence length, forward and backward.

Queries are processed in blocks of `q_block` rows; for each, a loop over
key/value blocks of `k_block` keys keeps an online normalizer per row, as the
normalizer's `softlab.normalizers.OnlineForm` describes it: the block's
numerators and row-sum terms given the row shift and the hyperparameters the
form reads (given, else the function's defaults, as Python numbers), whether
the shift is a running row max (sums rescaled by exp(m_old - m_new) as it
grows, as for softmax) and where it starts, and the divisor from the
accumulated row sum.
A form with a `Reweighting` (LSSAR) takes two passes: the first finds the row
shift and sum, the second accumulates the re-weighted numerators and their
row sum.

The custom VJP keeps the output and the per-row statistics and recomputes each
block in the backward pass (flash-attention style): with P = num / den the
weights of a block and mass the row-sum terms (P itself except for softpick's
|e|), the block's cotangents are dP = dO v^T for P and -D for mass / den,
D = sum_h dO O per row; the vjp of the block function turns them into
gradients for q, k, bias, and the per-row multiplier c (ssmax's s log n,
LSSA's scale) or offset b (sigmoid's bias), through which s and learnable
biases get gradients. A reweighting adds a pre-pass for the gradient of the
first pass's row sum. A form whose output depends on the running max m
(softpick) also keeps, per row, where t is largest and 1 - total / den, from
which the backward pass gives the gradient through m to that key. Causal
attention skips the key blocks above the diagonal.

Temporary memory is O(B N (T + S) H + B N q_block k_block), independent of the
sequence length beyond the input-sized buffers.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax

from softlab import normalizers, validation
from softlab.attention import _common

# Default rows per query block and keys per key block (tuned on a 2-core CPU
# with benchmarks/attention.py; see BENCHMARKS.md).
DEFAULT_Q_BLOCK = 256
DEFAULT_K_BLOCK = 256


@dataclasses.dataclass(frozen=True)
class _Config:
  """Static description of one chunked attention call."""

  spec: normalizers.AttentionSpec
  scale: float
  is_causal: bool
  q_len: int
  k_len: int
  q_block: int
  k_block: int
  # The online form's hyperparameters as (name, Python number or None).
  static: tuple[tuple[str, float | None], ...]

  @property
  def q_blocks(self) -> int:
    return -(-self.q_len // self.q_block)

  @property
  def k_blocks(self) -> int:
    return -(-self.k_len // self.k_block)

  @property
  def form(self) -> normalizers.OnlineForm:
    return self.spec.online

  @property
  def static_values(self) -> dict[str, float | None]:
    return dict(self.static)

  @property
  def reweighted(self) -> bool:
    """Whether the form's second pass is on (its switch is not None)."""
    reweighting = self.form.reweighting
    return reweighting is not None and self.static_values[reweighting.switch] is not None

  @property
  def shift_differentiated(self) -> bool:
    """Whether the output depends on the running max m, so its gradient flows through m."""
    return self.form.running_max and not self.form.shift_invariant


def _balanced_block(length: int, block: int) -> int:
  """The block size <= `block` giving the fewest blocks and the least padding.

  E.g. 300 rows with block 256: two blocks of 150 rather than 256 + 44 padded.
  """
  return -(-length // -(-length // block))


def _slice(x, start, size, axis):
  return lax.dynamic_slice_in_dim(x, start, size, axis)


def _pair_starts(x, cfg: _Config, i, j):
  """Start indices of block (i, j) in a [B, K, G, T|1, S|1] bias or mask."""
  t_start = i * cfg.q_block if x.shape[3] > 1 else 0
  s_start = j * cfg.k_block if x.shape[4] > 1 else 0
  return (0, 0, 0, t_start, s_start)


def _pair(x, cfg: _Config, i, j):
  """Block (i, j) of a bias or mask (None stays None)."""
  if x is None:
    return None
  sizes = x.shape[:3] + (
      cfg.q_block if x.shape[3] > 1 else 1,
      cfg.k_block if x.shape[4] > 1 else 1,
  )
  return lax.dynamic_slice(x, _pair_starts(x, cfg, i, j), sizes)


def _add_pair(buffer, cfg: _Config, i, j, update):
  """buffer with `update` added at block (i, j)."""
  starts = _pair_starts(buffer, cfg, i, j)
  current = lax.dynamic_slice(buffer, starts, update.shape)
  return lax.dynamic_update_slice(buffer, current + update, starts)


def _add_rows(buffer, start, update, axis):
  """buffer with `update` added along `axis` from `start`."""
  current = _slice(buffer, start, update.shape[axis], axis)
  return lax.dynamic_update_slice_in_dim(buffer, current + update, start, axis)


def _valid(cfg: _Config, i, j, mask, bias):
  """Which entries of block (i, j) may be attended, broadcastable to the block."""
  k_pos = _key_positions(j, cfg.k_block, 1)
  valid = (k_pos < cfg.k_len)[None, :]
  if cfg.is_causal:
    q_pos = i * cfg.q_block + jnp.arange(cfg.q_block)
    valid = valid & (k_pos[None, :] <= q_pos[:, None])
  for given in (mask, bias):
    if given is not None:
      valid = valid.reshape((1,) * (given.ndim - valid.ndim) + valid.shape)
      valid = valid & (given if given is mask else given > -jnp.inf)
  return valid


def _key_blocks(cfg: _Config, i):
  """How many key blocks query block i sees (causal: up to the diagonal)."""
  if not cfg.is_causal:
    return cfg.k_blocks
  last_query = (i + 1) * cfg.q_block - 1
  return jnp.minimum(cfg.k_blocks, last_query // cfg.k_block + 1)


def _rows_to_values(x):
  """Per-row [B, K, G, bq] -> [B, bq, K, G, 1], the layout of value blocks."""
  return jnp.transpose(x, (0, 3, 1, 2))[..., None]


def _scores(cfg: _Config, q, k, bias, valid):
  """scale * q.k + bias for a block, [B, K, G, bq, bk]; 0 where not valid."""
  q, k = cfg.spec.prepare_qk(q, k)
  x = cfg.scale * jnp.einsum("bqkgh,bskh->bkgqs", q, k)
  if bias is not None:
    x = x + jnp.where(valid, bias, 0)
  return jnp.where(valid, x, 0)


def _transform(cfg: _Config, x, c, b):
  """The form's transform of c x + b (c, b per row; None = left out)."""
  if c is not None:
    x = x * c[..., None]
  if b is not None:
    x = x + b[..., None]
  return cfg.form.transform(x)


def _terms(cfg: _Config, t, m, valid):
  """(numerators, row-sum terms) of a block given the row shift m ([rows])."""
  return cfg.form.terms(t, m[..., None], valid, cfg.static_values)


def _key_positions(j, k_block: int, ndim: int) -> jax.Array:
  """The key indices of key block j, shaped [1, ..., 1, k_block] (ndim axes) to compare
  with per-row key indices without rank promotion."""
  return (j * k_block + jnp.arange(k_block)).reshape((1,) * (ndim - 1) + (k_block,))


def _reweighted(cfg: _Config, t, valid, m, l, n):
  """(second-pass numerators, first-pass numerators) of a block."""
  e, _ = _terms(cfg, t, m, valid)
  reweighting = cfg.form.reweighting
  power = cfg.static_values[reweighting.switch]
  return reweighting.numerators(e, valid, l, n, power), e


def _denominator(cfg: _Config, total):
  """Per-row divisor of the numerators from the accumulated row sum."""
  if not cfg.form.row_sums:
    return jnp.ones_like(total)
  return cfg.form.denominator(total, cfg.static_values)


def _probs(cfg: _Config, q, k, bias, c, b, l, *, valid, m, den, n):
  """(P, mass / den, e, t) of one block, None where unused.

  e, the first pass's numerators, only if reweighted; t only if the shift is
  differentiated.
  """
  t = _transform(cfg, _scores(cfg, q, k, bias, valid), c, b)
  shifted = t if cfg.shift_differentiated else None
  if cfg.reweighted:
    num, e = _reweighted(cfg, t, valid, m, l, n)
    p = num / den[..., None]
    return p, p, e, shifted
  num, mass = _terms(cfg, t, m, valid)
  p = num / den[..., None]
  if mass is None:
    return p, None, None, shifted
  return p, p if mass is num else mass / den[..., None], None, shifted


class _Blocks:
  """Slices of the (padded, grouped) operands for query block i, key block j."""

  def __init__(self, cfg: _Config, k, v, bias, mask, rows):
    self.cfg, self.k, self.v = cfg, k, v
    self.bias, self.mask, self.rows = bias, mask, rows

  def query(self, x, i):
    """Rows of a [B, T, N, H] array for query block i, as [B, bq, K, G, H]."""
    rows = _slice(x, i * self.cfg.q_block, self.cfg.q_block, 1)
    return rows.reshape(rows.shape[:2] + self.k.shape[2:3] + (-1, x.shape[-1]))

  def write(self, buffer, i, rows):
    """buffer [B, T, N, H] with query block i set to rows [B, bq, K, G, H]."""
    rows = rows.reshape(rows.shape[:2] + buffer.shape[2:])
    return lax.dynamic_update_slice_in_dim(buffer, rows, i * self.cfg.q_block, 1)

  def row_values(self, i):
    """The per-row arrays ([B, K, G, T] or None) for query block i."""
    bq = self.cfg.q_block
    return [None if x is None else _slice(x, i * bq, bq, 3) for x in self.rows]

  def keys(self, i, j):
    """(k block, v block, bias block, valid) of block (i, j)."""
    bk = self.cfg.k_block
    bias = _pair(self.bias, self.cfg, i, j)
    valid = _valid(self.cfg, i, j, _pair(self.mask, self.cfg, i, j), bias)
    return (
        _slice(self.k, j * bk, bk, 1),
        _slice(self.v, j * bk, bk, 1),
        bias,
        valid,
    )


def _forward(cfg: _Config, q, k, v, bias, mask, c, b, n):
  """Output [B, Tp, N, Hv] and per-row statistics (m, den, l, at, leak).

  l: the first pass's divisor, if reweighted; at: the first key where t is
  largest and leak: 1 - total / den, if the shift is differentiated.
  """
  blocks = _Blocks(cfg, k, v, bias, mask, (c, b, n))
  batch, t_padded, num_heads, _ = q.shape
  heads = k.shape[2]
  groups = num_heads // heads
  rows_shape = (batch, heads, groups, cfg.q_block)
  start = cfg.form.initial_shift if cfg.form.running_max else 0.0

  def query_block(i, buffers):
    out, m_all, den_all, l_all, at_all, leak_all = buffers
    qb = blocks.query(q, i)
    cb, bb, nb = blocks.row_values(i)

    def transformed(j):
      kb, vb, biasb, valid = blocks.keys(i, j)
      return _transform(cfg, _scores(cfg, qb, kb, biasb, valid), cb, bb), valid, vb

    def online(with_values):
      def step(j, state):
        m, total, acc, at = state
        t, valid, vb = transformed(j)
        if cfg.form.running_max:
          t_valid = jnp.where(valid, t, -jnp.inf)
          block_max = jnp.max(t_valid, axis=-1)
          if at is not None:
            position = j * cfg.k_block + jnp.argmax(t_valid, axis=-1)
            at = jnp.where(block_max > m, position.astype(at.dtype), at)
          m_new = jnp.maximum(m, block_max)
          alpha = jnp.exp(jnp.where(m_new == -jnp.inf, 0, m - m_new))
          total = alpha * total
          acc = acc * _rows_to_values(alpha) if with_values else acc
          m = m_new
        num, mass = _terms(cfg, t, m, valid)
        if mass is not None:
          total = total + jnp.sum(mass, axis=-1)
        if with_values:
          acc = acc + jnp.einsum("bkgqs,bskh->bqkgh", num, vb)
        return m, total, acc, at

      return step

    acc0 = jnp.zeros((batch, cfg.q_block, heads, groups, v.shape[-1]), q.dtype)
    m0 = jnp.full(rows_shape, start, q.dtype)
    total0 = jnp.zeros(rows_shape, q.dtype)
    # The first key where t is largest (-1 while m is initial_shift).
    at0 = jnp.full(rows_shape, -1, jnp.int32) if cfg.shift_differentiated else None
    stop = _key_blocks(cfg, i)
    if cfg.reweighted:
      m, total, _, at = lax.fori_loop(0, stop, online(False), (m0, total0, None, at0))
      l = _denominator(cfg, total)

      def reweight(j, state):
        total, acc = state
        t, valid, vb = transformed(j)
        num, _ = _reweighted(cfg, t, valid, m, l, nb)
        acc = acc + jnp.einsum("bkgqs,bskh->bqkgh", num, vb)
        return total + jnp.sum(num, axis=-1), acc

      total, acc = lax.fori_loop(0, stop, reweight, (total0, acc0))
      l_all = lax.dynamic_update_slice_in_dim(l_all, l, i * cfg.q_block, 3)
    else:
      m, total, acc, at = lax.fori_loop(0, stop, online(True), (m0, total0, acc0, at0))
    den = _denominator(cfg, total)
    if cfg.form.running_max:
      m = jnp.where(jnp.isfinite(m), m, 0)
    out = blocks.write(out, i, acc / _rows_to_values(den))
    first_row = i * cfg.q_block
    m_all = lax.dynamic_update_slice_in_dim(m_all, m, first_row, 3)
    den_all = lax.dynamic_update_slice_in_dim(den_all, den, first_row, 3)
    if cfg.shift_differentiated:
      at_all = lax.dynamic_update_slice_in_dim(at_all, at, first_row, 3)
      leak_all = lax.dynamic_update_slice_in_dim(leak_all, 1 - total / den, first_row, 3)
    return out, m_all, den_all, l_all, at_all, leak_all

  stats_shape = (batch, heads, groups, t_padded)
  zeros = jnp.zeros(stats_shape, q.dtype)
  init = (
      jnp.zeros(q.shape[:-1] + v.shape[-1:], q.dtype),
      zeros,
      zeros,
      zeros if cfg.reweighted else None,
      jnp.zeros(stats_shape, jnp.int32) if cfg.shift_differentiated else None,
      zeros if cfg.shift_differentiated else None,
  )
  out, *stats = lax.fori_loop(0, cfg.q_blocks, query_block, init)
  return out, tuple(stats)


def _zeros_like(x):
  return None if x is None else jnp.zeros_like(x)


def _backward(cfg: _Config, residuals, g):
  """Cotangents of (q, k, v, bias, mask, c, b, n) by recomputing each block."""
  q, k, v, bias, mask, c, b, n, out, stats = residuals
  blocks = _Blocks(cfg, k, v, bias, mask, (c, b, n) + stats)

  def query_block(i, carry):
    dq, dk, dv, dbias, dc, db = carry
    qb, gb = blocks.query(q, i), blocks.query(g, i)
    cb, bb, nb, mb, denb, lb, atb, leakb = blocks.row_values(i)
    # D = sum_h dO O per row, the cotangent of the row sums (when rows have one).
    d = None
    if cfg.form.row_sums:
      d = jnp.einsum("bqkgh,bqkgh->bkgq", gb, blocks.query(out, i))
    stop = _key_blocks(cfg, i)

    def probs(j):
      kb, vb, biasb, valid = blocks.keys(i, j)
      fn = functools.partial(_probs, cfg, valid=valid, m=mb, den=denb, n=nb)
      return fn, kb, vb, biasb

    def row_sum_cotangent(j, total):
      fn, kb, vb, biasb = probs(j)
      _, vjp = jax.vjp(lambda l_: fn(qb, kb, biasb, cb, bb, l_)[0], lb)
      dp = jnp.einsum("bqkgh,bskh->bkgqs", gb, vb)
      return total + vjp(dp - d[..., None])[0]

    g_l = None
    if cfg.reweighted:
      g_l = lax.fori_loop(0, stop, row_sum_cotangent, jnp.zeros_like(lb))
    g_m = None
    if cfg.shift_differentiated:
      # Numerators and sums scale as exp(-m), so at fixed t the cotangent of
      # m is -sum(dP P) + D total / den = -D (1 - total / den), the share of
      # den that does not scale (softpick's eps); m = max(initial_shift, row
      # max of t) passes it to the first key where t is largest.
      g_m = -d * leakb

    def key_block(j, state):
      dqb, dcb, dbb, dk, dv, dbias = state
      fn, kb, vb, biasb = probs(j)
      (p, r, e, t), vjp = jax.vjp(
          lambda *args: fn(*args, lb), qb, kb, biasb, cb, bb
      )
      dp = jnp.einsum("bqkgh,bskh->bkgqs", gb, vb)
      cotangent = (
          dp,
          None if r is None else jnp.broadcast_to(-d[..., None], r.shape),
          None if e is None else jnp.broadcast_to(g_l[..., None], e.shape),
          None if t is None else jnp.where(
              _key_positions(j, cfg.k_block, atb.ndim + 1) == atb[..., None],
              g_m[..., None], 0,
          ),
      )
      dq_j, dk_j, dbias_j, dc_j, db_j = vjp(cotangent)
      dv_j = jnp.einsum("bkgqs,bqkgh->bskh", p, gb)
      start = j * cfg.k_block
      dk = _add_rows(dk, start, dk_j, 1)
      dv = _add_rows(dv, start, dv_j, 1)
      if dbias is not None:
        dbias = _add_pair(dbias, cfg, i, j, dbias_j)
      dcb = None if dcb is None else dcb + dc_j
      dbb = None if dbb is None else dbb + db_j
      return dqb + dq_j, dcb, dbb, dk, dv, dbias

    init = (jnp.zeros_like(qb), _zeros_like(cb), _zeros_like(bb), dk, dv, dbias)
    dqb, dcb, dbb, dk, dv, dbias = lax.fori_loop(0, stop, key_block, init)
    start = i * cfg.q_block
    dq = blocks.write(dq, i, dqb)
    if dc is not None:
      dc = lax.dynamic_update_slice_in_dim(dc, dcb, start, 3)
    if db is not None:
      db = lax.dynamic_update_slice_in_dim(db, dbb, start, 3)
    return dq, dk, dv, dbias, dc, db

  init = tuple(_zeros_like(x) for x in (q, k, v, bias, c, b))
  dq, dk, dv, dbias, dc, db = lax.fori_loop(0, cfg.q_blocks, query_block, init)
  return dq, dk, dv, dbias, None, dc, db, None


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _attend(cfg: _Config, q, k, v, bias, mask, c, b, n):
  return _forward(cfg, q, k, v, bias, mask, c, b, n)[0]


def _attend_fwd(cfg: _Config, q, k, v, bias, mask, c, b, n):
  out, stats = _forward(cfg, q, k, v, bias, mask, c, b, n)
  return out, (q, k, v, bias, mask, c, b, n, out, stats)


_attend.defvjp(_attend_fwd, _backward)


def _count_rows(cfg: _Config, rows_shape, bias, mask):
  """n per query row, [B, K, G, Tp], counting block by block."""

  def query_block(i, counts):
    def key_block(j, total):
      valid = _valid(cfg, i, j, _pair(mask, cfg, i, j), _pair(bias, cfg, i, j))
      return total + jnp.sum(valid, axis=-1, dtype=counts.dtype)

    total = jnp.zeros(rows_shape[:3] + (cfg.q_block,), counts.dtype)
    total = lax.fori_loop(0, _key_blocks(cfg, i), key_block, total)
    return lax.dynamic_update_slice_in_dim(counts, total, i * cfg.q_block, 3)

  counts = jnp.zeros(rows_shape, jnp.float32)
  return lax.fori_loop(0, cfg.q_blocks, query_block, counts)


def _row_counts(cfg: _Config, rows_shape, bias, mask):
  """n per query row, [B, K, G, Tp]: closed form without mask and bias."""
  if bias is not None or mask is not None:
    return _count_rows(cfg, rows_shape, bias, mask)
  positions = jnp.arange(rows_shape[-1], dtype=jnp.float32)
  n = jnp.minimum(positions + 1, cfg.k_len) if cfg.is_causal else cfg.k_len
  return jnp.broadcast_to(n, rows_shape)


def _pad(x, length: int, axis: int, value=0):
  """x padded with `value` to `length` along `axis` (no copy if already there)."""
  if x is None or x.shape[axis] in (1, length):
    return x
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, length - x.shape[axis])
  return jnp.pad(x, widths, constant_values=value)


def _grouped(x, heads: int, groups: int):
  """[B, N|1, ...] -> [B, K|1, G|1, ...]."""
  if x is None:
    return None
  split = (heads, groups) if x.shape[1] > 1 else (1, 1)
  return x.reshape(x.shape[:1] + split + x.shape[2:])


def supported() -> tuple[str, ...]:
  """Names of the normalizers with a chunked form (an OnlineForm in their spec)."""
  return tuple(
      name for name in normalizers.attention_names()
      if normalizers.attention_spec(name).online is not None
  )


def takes(problem: _common.Problem) -> bool:
  """Whether the chunked path can run `problem`: the normalizer has an online
  form, and the scale and the form's hyperparameters are concrete scalars."""
  form = problem.spec.online
  if form is None:
    return False
  statics = [problem.scale] + [problem.hyperparameter(key) for key in form.static]
  return all(_not_static_because(value) is None for value in statics)


def _not_static_because(value) -> str | None:
  """Why `value` cannot be a Python number in the loops; None if it can."""
  if isinstance(value, jax.core.Tracer):
    return "a traced value"
  if value is not None and jnp.ndim(value) != 0:
    return f"an array of shape {jnp.shape(value)}"
  return None


def _static_number(value, name: str):
  """value as a Python float (the chunked loops are built around it), None kept."""
  because = _not_static_because(value)
  if because is not None:
    raise ValueError(
        f"{name} must be a Python number for the chunked implementation, got"
        f" {because}; use implementation='dense' (or None, which chooses it)"
    )
  return None if value is None else float(value)


def _block_sizes(block_size, q_len: int, k_len: int) -> tuple[int, int]:
  if block_size is None:
    return (
        _balanced_block(q_len, DEFAULT_Q_BLOCK),
        _balanced_block(k_len, DEFAULT_K_BLOCK),
    )
  if isinstance(block_size, bool) or not isinstance(block_size, int) or (
      block_size < 1
  ):
    raise ValueError(f"block_size must be a positive int or None, got {block_size!r}")
  return _balanced_block(q_len, block_size), _balanced_block(k_len, block_size)


def _static_values(problem: _common.Problem) -> tuple[tuple[str, float | None], ...]:
  """The online form's hyperparameters (given, else default) as Python numbers."""
  form = problem.spec.online
  static = []
  for key in form.static:
    value = problem.hyperparameter(key)
    static.append((key, _static_number(value, f"normalizer_kwargs[{key!r}]")))
  if form.reweighting is not None:
    validation.check_positive(dict(static)[form.reweighting.switch], form.reweighting.switch)
  return tuple(static)


def chunked_attention(
    problem: _common.Problem, block_size: int | None = None
) -> jax.Array:
  """Attention of a validated problem in blocks, [B, T, N, Hv].

  Args:
    problem: validated inputs (softlab.attention._common.prepare).
    block_size: at most this many queries per query block and keys per key
      block (balanced so the padding is minimal); None for the defaults
      DEFAULT_Q_BLOCK and DEFAULT_K_BLOCK.

  Returns:
    The same values as the dense implementation.
  """
  if problem.spec.online is None:
    raise ValueError(
        f"normalizer {problem.normalizer!r} has no chunked implementation; use"
        f" implementation='dense' or one of: {', '.join(supported())}"
    )
  query, key, value = problem.query, problem.key, problem.value
  batch, q_len, num_heads, _ = query.shape
  k_len, kv_heads = key.shape[1], key.shape[2]
  groups = num_heads // kv_heads
  q_block, k_block = _block_sizes(block_size, q_len, k_len)
  cfg = _Config(
      spec=problem.spec,
      scale=_static_number(problem.scale, "scale"),
      is_causal=problem.is_causal,
      q_len=q_len,
      k_len=k_len,
      q_block=q_block,
      k_block=k_block,
      static=_static_values(problem),
  )
  t_padded, s_padded = cfg.q_blocks * q_block, cfg.k_blocks * k_block
  bias = _grouped(_pad(_pad(problem.bias, t_padded, 2), s_padded, 3), kv_heads, groups)
  mask = _grouped(
      _pad(_pad(problem.mask, t_padded, 2, False), s_padded, 3, False),
      kv_heads,
      groups,
  )
  rows_shape = (batch, kv_heads, groups, t_padded)
  n = None
  if _common.needs_row_counts(problem):
    n = _row_counts(cfg, rows_shape, bias, mask).astype(query.dtype)
  c, b = _common.row_terms(problem, n, (kv_heads, groups, 1))
  c, b = (None if x is None else jnp.broadcast_to(x, rows_shape) for x in (c, b))
  out = _attend(
      cfg,
      _pad(query, t_padded, 1),
      _pad(key, s_padded, 1),
      _pad(value, s_padded, 1),
      bias,
      mask,
      c,
      b,
      n if cfg.reweighted else None,
  )
  return out[:, :q_len].astype(problem.out_dtype)
