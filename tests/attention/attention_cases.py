"""Attention test inputs and an independent float64 NumPy reference.

Imported by the attention test files (pytest puts this directory on sys.path).
"""

import dataclasses

import jax.numpy as jnp
import numpy as np

from fast_jit import jit  # the attention tests compile with C.jit too
from softlab import normalizers
from softlab.attention import _common
from softlab.attention import dot_product_attention


@dataclasses.dataclass(frozen=True)
class Case:
  """One attention problem; arrays are NumPy float32 (mask bool)."""

  query: np.ndarray
  key: np.ndarray
  value: np.ndarray
  bias: np.ndarray | None
  mask: np.ndarray | None
  is_causal: bool
  block_size: int

  @property
  def num_heads(self) -> int:
    return self.query.shape[2]


def _normal(rng, shape, std=1.0):
  return (std * rng.standard_normal(shape)).astype(np.float32)


def self_attention_case() -> Case:
  """Causal, GQA (N=4, K=2), T=S=19 (not a multiple of the block 8), key padding.

  Batch 1 masks keys 0-2, so its query rows 0-2 attend nothing.
  """
  rng = np.random.default_rng(1)
  b, t, n, k, h = 2, 19, 4, 2, 8
  mask = np.ones((b, 1, 1, t), bool)
  mask[0, ..., -4:] = False
  mask[1, ..., :3] = False
  return Case(
      query=_normal(rng, (b, t, n, h), 1.5),
      key=_normal(rng, (b, t, k, h)),
      value=_normal(rng, (b, t, k, h)),
      bias=None,
      mask=mask,
      is_causal=True,
      block_size=8,
  )


def cross_attention_case() -> Case:
  """Not causal, MQA (N=2, K=1), T=11 != S=37, bias with -inf entries, mask.

  Query row 2 of head 0 has an all -inf bias row, so it attends nothing.
  """
  rng = np.random.default_rng(2)
  b, t, s, n, h = 1, 11, 37, 2, 8
  bias = _normal(rng, (1, n, t, s))
  bias[rng.random(bias.shape) < 0.1] = -np.inf
  bias[0, 0, 2] = -np.inf
  return Case(
      query=_normal(rng, (b, t, n, h), 1.5),
      key=_normal(rng, (b, s, 1, h)),
      value=_normal(rng, (b, s, 1, h)),
      bias=bias,
      mask=rng.random((b, 1, t, s)) > 0.3,
      is_causal=False,
      block_size=16,
  )


def long_query_case() -> Case:
  """Causal with T=23 > S=13, no mask or bias (n from the closed form)."""
  rng = np.random.default_rng(3)
  b, t, s, n, h = 1, 23, 13, 2, 8
  return Case(
      query=_normal(rng, (b, t, n, h), 1.5),
      key=_normal(rng, (b, s, n, h)),
      value=_normal(rng, (b, s, n, h)),
      bias=None,
      mask=None,
      is_causal=True,
      block_size=8,
  )


CASES = {
    "self": self_attention_case,
    "cross": cross_attention_case,
    "long_query": long_query_case,
}


def per_head(low, high):
  return lambda num_heads: np.linspace(low, high, num_heads).astype(np.float32)


# name -> (normalizer, fixed kwargs, learnable kwargs as functions of N).
VARIANTS = {
    "softmax": ("softmax", {}, {}),
    "ssmax": ("ssmax", {}, {"s": per_head(0.3, 1.2)}),
    "sigmoid": ("sigmoid", {}, {}),
    "sigmoid_bias": ("sigmoid", {}, {"bias": per_head(-2.0, 0.5)}),
    "lssa": ("softplus", {}, {}),
    "lssa_scale": ("softplus", {}, {"scale": per_head(2.0, 6.0)}),
    "lssar3": ("softplus", {"sharpen_power": 3.0}, {}),
    "lssar15": ("softplus", {"sharpen_power": 15.0}, {}),
    "softpick": ("softpick", {}, {}),
    "stablemax": ("stablemax", {}, {}),
}


def variant(name: str, num_heads: int):
  """(normalizer, fixed kwargs, learnable kwargs as float32 arrays)."""
  normalizer, fixed, learnable = VARIANTS[name]
  return normalizer, fixed, {k: f(num_heads) for k, f in learnable.items()}


def non_default_kwargs(normalizer: str) -> dict:
  """normalizer_kwargs with every hyperparameter of `normalizer` away from its default.

  A number d becomes 2 d + 1 and a bool flips; any other default (None) takes
  the value the spec gives in `examples`.
  """
  examples = dict(normalizers.attention_spec(normalizer).examples)
  kwargs = {}
  for key, default in _common.hyperparameters(normalizer).items():
    if key in examples:
      kwargs[key] = examples[key]
    elif isinstance(default, bool):
      kwargs[key] = not default
    elif isinstance(default, (int, float)):
      kwargs[key] = type(default)(2 * default + 1)
    else:
      raise ValueError(
          f"normalizer {normalizer!r}: its spec needs an example value of {key!r}"
          f" (default {default!r})"
      )
  return kwargs


# ---------------------------------------------------------------------------
# float64 reference, one query row at a time over the keys it may attend.
# ---------------------------------------------------------------------------


def _softmax(x):
  e = np.exp(x - x.max())
  return e / e.sum()


def _head(value, head):
  value = np.asarray(value, np.float64)
  return value if value.ndim == 0 else value[head]


def _ssmax(x, head, head_dim, kwargs, num_keys):
  return _softmax(_head(kwargs.get("s", 0.43), head) * np.log(len(x)) * x)


def _sigmoid(x, head, head_dim, kwargs, num_keys):
  bias = _head(kwargs["bias"], head) if "bias" in kwargs else -np.log(num_keys)
  return 1 / (1 + np.exp(-(x + bias)))


def _lssa(x, head, head_dim, kwargs, num_keys):
  n = len(x)
  if "scale" in kwargs:
    scale = _head(kwargs["scale"], head)
  else:
    scale = np.log(head_dim) * np.log(n)
  w = np.logaddexp(0.0, scale * x)
  w = w / w.sum()
  power = kwargs.get("sharpen_power")
  if power is None:
    return w
  r = np.maximum(w * n - (0.0 if n <= 3 else 1.0), 0.0)
  if r.max() == 0:
    return w
  r = (r / r.max()) ** power
  return r / r.sum()


def _softpick(x, head, head_dim, kwargs, num_keys):
  e = np.expm1(x)
  eps = kwargs.get("eps", 1e-8)
  return np.maximum(e, 0) / (np.abs(e).sum() + eps * np.exp(max(x.max(), 0)))


def _stablemax(x, *_):
  s = np.where(x >= 0, x + 1, 1 / (1 - np.minimum(x, 0)))
  return s / s.sum()


# Independent references, (x, head, head_dim, kwargs, num_keys) -> the
# weights of the attendable scores x (1-D, n = len(x) >= 1) of one row of
# num_keys keys: for the normalizers to which attention adds meaning (keys per
# row, b = -log S, LSSA's scale) and a few more. Any other normalizer is
# checked as its own function on the scores (`function_weights`), which
# tests/test_normalizers.py checks against NumPy.
ROW_REFERENCES = {
    "softmax": lambda x, *_: _softmax(x),
    "ssmax": _ssmax,
    "sigmoid": _sigmoid,
    "softplus": _lssa,
    "softpick": _softpick,
    "stablemax": _stablemax,
}


def function_weights(normalizer, kwargs, x, valid):
  """[B, N, T, S] weights of the normalizer function on scores x (per-head kwargs [N])."""
  per_head = {k: np.reshape(v, (-1, 1, 1)) if np.ndim(v) else v for k, v in kwargs.items()}
  weights = jit(lambda x, valid: normalizers.get(normalizer)(x, where=valid, **per_head))
  return np.asarray(weights(x.astype(np.float32), valid), np.float64)


def attendable(case: Case) -> np.ndarray:
  """[B, N, T, S] boolean: which keys each query row may attend."""
  b, t, n, _ = case.query.shape
  s = case.key.shape[1]
  valid = np.ones((b, n, t, s), bool)
  if case.is_causal:
    valid &= np.tril(np.ones((t, s), bool))
  if case.mask is not None:
    valid &= case.mask
  if case.bias is not None:
    valid &= case.bias > -np.inf
  return valid


def scores(case: Case, normalizer: str) -> np.ndarray:
  """[B, N, T, S] float64 scores scale * q.k + bias (0 where the bias is -inf)."""
  q = case.query.astype(np.float64)
  k = case.key.astype(np.float64)
  b, t, n, h = q.shape
  k = np.repeat(k, n // k.shape[2], axis=2)  # query head j reads kv head j // G
  scale = 1 / np.sqrt(h)
  if normalizer == "softplus":
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    k = k / np.linalg.norm(k, axis=-1, keepdims=True)
    scale = 1.0
  x = scale * np.einsum("btnh,bsnh->bnts", q, k)
  if case.bias is not None:
    x = x + np.where(np.isfinite(case.bias), case.bias, 0)
  return x


def reference_weights(case: Case, normalizer, kwargs):
  """[B, N, T, S] float64 weights (ROW_REFERENCES, else `function_weights`)."""
  x, valid = scores(case, normalizer), attendable(case)
  if normalizer not in ROW_REFERENCES:
    return np.where(valid, function_weights(normalizer, kwargs, x, valid), 0)
  weights = np.zeros(x.shape)
  for idx in np.ndindex(x.shape[:3]):
    keep = valid[idx]
    if keep.any():
      head_dim = case.query.shape[-1]
      weights[idx + (keep,)] = ROW_REFERENCES[normalizer](
          x[idx][keep], idx[1], head_dim, kwargs, x.shape[-1]
      )
  return weights


def reference_attention(case: Case, normalizer, kwargs):
  """[B, T, N, Hv] float64 attention output."""
  weights = reference_weights(case, normalizer, kwargs)
  n = case.query.shape[2]
  v = np.repeat(case.value.astype(np.float64), n // case.value.shape[2], axis=2)
  return np.einsum("bnts,bsnh->btnh", weights, v)


def attention_fn(case: Case, normalizer, fixed, implementation, **options):
  """(q, k, v, bias, learnable kwargs) -> output for `case` (jit it with `jit`)."""

  def attend(query, key, value, bias, learnable):
    return dot_product_attention(
        query,
        key,
        value,
        bias,
        case.mask,
        normalizer=normalizer,
        normalizer_kwargs={**fixed, **learnable},
        is_causal=case.is_causal,
        implementation=implementation,
        block_size=case.block_size,
        **options,
    )

  return attend


def inputs(case: Case, dtype=np.float32):
  """(query, key, value, bias) of `case` as jax arrays of `dtype`."""
  cast = lambda x: None if x is None else jnp.asarray(x, dtype)
  return tuple(cast(x) for x in (case.query, case.key, case.value, case.bias))
