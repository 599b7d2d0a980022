"""Linear attention: implementations agree, NumPy float64 references, feature maps, layers."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from softlab import attention
from softlab.attention import linear
from softlab.attention import nnx as attention_nnx
from softlab.config import load_config, override
from softlab.trainers import loop
from tests.fast_jit import jit

B, T, N, K, H, HV = 2, 9, 4, 2, 3, 2
RNG = np.random.default_rng(0)
Q, KEY, V = (RNG.normal(size=s) for s in [(B, T, N, H), (B, T, K, H), (B, T, K, HV)])
HEDGEHOG_W = RNG.normal(size=(K, H, 4))
# (name, feature_map_kwargs) of every registered map.
MAPS = [("elu+1", {}), ("relu", {}), ("hedgehog", {"weight": HEDGEHOG_W}), ("taylor", {"order": 2})]


def test_every_registered_feature_map_is_tested():
  assert sorted(name for name, _ in MAPS) == sorted(attention.FEATURE_MAPS.names())


def np_softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def np_features(name, x, kwargs):
  """phi in float64 NumPy, x [..., H] (hedgehog: x [B, L, K, G, H])."""
  if name == "elu+1":
    return np.where(x > 0, x + 1, np.exp(np.minimum(x, 0)))
  if name == "relu":
    return np.maximum(x, 0)
  if name == "hedgehog":
    w = kwargs["weight"]
    z = np.einsum("blkgh,khf->blkgf", x, w) if w.ndim == 3 else x @ w
    return np.concatenate([np_softmax(z), np_softmax(-z)], -1)
  parts = []
  for m in range(kwargs["order"] + 1):  # taylor: flattened Kronecker powers / sqrt(m!)
    power = np.ones(x.shape[:-1])[..., None]
    for _ in range(m):
      power = (power[..., :, None] * x[..., None, :]).reshape(*x.shape[:-1], -1)
    parts.append(power / math.sqrt(math.factorial(m)))
  return np.concatenate(parts, -1)


def np_linear_attention(q, k, v, name, kwargs, causal, scale):
  """sum_s phi(c q).phi(k_s) v_s / sum_s phi(c q).phi(k_s), head n reading kv head n // G."""

  b, t, n, h = q.shape
  kv = k.shape[2]
  phi_q = np_features(name, scale * q.reshape(b, t, kv, n // kv, h), kwargs)
  phi_k = np_features(name, k[:, :, :, None], kwargs)[:, :, :, 0]
  a = np.einsum("btkgf,bskf->bkgts", phi_q, phi_k)
  if causal:
    a = a * np.tril(np.ones((t, k.shape[1])))
  numerator = np.einsum("bkgts,bskv->btkgv", a, v)
  denominator = np.broadcast_to(a.sum(-1).transpose(0, 3, 1, 2)[..., None], numerator.shape)
  out = np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator != 0)
  return out.reshape(b, t, n, -1)  # a row whose kernel values are all 0 (relu) outputs 0


# The implementations differ only after the features: elu+1 runs all three in the default
# suite (taylor's closed-form parallel kernel and its chunked features meet the NumPy
# reference in test_matches_float64_numpy_reference); the other maps are slow.
AGREE = [pytest.param("elu+1", {}, linear.IMPLEMENTATIONS, id="elu+1"),
         pytest.param("taylor", {"order": 2}, ("parallel", "chunked"), id="taylor",
                      marks=pytest.mark.slow),
         pytest.param("taylor", {"order": 3}, linear.IMPLEMENTATIONS, id="taylor3",
                      marks=pytest.mark.slow),
         pytest.param("relu", {}, linear.IMPLEMENTATIONS, id="relu", marks=pytest.mark.slow),
         pytest.param("hedgehog", {"weight": HEDGEHOG_W}, linear.IMPLEMENTATIONS, id="hedgehog",
                      marks=pytest.mark.slow)]


@pytest.mark.parametrize("name,kwargs,implementations", AGREE)
def test_recurrent_parallel_chunked_agree_in_values_and_gradients(x64, name, kwargs,
                                                                   implementations):
  cotangent = RNG.normal(size=(B, T, N, HV))

  @jit
  def outputs_and_gradients(q, k, v):
    results = []
    for implementation in implementations:
      out, pullback = jax.vjp(lambda q, k, v, i=implementation: attention.linear_attention(
          q, k, v, feature_map=name, feature_map_kwargs=kwargs, is_causal=True,
          implementation=i, chunk_size=4), q, k, v)
      results.append((out, pullback(cotangent)))
    return results

  parallel, *others = outputs_and_gradients(Q, KEY, V)
  for other in others:
    np.testing.assert_allclose(other[0], parallel[0], rtol=1e-10, atol=1e-12)
    for got, want in zip(other[1], parallel[1]):
      np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_matches_float64_numpy_reference(x64):
  calls = [(name, kwargs, causal, implementation) for name, kwargs in MAPS
           for causal, implementation in [(False, "parallel"), (False, "chunked"), (True, "parallel")]]

  @jit
  def outputs(q, k, v):
    return [attention.linear_attention(q, k, v, feature_map=name, feature_map_kwargs=kwargs,
                                       is_causal=causal, implementation=implementation)
            for name, kwargs, causal, implementation in calls]

  for (name, kwargs, causal, implementation), got in zip(calls, outputs(Q, KEY, V)):
    scale = linear.feature_map_spec(name).default_scale(H)
    want = np_linear_attention(Q, KEY, V, name, kwargs, causal, scale)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12,
                               err_msg=f"{name} causal={causal} {implementation}")


def test_gqa_equals_repeated_key_value_heads():
  q, k, v = (jnp.asarray(x, jnp.float32) for x in (Q, KEY, V))

  @jit
  def both(q, k, v):
    grouped = attention.linear_attention(q, k, v, is_causal=True)
    repeated = attention.linear_attention(q, jnp.repeat(k, N // K, axis=2),
                                          jnp.repeat(v, N // K, axis=2), is_causal=True)
    return grouped, repeated

  grouped, repeated = both(q, k, v)
  np.testing.assert_allclose(grouped, repeated, rtol=1e-6, atol=1e-6)


def test_nonnegative_maps_are_nonnegative_and_finite_at_extremes():
  x = jnp.asarray([[-1e4, -30.0, -1.0, 0.0, 1e-3, 2.0, 30.0, 1e4]] * 2, jnp.float32).T  # [8, 2]
  w = jnp.asarray([[1.0, -2.0, 0.5], [0.3, 0.0, -1.0]])
  maps = [("elu+1", {}), ("relu", {}), ("hedgehog", {"weight": w})]
  features = jit(lambda x: [attention.FEATURE_MAPS.get(name)(x, **kwargs)
                            for name, kwargs in maps])(x)
  for (name, _), phi in zip(maps, features):
    assert linear.feature_map_spec(name).nonnegative
    assert bool(jnp.all(phi >= 0)) and bool(jnp.all(jnp.isfinite(phi))), name
  assert not linear.feature_map_spec("taylor").nonnegative  # x^{(x)1} = x takes both signs


def test_zero_features_give_zero_output_and_finite_gradients():
  q = -jnp.ones((1, 3, 1, 2))  # relu(q) = 0: every kernel value 0, the denominator eps
  k, v = jnp.ones((1, 3, 1, 2)), jnp.ones((1, 3, 1, 2))

  @jit
  def values_and_grads(q, k, v):
    f = lambda q, k, v: jnp.sum(attention.linear_attention(q, k, v, feature_map="relu",
                                                            is_causal=True))
    return f(q, k, v), jax.grad(f, argnums=(0, 1, 2))(q, k, v)

  value, grads = values_and_grads(q, k, v)
  assert float(value) == 0
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads)


def test_taylor_features_give_the_truncated_series(x64):
  q, k = RNG.normal(size=(5, 3)), RNG.normal(size=(6, 3))
  taylor = attention.FEATURE_MAPS.get("taylor")
  orders = range(1, 5)

  @jit
  def kernels(q, k):
    return [(taylor(q, order=n), taylor(k, order=n), linear.taylor_kernel(q, k, order=n))
            for n in orders]

  s = q @ k.T
  for order, (phi_q, phi_k, closed_form) in zip(orders, kernels(q, k)):
    series = sum(s**m / math.factorial(m) for m in range(order + 1))
    assert phi_q.shape == (5, sum(3**m for m in range(order + 1)))
    np.testing.assert_allclose(phi_q @ phi_k.T, series, rtol=1e-12)
    np.testing.assert_allclose(closed_form, series, rtol=1e-12)


def test_taylor_converges_to_softmax_attention_within_its_tail_bound(x64):
  # |scale * q.k| <= 1: |T_n(s) - e^s| <= e |s|^(n+1) / (n+1)! and e^s >= 1/e, so every
  # kernel value is within a relative r_n = e^2 / (n+1)! of exp, and every output within
  # 2 r_n / (1 - r_n) max|v| of softmax attention's (the weights move by <= that factor).
  q = RNG.normal(size=(1, 16, 2, 4))
  k = RNG.normal(size=(1, 16, 2, 4))
  q = q / np.linalg.norm(q, axis=-1, keepdims=True) * 2.0  # |q.k| / sqrt(4) <= 1
  k = k / np.linalg.norm(k, axis=-1, keepdims=True)
  v = RNG.normal(size=(1, 16, 2, 3))

  @jit
  def errors(q, k, v):
    softmax = attention.dot_product_attention(q, k, v, is_causal=True)
    return [jnp.max(jnp.abs(attention.linear_attention(
        q, k, v, feature_map="taylor", feature_map_kwargs={"order": n}, is_causal=True) - softmax))
            for n in range(1, 7)]

  errs = [float(e) for e in errors(q, k, v)]
  assert all(a > b for a, b in itertools.pairwise(errs)), errs
  for n, err in zip(range(1, 7), errs):
    r = math.e**2 / math.factorial(n + 1)
    if r < 1:
      assert err <= 2 * r / (1 - r) * np.abs(v).max(), (n, err)
  assert errs[-1] < 1e-3


def np_hybrid(q, k, v, window, gamma=None):
  """LoLCATs' hybrid in float64: gamma_n exp(q.k / sqrt(H)) on the window, elu+1 before it."""
  b, t, n, h = q.shape
  kv = k.shape[2]
  qg = q.reshape(b, t, kv, n // kv, h)
  exp = np.exp(np.einsum("btkgh,bskh->bkgts", qg, k) / math.sqrt(h))
  if gamma is not None:
    exp = np.asarray(gamma, np.float64).reshape(kv, n // kv)[:, :, None, None] * exp
  phi = np.einsum("btkgf,bskf->bkgts", np_features("elu+1", qg, {}), np_features("elu+1", k, {}))
  rows, cols = np.arange(t)[:, None], np.arange(t)[None, :]
  a = np.where((cols <= rows) & (cols > rows - window), exp, np.where(cols <= rows, phi, 0))
  out = np.einsum("bkgts,bskv->btkgv", a, v) / a.sum(-1).transpose(0, 3, 1, 2)[..., None]
  return out.reshape(b, t, n, -1)


def test_sliding_window_covering_the_sequence_is_softmax_and_small_windows_match_numpy(x64):
  @jit
  def outputs(q, k, v):
    return ([attention.sliding_window_linear_attention(q, k, v, window=w) for w in (T, 3, 1)],
            attention.dot_product_attention(q, k, v, is_causal=True))

  (full, three, one), softmax = outputs(Q, KEY, V)
  np.testing.assert_allclose(full, softmax, rtol=1e-12, atol=1e-14)
  np.testing.assert_allclose(three, np_hybrid(Q, KEY, V, 3), rtol=1e-10)
  np.testing.assert_allclose(one, np_hybrid(Q, KEY, V, 1), rtol=1e-10)


GAMMA = np.array([0.1, 0.7, 1.0, 0.02])  # one per query head (N = 4, K = 2: GQA)


def test_window_factor_weights_the_softmax_terms_per_query_head(x64):
  """gamma_n on head n's windowed terms matches NumPy; gamma = 1 is the unweighted hybrid;
  a window covering the sequence is softmax for any gamma; the gradient reaches gamma."""
  cotangent = RNG.normal(size=(B, T, N, HV))

  @jit
  def outputs(q, k, v, gamma):
    hybrid = lambda w, g: attention.sliding_window_linear_attention(q, k, v, window=w,
                                                                    window_factor=g)
    grad = jax.grad(lambda g: jnp.sum(hybrid(3, g) * cotangent))(gamma)
    return (hybrid(3, gamma), hybrid(3, jnp.ones(N)), hybrid(3, None), hybrid(T, gamma),
            attention.dot_product_attention(q, k, v, is_causal=True), grad)

  weighted, ones, unweighted, full, softmax, grad = outputs(Q, KEY, V, GAMMA)
  np.testing.assert_allclose(weighted, np_hybrid(Q, KEY, V, 3, GAMMA), rtol=1e-10)
  assert np.abs(weighted - unweighted).max() > 1e-2  # the factor matters
  np.testing.assert_allclose(ones, unweighted, rtol=1e-12, atol=1e-14)
  np.testing.assert_allclose(full, softmax, rtol=1e-12, atol=1e-14)
  step = 1e-6  # central differences of the NumPy reference, head by head
  numeric = [np.sum((np_hybrid(Q, KEY, V, 3, GAMMA + step * e)
                     - np_hybrid(Q, KEY, V, 3, GAMMA - step * e)) * cotangent) / (2 * step)
             for e in np.eye(N)]
  np.testing.assert_allclose(grad, numeric, rtol=1e-6)
  assert np.all(np.abs(grad) > 1e-3)
  with pytest.raises(ValueError, match=r"window_factor must have shape \(4,\) \(one per query "
                     r"head\), got \(2,\)"):
    attention.sliding_window_linear_attention(Q, KEY, V, window=3, window_factor=np.ones(2))


@pytest.mark.parametrize("call,message", [
    (dict(feature_map="nope"), "unknown feature map 'nope'; valid: elu+1, hedgehog, relu, taylor"),
    (dict(feature_map="taylor", feature_map_kwargs={"order": 0}),
     "feature_map_kwargs['order'] must be a positive integer, got 0"),
    (dict(feature_map="taylor", feature_map_kwargs={"order": 2.0}),
     "feature_map_kwargs['order'] must be a positive integer, got 2.0"),
    (dict(feature_map="elu+1", feature_map_kwargs={"order": 2}),
     "feature_map_kwargs key 'order' is not an argument of feature map 'elu+1'; valid: none"),
    (dict(feature_map="hedgehog"), "feature map 'hedgehog' needs feature_map_kwargs['weight']"),
    (dict(implementation="dense"), "unknown implementation 'dense'; valid: parallel, recurrent, chunked"),
])
def test_bad_arguments_are_one_line_errors(call, message):
  with pytest.raises(ValueError) as error:
    attention.linear_attention(Q[:, :2], KEY[:, :2], V[:, :2], **call)
  assert str(error.value) == message


X = RNG.normal(size=(2, 5, 8)).astype(np.float32)
LINEAR_OPTIONS = dict(attention="linear", feature_map="hedgehog", is_causal=True)


def test_linen_layer_picks_linear_attention_and_the_sliding_window_hybrid():
  layer = attention.MultiHeadAttention(num_heads=4, num_kv_heads=2, **LINEAR_OPTIONS)
  hybrid = attention.MultiHeadAttention(num_heads=4, attention="sliding_window", window=5,
                                        is_causal=True)
  softmax = attention.MultiHeadAttention(num_heads=4, is_causal=True)

  @jit
  def run(x):
    params = layer.init(jax.random.key(0), x)
    p = params["params"]
    q, k, v = (jnp.einsum("btf,fnd->btnd", x, p[name]["kernel"]) for name in ("query", "key", "value"))
    want = jnp.einsum("btnd,ndf->btf", attention.linear_attention(
        q, k, v, feature_map="hedgehog", feature_map_kwargs={"weight": p["hedgehog_weight"]},
        is_causal=True), p["out"]["kernel"])
    hybrid_params = hybrid.init(jax.random.key(1), x)
    h = hybrid_params["params"]
    q, k, v = (jnp.einsum("btf,fnd->btnd", x, h[name]["kernel"]) for name in ("query", "key", "value"))
    moved = {"params": {**h, "window_factor": jnp.array([-3.0, -1.0, 0.5, 2.0])}}
    want_window = jnp.einsum("btnd,ndf->btf", attention.sliding_window_linear_attention(
        q, k, v, window=2, window_factor=jax.nn.sigmoid(moved["params"]["window_factor"])),
        h["out"]["kernel"])
    return (p["hedgehog_weight"], layer.apply(params, x), want, hybrid.apply(hybrid_params, x),
            softmax.apply(hybrid_params, x), h["window_factor"],
            hybrid.clone(window=2).apply(moved, x), want_window)

  weight, out, want, hybrid_out, softmax_out, factor, window_out, want_window = run(X)
  np.testing.assert_array_equal(weight, np.broadcast_to(np.eye(2), (2, 2, 2)))  # identity init
  np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(hybrid_out, softmax_out, rtol=1e-5, atol=1e-6)  # window >= T
  np.testing.assert_allclose(factor, np.full(4, math.log(0.1 / 0.9)), rtol=1e-6)  # LoLCATs' init
  np.testing.assert_allclose(window_out, want_window, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_nnx_layer_equals_the_linen_layer_with_its_weights():
  layer = attention.MultiHeadAttention(num_heads=4, num_kv_heads=2, **LINEAR_OPTIONS)
  params = layer.init(jax.random.key(0), X)
  nnx_layer = attention_nnx.MultiHeadAttention(4, 8, num_kv_heads=2, rngs=nnx.Rngs(0),
                                               **LINEAR_OPTIONS)
  nnx.update(nnx_layer, params["params"])
  np.testing.assert_allclose(nnx_layer(X), layer.apply(params, X), rtol=1e-5, atol=1e-6)
  hybrid_options = dict(attention="sliding_window", window=2, is_causal=True)
  hybrid = attention.MultiHeadAttention(num_heads=4, num_kv_heads=2, **hybrid_options)
  params = hybrid.init(jax.random.key(1), X)
  params["params"]["window_factor"] = jnp.array([-3.0, -1.0, 0.5, 2.0])
  nnx_hybrid = attention_nnx.MultiHeadAttention(4, 8, num_kv_heads=2, rngs=nnx.Rngs(0),
                                                **hybrid_options)
  np.testing.assert_array_equal(nnx_hybrid.window_factor[...],
                                np.full(4, np.float32(math.log(0.1 / 0.9))))
  nnx.update(nnx_hybrid, params["params"])
  np.testing.assert_allclose(nnx_hybrid(X), hybrid.apply(params, X), rtol=1e-5, atol=1e-6)


def test_layer_option_errors():
  x = jnp.ones((1, 3, 8))
  for layer, message in [
      (attention.MultiHeadAttention(num_heads=2, attention="kernel"),
       "unknown attention 'kernel'; valid: dot_product, linear, sliding_window"),
      (attention.MultiHeadAttention(num_heads=2, attention="linear", sow_weights=True),
       "sow_weights needs attention='dot_product' (attention='linear' has no weights to sow)"),
      (attention.MultiHeadAttention(num_heads=2, attention="sliding_window"),
       "attention='sliding_window' is causal only; set is_causal=True"),
      (attention.MultiHeadAttention(num_heads=2, attention="linear", feature_map="hedgehog",
                                    feature_map_kwargs={"weight": jnp.ones((4, 4))}),
       "feature_map_kwargs['weight'] is learned by the layer (hedgehog_weight)"),
  ]:
    with pytest.raises(ValueError) as error:
      jax.eval_shape(layer.init, jax.random.key(0), x)
    assert str(error.value) == message


def test_lm_trains_two_steps_with_linear_attention_from_a_config_override(tmp_path):
  config = override(load_config("configs/lm/softmax.py"), {
      "train.steps": 2, "train.log_every": 1, "train.eval_every": 2, "train.checkpoint_every": 2,
      "train.batch_size": 4, "train.eval_batch_size": 4, "data.seq_len": 16,
      "data.eval_lengths": (16,), "data.eval_windows": 4, "model.d_model": 16,
      "model.num_layers": 1, "model.attention": "linear", "model.feature_map": "taylor",
      "model.feature_map_kwargs": {"order": 2}})
  summary = loop.train(config, str(tmp_path))
  assert summary["step"] == 2
  assert math.isfinite(summary["train/loss"]) and math.isfinite(summary["val_16/loss"])
