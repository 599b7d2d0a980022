"""Linear attention: softmax's exp(q.k) replaced by a feature-map kernel phi(q).phi(k).

out_t = sum_s phi(q_t).phi(k_s) v_s / sum_s phi(q_t).phi(k_s)        (causal: s <= t)
      = phi(q_t)^T S_t / phi(q_t).z_t,  S_t = sum_{s<=t} phi(k_s) v_s^T,  z_t = sum_{s<=t} phi(k_s)

(Katharopoulos et al., arXiv:2006.16236: Sec. 3.2 the linearized attention, Sec. 3.3
its causal form with the running sums S_i and Z_i, Sec. 3.4 the same sums as an RNN's
state; the paper's text was not available to check equation numbers, so none are
cited.) Three implementations compute the same numbers:
- "parallel": the masked quadratic form, [T, S] kernel values (a feature map with a
  closed-form kernel, e.g. Taylor, never forms its features here);
- "recurrent": `lax.scan` over time carrying (S_t, z_t);
- "chunked": causal in chunks of C queries: the prefix state of earlier chunks
  (S, z summed per chunk, exclusive cumulative sum over chunks) plus the masked
  quadratic form inside the chunk; memory O(T F + (T / C) F Hv + T C), linear in T.
Non-causal, recurrent and chunked both use the global sums S = sum_s phi(k_s) v_s^T.

Feature maps are registered by name in FEATURE_MAPS (listed by `softlab list`);
`feature_map_spec(name)` says whether phi >= 0, its default scale of q, its closed-form
kernel and the parameters a layer learns for it.

The denominator: for phi >= 0 it is >= 0, and a row whose kernel sum is 0 (no
attended key, or all features 0 as relu can give) would divide 0 by 0. Every
implementation divides by d clamped away from 0 with its sign kept,
max(d, eps) for d >= 0 and min(d, -eps) otherwise (a Taylor map of odd order can
give d < 0), eps = 1e-6 by default: for finite inputs the output is finite and a
row with d = 0 outputs 0.
"""

import dataclasses
import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from softlab.registry import Registry

IMPLEMENTATIONS = ("parallel", "recurrent", "chunked")
DEFAULT_CHUNK_SIZE = 64
DEFAULT_EPS = 1e-6

FEATURE_MAPS = Registry("feature map", "feature maps")


@dataclasses.dataclass(frozen=True)
class FeatureMapSpec:
  """What linear attention needs to know about a feature map besides phi itself.

  Attributes:
    nonnegative: phi(x) >= 0 entrywise (the kernel is then >= 0).
    default_scale: head_dim -> the multiplier of q before phi (1 unless the
      map approximates softmax's exp(q.k / sqrt(d))).
    kernel: optional closed form (q [..., T, H], k [..., S, H], **kwargs) ->
      phi(q).phi(k) [..., T, S], used by the parallel form.
    learned: kwargs a layer learns per key/value head: name -> (head_dim,
      num_kv_heads, options) -> initial value.
  """

  nonnegative: bool = True
  default_scale: Callable[[int], float] = lambda head_dim: 1.0
  kernel: Callable[..., jax.Array] | None = None
  learned: Mapping[str, Callable[..., jax.Array]] = dataclasses.field(default_factory=dict)


_SPECS: dict[str, FeatureMapSpec] = {}


def register_feature_map(name: str, spec: FeatureMapSpec | None = None):
  """Decorator: registers phi(x [..., H], **kwargs) -> [..., F] as `name`."""

  def add(fn):
    FEATURE_MAPS.register(name)(fn)
    _SPECS[name] = spec or FeatureMapSpec()
    return fn

  return add


def feature_map_spec(name: str) -> FeatureMapSpec:
  """The spec of a registered feature map (ValueError naming the valid ones otherwise)."""
  FEATURE_MAPS.get(name)
  return _SPECS[name]


@register_feature_map("elu+1")
def elu_plus_one(x: jax.Array) -> jax.Array:
  """phi(x) = elu(x) + 1 > 0, entrywise.

  References:
    Katharopoulos et al., "Transformers are RNNs: Fast Autoregressive
    Transformers with Linear Attention", arXiv:2006.16236, Sec. 3.2.1.
  """
  return jax.nn.elu(x) + 1


@register_feature_map("relu")
def relu(x: jax.Array) -> jax.Array:
  """phi(x) = max(x, 0), entrywise (the denominator's eps guards all-zero rows).

  References:
    Kasai et al., "Finetuning Pretrained Transformers into RNNs",
    arXiv:2103.13076.
  """
  return jax.nn.relu(x)


def _hedgehog_identity(head_dim: int, num_kv_heads: int, options) -> jax.Array:
  del options
  return jnp.broadcast_to(jnp.eye(head_dim), (num_kv_heads, head_dim, head_dim))


@register_feature_map("hedgehog", FeatureMapSpec(learned={"weight": _hedgehog_identity}))
def hedgehog(x: jax.Array, *, weight: ArrayLike) -> jax.Array:
  """phi(x) = [softmax(W^T x), softmax(-W^T x)] over the F features: 2F values > 0.

  Hedgehog's trainable map with an exponential activation, each half normalized
  over the feature dimension as in the released LoLCATs code
  (src/model/feature_map.py, `SoftmaxDim`, applied to x W of its
  `FeatureMapMLP`); a layer learns W per key/value head, one W for both q and
  k, initialized to the identity. The released LoLCATs configs differ: W is
  [H, 64] per head, separate for q and k (tie_qk_kernels false), initialized
  Kaiming-uniform (zero_init false), no bias, and phi is clamped below at
  1e-12.

  Args:
    x: [..., H]; in linear_attention [B, L, K, G, H] (K key/value heads, G
      query heads per key/value head; keys have G = 1).
    weight: W, [H, F] shared by all heads or [K, H, F] one per key/value head.

  Returns:
    [..., 2F].

  References:
    Zhang et al., "The Hedgehog & the Porcupine: Expressive Linear Attentions
    with Softmax Mimicry", arXiv:2402.04347 (its equations could not be read
    here; the form above is the released LoLCATs code's, which cites it).
    Zhang et al., "LoLCATs: On Low-Rank Linearizing of Large Language Models",
    arXiv:2410.10254.
  """
  weight = jnp.asarray(weight, x.dtype)
  if weight.ndim == 2:
    projected = x @ weight
  elif weight.ndim == 3 and x.ndim >= 3 and x.shape[-3] == weight.shape[0]:
    projected = jnp.einsum("...kgh,khf->...kgf", x, weight)
  else:
    raise ValueError(
        f"hedgehog weight of shape {weight.shape} must be [H, F] or [K, H, F] with"
        f" K the key/value heads of x [..., K, G, H] = {x.shape}"
    )
  return jnp.concatenate(
      [jax.nn.softmax(projected, axis=-1), jax.nn.softmax(-projected, axis=-1)], axis=-1
  )


def check_order(order) -> int:
  """Taylor's order as a positive int; a one-line ValueError otherwise."""
  if isinstance(order, bool) or not isinstance(order, int) or order < 1:
    raise ValueError(f"feature_map_kwargs['order'] must be a positive integer, got {order!r}")
  return order


def taylor_kernel(q: jax.Array, k: jax.Array, *, order: int = 2) -> jax.Array:
  """phi(q).phi(k) of the Taylor map in closed form: sum_{m<=n} (q.k)^m / m! (Horner)."""
  order = check_order(order)
  s = jnp.einsum("...th,...sh->...ts", q, k)
  value = jnp.ones_like(s)
  for m in range(order, 0, -1):
    value = 1 + s * value / m
  return value


@register_feature_map(
    "taylor",
    FeatureMapSpec(
        nonnegative=False, default_scale=lambda head_dim: head_dim**-0.5, kernel=taylor_kernel
    ),
)
def taylor(x: jax.Array, *, order: int = 2) -> jax.Array:
  """phi(x) = [x^{(x)m} / sqrt(m!) for m = 0..n], so phi(q).phi(k) = sum_{m<=n} (q.k)^m / m!.

  x^{(x)m} is the m-fold tensor (Kronecker) power of x, flattened: H^m values,
  1 + H + ... + H^n in all (use the parallel form, which takes the closed-form
  kernel, when that is large). The truncated series of exp(q.k): with q
  scaled by 1/sqrt(H) (the default scale) it approximates softmax attention.
  phi can be negative; the kernel is > 0 for even n and may be <= 0 for odd n
  when q.k < 0.

  Args:
    x: [..., H].
    order: n >= 1.

  Returns:
    [..., sum_{m<=n} H^m].

  References:
    Mongaras & Larson, "On the Expressiveness of Softmax Attention: A
    Recurrent Neural Network Perspective", arXiv:2507.23632: softmax attention
    as the sum over n of RNNs on x^{(x)n} weighted by 1/n! (as third-party
    summaries of the paper state it; its equation numbers could not be read
    here: the paper's text was not reachable). Checked against the released
    code (github.com/gmongaras/On-the-Expressiveness-of-Softmax-Attention-A-
    Recurrent-Neural-Network-Perspective, GPT_Trainer/LlamaDecoderLayer.py,
    attention_type "softmax_taylor_80terms"): it sums s^i / i! for
    i = 0..79 with s = q.k / sqrt(d), i.e. this kernel with the default
    scale and n = 79, computed from the scores rather than from features,
    then masks causally; unlike `linear_attention` it multiplies V by the
    unnormalized sums (the normalized weights are computed but not used).
  """
  order = check_order(order)
  power = jnp.ones(x.shape[:-1] + (1,), x.dtype)
  parts = [power]
  for m in range(1, order + 1):
    power = (power[..., :, None] * x[..., None, :]).reshape(x.shape[:-1] + (-1,)) / math.sqrt(m)
    parts.append(power)
  return jnp.concatenate(parts, axis=-1)


def safe_denominator(d: jax.Array, eps: float) -> jax.Array:
  """d moved away from 0 by eps, its sign kept (both branches finite)."""
  return jnp.where(d >= 0, jnp.maximum(d, eps), jnp.minimum(d, -eps))


def _check_inputs(query, key, value, implementation, is_causal):
  query, key, value = (jnp.asarray(x) for x in (query, key, value))
  if query.ndim != 4 or key.ndim != 4 or value.ndim != 4:
    raise ValueError(
        "query, key and value must be 4-D ([B, T, N, H], [B, S, K, H], [B, S, K, Hv]),"
        f" got shapes {query.shape}, {key.shape}, {value.shape}"
    )
  (b, t, n, h), (bk, s, k, hk) = query.shape, key.shape
  if (bk, hk) != (b, h) or value.shape[:3] != (b, s, k):
    raise ValueError(
        f"key {key.shape} and value {value.shape} do not match query {query.shape}:"
        " need key [B, S, K, H] and value [B, S, K, Hv]"
    )
  if n % k:
    raise ValueError(
        f"the number of query heads ({n}) must be a multiple of the number of"
        f" key/value heads ({k})"
    )
  for array in (query, key, value):
    if not jnp.issubdtype(array.dtype, jnp.floating):
      raise ValueError(f"query, key and value must be floating arrays, got {array.dtype}")
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(
        f"unknown implementation {implementation!r}; valid: {', '.join(IMPLEMENTATIONS)}"
    )
  if is_causal and implementation != "parallel" and t != s:
    raise ValueError(
        f"is_causal with {t} queries and {s} keys needs implementation='parallel'"
        " (recurrent and chunked are self-attention: T = S)"
    )
  return query, key, value


def _feature_map_kwargs(name: str, feature_map_kwargs) -> dict[str, Any]:
  """Validated feature_map_kwargs: the map's keyword arguments, all required ones given."""
  parameters = list(inspect.signature(FEATURE_MAPS.get(name)).parameters.values())[1:]
  kwargs = dict(feature_map_kwargs or {})
  valid = [p.name for p in parameters]
  for key in kwargs:
    if key not in valid:
      raise ValueError(
          f"feature_map_kwargs key {key!r} is not an argument of feature map {name!r};"
          f" valid: {', '.join(valid) or 'none'}"
      )
  for p in parameters:
    if p.default is inspect.Parameter.empty and p.name not in kwargs:
      raise ValueError(f"feature map {name!r} needs feature_map_kwargs[{p.name!r}]")
  if "order" in kwargs:
    check_order(kwargs["order"])
  return kwargs


def linear_attention(
    query: ArrayLike,
    key: ArrayLike,
    value: ArrayLike,
    *,
    feature_map: str = "elu+1",
    feature_map_kwargs: Mapping[str, Any] | None = None,
    is_causal: bool = False,
    implementation: str = "parallel",
    scale: float | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    eps: float = DEFAULT_EPS,
) -> jax.Array:
  """Linear attention sum_s phi(c q_t).phi(k_s) v_s / sum_s phi(c q_t).phi(k_s).

  Layout of dot_product_attention: query [B, T, N, H], key [B, S, K, H], value
  [B, S, K, Hv], N a multiple of K (query head n reads key/value head
  n // (N / K)). Causal: query t reads keys s <= t (top-left aligned in the
  parallel form; recurrent and chunked need T = S).

  Args:
    query: [B, T, N, H].
    key: [B, S, K, H].
    value: [B, S, K, Hv].
    feature_map: a name in FEATURE_MAPS: "elu+1", "relu", "hedgehog",
      "taylor".
    feature_map_kwargs: its keyword arguments, e.g. {"order": 3} for taylor,
      {"weight": W} for hedgehog (W [H, F] or [K, H, F]).
    is_causal: causal masking.
    implementation: "parallel" (quadratic, the closed-form kernel when the map
      has one), "recurrent" (lax.scan over time) or "chunked" (memory linear
      in T).
    scale: c, the multiplier of q before phi; default the map's (1, and
      1/sqrt(H) for taylor so that it approximates softmax attention).
    chunk_size: chunked only: queries per chunk (T need not be a multiple).
    eps: the denominator's distance from 0 (see the module docstring).

  Returns:
    [B, T, N, Hv] in the dtype of query, computed in float32 or wider.

  References:
    Katharopoulos et al., "Transformers are RNNs: Fast Autoregressive
    Transformers with Linear Attention", arXiv:2006.16236, Sec. 3.2-3.4.
    Mongaras & Larson, "On the Expressiveness of Softmax Attention: A
    Recurrent Neural Network Perspective", arXiv:2507.23632 (taylor).
  """
  query, key, value = _check_inputs(query, key, value, implementation, is_causal)
  fn = FEATURE_MAPS.get(feature_map)
  spec = _SPECS[feature_map]
  kwargs = _feature_map_kwargs(feature_map, feature_map_kwargs)
  if not isinstance(chunk_size, int) or chunk_size < 1:
    raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
  out_dtype = query.dtype
  dtype = jnp.promote_types(jnp.result_type(query, key, value), jnp.float32)
  (b, t, n, h), k = query.shape, key.shape[2]
  c = spec.default_scale(h) if scale is None else scale
  q = (c * query.astype(dtype)).reshape(b, t, k, n // k, h)  # [B, T, K, G, H]
  key = key.astype(dtype)[:, :, :, None, :]  # [B, S, K, 1, H]
  value = value.astype(dtype)
  if implementation == "parallel" and spec.kernel is not None:
    scores = spec.kernel(q.transpose(0, 2, 3, 1, 4), key.transpose(0, 2, 3, 1, 4), **kwargs)
    out = _parallel(scores, value, is_causal, eps)
  else:
    phi_q, phi_k = fn(q, **kwargs), fn(key, **kwargs)[:, :, :, 0]  # [B, T, K, G, F], [B, S, K, F]
    if implementation == "parallel":
      scores = jnp.einsum("btkgf,bskf->bkgts", phi_q, phi_k)
      out = _parallel(scores, value, is_causal, eps)
    elif not is_causal:
      out = _global(phi_q, phi_k, value, eps)
    elif implementation == "recurrent":
      out = _recurrent(phi_q, phi_k, value, eps)
    else:
      out = _chunked(phi_q, phi_k, value, chunk_size, eps)
  return out.reshape(b, t, n, -1).astype(out_dtype)


def _parallel(scores, value, is_causal: bool, eps: float) -> jax.Array:
  """scores [B, K, G, T, S] (kernel values), value [B, S, K, Hv] -> [B, T, K, G, Hv]."""
  if is_causal:
    t, s = scores.shape[-2:]
    scores = jnp.where(jnp.tril(jnp.ones((t, s), bool)), scores, 0)
  numerator = jnp.einsum("bkgts,bskv->btkgv", scores, value)
  denominator = jnp.sum(scores, axis=-1).transpose(0, 3, 1, 2)[..., None]
  return numerator / safe_denominator(denominator, eps)


def _global(phi_q, phi_k, value, eps: float) -> jax.Array:
  """Non-causal: phi(q)^T S / phi(q).z with S, z summed over all keys."""
  state = jnp.einsum("bskf,bskv->bkfv", phi_k, value)
  normalizer = jnp.sum(phi_k, axis=1)
  numerator = jnp.einsum("btkgf,bkfv->btkgv", phi_q, state)
  denominator = jnp.einsum("btkgf,bkf->btkg", phi_q, normalizer)[..., None]
  return numerator / safe_denominator(denominator, eps)


def _recurrent(phi_q, phi_k, value, eps: float) -> jax.Array:
  """Causal, one step per position: S_t = S_{t-1} + phi(k_t) v_t^T, z_t = z_{t-1} + phi(k_t)."""

  def step(carry, inputs):
    state, normalizer = carry
    q_t, k_t, v_t = inputs  # [B, K, G, F], [B, K, F], [B, K, Hv]
    state = state + k_t[..., :, None] * v_t[..., None, :]
    normalizer = normalizer + k_t
    numerator = jnp.einsum("bkgf,bkfv->bkgv", q_t, state)
    denominator = jnp.einsum("bkgf,bkf->bkg", q_t, normalizer)[..., None]
    return (state, normalizer), numerator / safe_denominator(denominator, eps)

  b, _, k, f = phi_k.shape
  init = (jnp.zeros((b, k, f, value.shape[-1]), value.dtype), jnp.zeros((b, k, f), value.dtype))
  inputs = tuple(jnp.moveaxis(x, 1, 0) for x in (phi_q, phi_k, value))
  _, out = jax.lax.scan(step, init, inputs)
  return jnp.moveaxis(out, 0, 1)


def _chunked(phi_q, phi_k, value, chunk_size: int, eps: float) -> jax.Array:
  """Causal in chunks: earlier chunks through their summed state, the own chunk masked."""
  b, t, k, g, _ = phi_q.shape
  size = min(chunk_size, t)
  chunks = -(-t // size)
  pad = chunks * size - t  # padded keys come after every real query: causality ignores them

  def split(x):
    x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
    return x.reshape(b, chunks, size, *x.shape[2:])

  q_c, k_c, v_c = split(phi_q), split(phi_k), split(value)  # [B, C#, C, ...]
  chunk_states = jnp.einsum("bcskf,bcskv->bckfv", k_c, v_c)
  chunk_sums = jnp.sum(k_c, axis=2)  # [B, C#, K, F]
  states = jnp.cumsum(chunk_states, axis=1) - chunk_states  # exclusive: chunks before
  sums = jnp.cumsum(chunk_sums, axis=1) - chunk_sums
  scores = jnp.einsum("bctkgf,bcskf->bckgts", q_c, k_c)
  scores = jnp.where(jnp.tril(jnp.ones((size, size), bool)), scores, 0)
  numerator = jnp.einsum("bckgts,bcskv->bctkgv", scores, v_c)
  numerator = numerator + jnp.einsum("bctkgf,bckfv->bctkgv", q_c, states)
  denominator = jnp.sum(scores, axis=-1).transpose(0, 1, 4, 2, 3)
  denominator = denominator + jnp.einsum("bctkgf,bckf->bctkg", q_c, sums)
  out = numerator / safe_denominator(denominator[..., None], eps)
  return out.reshape(b, chunks * size, k, g, -1)[:, :t]


def sliding_window_linear_attention(
    query: ArrayLike,
    key: ArrayLike,
    value: ArrayLike,
    *,
    window: int,
    feature_map: str = "elu+1",
    feature_map_kwargs: Mapping[str, Any] | None = None,
    scale: float | None = None,
    linear_scale: float | None = None,
    window_factor: ArrayLike | None = None,
    eps: float = DEFAULT_EPS,
) -> jax.Array:
  """Causal hybrid: softmax weights on the last `window` keys, linear attention on older ones.

  out_t = [gamma sum_{t-w<s<=t} exp(c q_t.k_s) v_s + sum_{s<=t-w} phi(c' q_t).phi(k_s) v_s]
          / [gamma sum_{t-w<s<=t} exp(c q_t.k_s) + sum_{s<=t-w} phi(c' q_t).phi(k_s)]

  The sliding-window + linear attention of LoLCATs: the windowed softmax
  terms weighted by gamma, a factor per query head (the layers learn it as
  gamma = sigmoid(w), `window_factor`), the linear terms by 1, one shared
  denominator; gamma = None weights both by 1. Computed in the parallel
  (quadratic) form with every term of row t multiplied by exp(-m_t),
  m_t = max(0, the row's largest windowed score), so no exp overflows; with
  window >= T every term is windowed, gamma cancels, and the output is
  softmax attention exactly.

  Checked against the released code (github.com/HazyResearch/lolcats,
  src/model/linear_attention/linear_window_attention_sw.py,
  `hybrid_attention_quadratic` and `LolcatsSlidingWindowAttention`): the same
  split (softmax on keys t-w < s <= t, linear on s <= t-w), the softmax
  terms times window_factor = sigmoid(window_factors), one parameter per
  query head ([1, num_heads, 1, 1]; its configs initialize it at
  w = -2.197 = logit(0.1)), the linear terms times 1 (1 - gamma with
  `affine_attention_factors`, off in its configs), and one shared
  denominator. One difference: it shifts only the softmax terms by the
  row's windowed maximum, gamma exp(s - m_t), leaving the linear terms
  unshifted, so the balance of the two parts depends on m_t; here both
  parts are shifted alike (the exact ratio above). Its configs use w = 64
  and the Hedgehog map with 64 features.

  Args:
    query: [B, T, N, H] (N a multiple of K, as in linear_attention).
    key: [B, T, K, H].
    value: [B, T, K, Hv].
    window: w >= 1, the keys t-w+1..t read by softmax.
    feature_map, feature_map_kwargs: the linear part's (see linear_attention).
    scale: c, softmax's multiplier of q.k; default 1/sqrt(H).
    linear_scale: c', the feature map's multiplier of q; default the map's.
    window_factor: gamma [N], the softmax terms' weight per query head (query
      head n reads key/value head n // (N / K)); None = 1.
    eps: the denominator's distance from 0.

  Returns:
    [B, T, N, Hv] in the dtype of query.

  References:
    Zhang et al., "LoLCATs: On Low-Rank Linearizing of Large Language Models",
    arXiv:2410.10254 (sliding window + linear attention; its equation
    numbers could not be checked here: the paper's text was not reachable).
  """
  query, key, value = _check_inputs(query, key, value, "parallel", True)
  if query.shape[1] != key.shape[1]:
    raise ValueError(f"sliding_window_linear_attention is self-attention: T = S, got {query.shape[1]} and {key.shape[1]}")
  if isinstance(window, bool) or not isinstance(window, int) or window < 1:
    raise ValueError(f"window must be a positive integer, got {window!r}")
  fn = FEATURE_MAPS.get(feature_map)
  spec = _SPECS[feature_map]
  kwargs = _feature_map_kwargs(feature_map, feature_map_kwargs)
  out_dtype = query.dtype
  dtype = jnp.promote_types(jnp.result_type(query, key, value), jnp.float32)
  (b, t, n, h), k = query.shape, key.shape[2]
  q = query.astype(dtype).reshape(b, t, k, n // k, h).transpose(0, 2, 3, 1, 4)  # [B, K, G, T, H]
  keys = key.astype(dtype).transpose(0, 2, 1, 3)[:, :, None]  # [B, K, 1, S, H]
  value = value.astype(dtype)
  c = h**-0.5 if scale is None else scale
  c_linear = spec.default_scale(h) if linear_scale is None else linear_scale
  if spec.kernel is not None:
    kernel = spec.kernel(c_linear * q, keys, **kwargs)
  else:
    phi_q = fn((c_linear * q).transpose(0, 3, 1, 2, 4), **kwargs).transpose(0, 2, 3, 1, 4)
    phi_k = fn(keys.transpose(0, 3, 1, 2, 4), **kwargs).transpose(0, 2, 3, 1, 4)
    kernel = jnp.einsum("bkgtf,bkgsf->bkgts", phi_q, phi_k)
  rows, cols = jnp.arange(t)[:, None], jnp.arange(t)[None, :]
  windowed = (cols <= rows) & (cols > rows - window)
  linear_part = cols <= rows - window
  scores = jnp.where(windowed, c * jnp.einsum("bkgth,bkgsh->bkgts", q, keys), -jnp.inf)
  shift = jnp.maximum(jnp.max(scores, axis=-1, keepdims=True), 0)
  weights = jnp.where(windowed, jnp.exp(scores - shift), 0)
  if window_factor is not None:
    gamma = jnp.asarray(window_factor)
    if gamma.shape != (n,):
      raise ValueError(f"window_factor must have shape ({n},) (one per query head), got {gamma.shape}")
    weights = gamma.astype(dtype).reshape(k, n // k)[:, :, None, None] * weights
  weights = weights + jnp.where(linear_part, kernel, 0) * jnp.exp(-shift)
  numerator = jnp.einsum("bkgts,bskv->btkgv", weights, value)
  denominator = jnp.sum(weights, axis=-1).transpose(0, 3, 1, 2)[..., None]
  out = numerator / safe_denominator(denominator, eps)
  return out.reshape(b, t, n, -1).astype(out_dtype)
