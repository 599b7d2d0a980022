"""Flax: make_attention_fn inside Flax's attention modules, and MultiHeadAttention."""

import functools

import attention_cases as C
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from softlab.attention import MultiHeadAttention
from softlab.attention import attention_weights
from softlab.attention import dot_product_attention
from softlab.attention import make_attention_fn

RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 7, 16)).astype(np.float32)
KV = RNG.standard_normal((2, 9, 16)).astype(np.float32)
# Padding mask [B, 1, T, S] that leaves every query at least one key.
PAD = np.ones((2, 1, 7, 9), bool)
PAD[1, ..., 6:] = False


@pytest.mark.parametrize("implementation", ["dense", "chunked"])
def test_attention_fn_in_linen_matches_flax_default(implementation):
  fn = make_attention_fn("softmax", implementation=implementation, block_size=4)
  make = functools.partial(nn.MultiHeadDotProductAttention, num_heads=4)

  @C.jit
  def outputs(key):
    params = make().init(key, X, KV, mask=PAD)
    return (make().apply(params, X, KV, mask=PAD),
            make(attention_fn=fn).apply(params, X, KV, mask=PAD))

  want, got = outputs(jax.random.key(0))
  np.testing.assert_allclose(got, want, atol=2e-5)


def test_attention_fn_in_nnx_matches_flax_default_and_sows():
  kwargs = dict(num_heads=4, in_features=16, decode=False, rngs=nnx.Rngs(0))
  default = nnx.MultiHeadAttention(**kwargs)
  ours = nnx.MultiHeadAttention(**kwargs, attention_fn=make_attention_fn("softmax"))
  nnx.update(ours, nnx.state(default))
  default_graph, default_state = nnx.split(default)
  ours_graph, ours_state = nnx.split(ours)

  @C.jit
  def outputs(default_state, ours_state):
    want = nnx.merge(default_graph, default_state)(X, is_causal=True)
    got, intermediates = nnx.capture(nnx.merge(ours_graph, ours_state), nnx.Intermediate)(
        X, is_causal=True, sow_weights=True
    )
    return want, got, intermediates

  want, got, intermediates = outputs(default_state, ours_state)
  np.testing.assert_allclose(got, want, atol=2e-5)
  (weights,) = jax.tree.leaves(intermediates["attention_weights"])
  assert weights.shape == (2, 4, 7, 7)
  np.testing.assert_allclose(jnp.triu(weights, 1), 0)
  np.testing.assert_allclose(weights.sum(-1), 1, atol=1e-5)


def test_attention_fn_sows_weights_in_linen_and_handles_batch_dims():
  fn = make_attention_fn("sigmoid", is_causal=True)
  layer = nn.MultiHeadDotProductAttention(num_heads=2, attention_fn=fn)
  x = np.stack([X, -X])  # batch dims [2, 2]

  @C.jit
  def outputs(key):
    params = layer.init(key, x)
    return (layer.apply(params, x, sow_weights=True, mutable="intermediates"),
            layer.apply(params, x.reshape(4, 7, 16)))

  (out, state), flat = outputs(jax.random.key(0))
  assert out.shape == x.shape
  (weights,) = state["intermediates"]["attention_weights"]
  assert weights.shape == (2, 2, 2, 7, 7)
  flat = flat.reshape(x.shape)
  np.testing.assert_allclose(out, flat, atol=1e-6)


def _apply(layer, x, inputs_kv=None, mask=None):
  @C.jit
  def init_and_apply(key):
    params = layer.init(key, x, inputs_kv, mask)
    return params, layer.apply(params, x, inputs_kv, mask)

  return init_and_apply(jax.random.key(0))


@pytest.mark.parametrize(
    "config",
    [
        dict(normalizer="softmax", is_causal=True, qk_norm=True),
        dict(normalizer="ssmax", ssmax_s_init=0.5, implementation="chunked"),
        dict(normalizer="sigmoid", sigmoid_bias=-2.0, sigmoid_bias_learnable=True),
        dict(normalizer="sigmoid", layer_scale_init=1e-4),
        dict(normalizer="softplus", normalizer_kwargs={"sharpen_power": 3.0}),
    ],
)
def test_layer_matches_functional_api(config):
  layer = MultiHeadAttention(num_heads=4, num_kv_heads=2, head_dim=8, **config)
  params, got = _apply(layer, X, KV, PAD)
  p = params["params"]
  if config.get("qk_norm"):
    assert p["query_norm"]["scale"].shape == (4, 8)
  if "ssmax_s" in p:
    np.testing.assert_allclose(p["ssmax_s"], 0.5)
  if "sigmoid_bias" in p:
    np.testing.assert_allclose(p["sigmoid_bias"], -2.0)
  want = C.jit(functools.partial(_functional_output, config))(p)
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def _functional_output(config, p):
  """The layer's output for params p through dot_product_attention."""
  q = jnp.einsum("btf,fnh->btnh", X, p["query"]["kernel"])
  k = jnp.einsum("bsf,fnh->bsnh", KV, p["key"]["kernel"])
  v = jnp.einsum("bsf,fnh->bsnh", KV, p["value"]["kernel"])
  if config.get("qk_norm"):
    norm = lambda x, scale: (x - x.mean(-1, keepdims=True)) * jax.lax.rsqrt(
        x.var(-1, keepdims=True) + 1e-6
    ) * scale
    q = norm(q, p["query_norm"]["scale"])
    k = norm(k, p["key_norm"]["scale"])
  kwargs = dict(config.get("normalizer_kwargs") or {})
  if "ssmax_s" in p:
    kwargs["s"] = p["ssmax_s"]
  if "sigmoid_bias" in p:
    kwargs["bias"] = p["sigmoid_bias"]
  out = dot_product_attention(
      q,
      k,
      v,
      mask=PAD,
      normalizer=config["normalizer"],
      normalizer_kwargs=kwargs,
      is_causal=config.get("is_causal", False),
  )
  want = jnp.einsum("btnh,nhf->btf", out, p["out"]["kernel"])
  if "layer_scale" in p:
    want = want * p["layer_scale"]
  return want


@pytest.mark.parametrize(
    "config",
    [
        dict(normalizer="ssmax", is_causal=True),
        dict(normalizer="sigmoid", sigmoid_bias=-1.0, sigmoid_bias_learnable=True),
        dict(normalizer="softpick", qk_norm=True, layer_scale_init=0.5),
    ],
)
def test_layer_sgd_step_lowers_loss(config):
  layer = MultiHeadAttention(num_heads=2, head_dim=8, implementation="chunked",
                             block_size=4, **config)
  target = np.roll(X, 1, axis=-1)
  params = C.jit(layer.init)(jax.random.key(1), X)
  optimizer = optax.sgd(0.1)

  @C.jit
  def step(params, opt_state):
    loss = lambda p: jnp.mean((layer.apply(p, X) - target) ** 2)
    value, grads = jax.value_and_grad(loss)(params)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, value, grads

  new_params, opt_state, before, grads = step(params, optimizer.init(params))
  after = step(new_params, opt_state)[2]
  assert after < before
  for leaf, old, new in zip(*map(jax.tree.leaves, (grads, params, new_params))):
    assert np.all(np.isfinite(leaf)) and np.any(leaf != 0)
    assert np.any(old != new)


def test_layer_sows_weights_and_applies_rotary():
  calls = []

  def rotary(q, k):
    calls.append((q.shape, k.shape))
    return q[..., ::-1], k[..., ::-1]

  layer = MultiHeadAttention(num_heads=2, head_dim=8, normalizer="stablemax",
                             rotary=rotary, sow_weights=True, is_causal=True)

  @C.jit
  def outputs(key):
    params = layer.init(key, X)
    out, state = layer.apply(params, X, mutable="intermediates")
    p = params["params"]
    q = jnp.einsum("btf,fnh->btnh", X, p["query"]["kernel"])[..., ::-1]
    k = jnp.einsum("btf,fnh->btnh", X, p["key"]["kernel"])[..., ::-1]
    return out, state, attention_weights(q, k, normalizer="stablemax", is_causal=True)

  out, state, want = outputs(jax.random.key(0))
  assert calls[-1] == ((2, 7, 2, 8), (2, 7, 2, 8))
  (weights,) = state["intermediates"]["attention_weights"]
  np.testing.assert_allclose(weights, want, atol=1e-6)
  assert out.shape == X.shape


@pytest.mark.parametrize(
    "config, message",
    [
        (dict(normalizer="sigmoid", sigmoid_bias="log n"), "sigmoid_bias must be"),
        (
            dict(normalizer="sigmoid", sigmoid_bias_learnable=True),
            "needs a float sigmoid_bias",
        ),
        (
            dict(normalizer="ssmax", normalizer_kwargs={"s": 1.0}),
            "set by the layer's ssmax_s_init",
        ),
        (dict(qkv_features=10), "divisible by num_heads"),
        (dict(normalizer="nope"), "unknown normalizer 'nope'"),
    ],
)
def test_layer_errors(config, message):
  with pytest.raises(ValueError, match=message):
    MultiHeadAttention(num_heads=4, **config).init(jax.random.key(0), X)


def test_attention_fn_errors():
  with pytest.raises(ValueError, match="unknown option 'window'"):
    make_attention_fn("softmax", window=3)
  with pytest.raises(ValueError, match="returns log-weights"):
    make_attention_fn("log_softmax")
  fn = make_attention_fn("softmax")
  q = jnp.zeros((1, 3, 2, 4))
  with pytest.raises(ValueError, match="no attention dropout"):
    fn(q, q, q, dropout_rate=0.1, deterministic=False)
  np.testing.assert_array_equal(fn(q, q, q, dropout_rate=0.1, deterministic=True), 0)


def test_attention_fn_accepts_masks_of_any_rank_and_no_batch_dims():
  fn = make_attention_fn("softpick")
  q = jnp.asarray(RNG.standard_normal((3, 5, 2, 4)), jnp.float32)
  tril = np.tril(np.ones((5, 5), bool))

  @C.jit
  def outputs(q):
    return (dot_product_attention(q, q, q, mask=tril, normalizer="softpick"),
            fn(q, q, q, mask=tril), fn(q[0], q[0], q[0], mask=tril))

  want, got, unbatched = outputs(q)
  np.testing.assert_allclose(got, want, atol=1e-6)
  np.testing.assert_allclose(unbatched, want[0], atol=1e-6)
