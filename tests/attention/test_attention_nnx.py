"""softlab.attention.nnx.MultiHeadAttention: the linen layer's outputs and gradients in NNX."""

import attention_cases as C
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from softlab import normalizers, optim
from softlab.attention import MultiHeadAttention
from softlab.attention import nnx as attention_nnx
from softlab.attention.layers import normalizer_fields

RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 7, 16)).astype(np.float32)
KV = RNG.standard_normal((2, 9, 12)).astype(np.float32)
PAD = np.ones((2, 1, 7, 9), bool)
PAD[1, ..., 6:] = False
COTANGENT = RNG.standard_normal((2, 7, 10)).astype(np.float32)


def learned_fields(normalizer: str) -> dict:
  """Every normalizer parameter of the spec learned per head (from the specs, no names)."""
  fields = {}
  for param in normalizers.attention_spec(normalizer).layer_params:
    field = f"{normalizer}_{param.kwarg}"
    if not param.always_learned:
      default = normalizer_fields()[field][1]
      fields[field] = default if isinstance(default, float) else -1.0
      fields[f"{field}_learnable"] = True
  return fields


def flip_rotary(q, k):
  return q[..., ::-1], k[..., ::-1]


LEARNED = [dict(normalizer=name, **learned_fields(name)) for name in normalizers.attention_names()
           if normalizers.attention_spec(name).layer_params]
CONFIGS = LEARNED + [
    dict(normalizer="stablemax", qk_norm=True, layer_scale_init=0.5, num_kv_heads=2,
         rotary=flip_rotary, is_causal=True, sow_weights=True),
    dict(normalizer="softplus", normalizer_kwargs={"sharpen_power": 3.0},
         implementation="chunked", block_size=8),
]


def case_id(config: dict) -> str:
  return "-".join(getattr(value, "__name__", str(value)) for value in config.values())


@pytest.mark.parametrize("config", CONFIGS, ids=case_id)
def test_same_weights_give_linen_outputs_gradients_and_sown_weights(config):
  cross = not config.get("is_causal")
  kv, mask = (KV, PAD) if cross else (X, None)
  linen = MultiHeadAttention(num_heads=4, head_dim=8, out_features=10, **config)
  layer = attention_nnx.MultiHeadAttention(4, 16, out_features=10, in_kv_features=kv.shape[-1],
                                           head_dim=8, rngs=nnx.Rngs(3), **config)
  params = C.jit(linen.init)(jax.random.key(0), X, kv, mask)
  assert jax.tree.map(jnp.shape, params["params"]) == jax.tree.map(
      jnp.shape, nnx.to_pure_dict(nnx.state(layer, nnx.Param)))
  nnx.update(layer, params["params"])
  graphdef, state = nnx.split(layer)

  @C.jit
  def both(params, state, x, kv):
    def linen_loss(params, x, kv):
      out, sown = linen.apply(params, x, kv, mask, mutable="intermediates")
      return jnp.sum(out * COTANGENT), (out, sown)

    def nnx_loss(state, x, kv):
      model = nnx.merge(graphdef, state)
      out, sown = nnx.capture(model, nnx.Intermediate)(x, kv, mask=mask)
      return jnp.sum(out * COTANGENT), (out, sown)

    grad = lambda f, p: jax.grad(f, argnums=(0, 1, 2), has_aux=True)(p, x, kv)
    return grad(linen_loss, params), grad(nnx_loss, state)

  (linen_grads, (want, linen_sown)), (nnx_grads, (got, nnx_sown)) = both(params, state, X, kv)
  np.testing.assert_allclose(got, want, atol=1e-6)
  linen_param_grads = linen_grads[0]["params"]
  nnx_param_grads = nnx.to_pure_dict(nnx_grads[0])
  assert set(linen_param_grads) == set(nnx_param_grads)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(linen_param_grads),
                          jax.tree.leaves(nnx_param_grads)):
    assert np.any(a != 0), path
    np.testing.assert_allclose(b, a, atol=1e-5, rtol=1e-5, err_msg=str(path))
  for a, b in zip(linen_grads[1:], nnx_grads[1:]):
    np.testing.assert_allclose(b, a, atol=1e-5, rtol=1e-5)
  if config.get("sow_weights"):
    (want_weights,) = linen_sown["intermediates"]["attention_weights"]
    (got_weights,) = jax.tree.leaves(nnx_sown["attention_weights"])
    assert got_weights.shape == (2, 4, 7, 7)
    np.testing.assert_allclose(got_weights, want_weights, atol=1e-6)
  else:
    assert not jax.tree.leaves(nnx_sown)


def test_learned_normalizer_parameters_start_from_their_fields():
  layer = attention_nnx.MultiHeadAttention(
      2, 8, rngs=nnx.Rngs(0), normalizer="sigmoid", sigmoid_bias=-2.5, sigmoid_bias_learnable=True)
  np.testing.assert_array_equal(layer.sigmoid_bias[...], [-2.5, -2.5])
  assert layer.normalizer_kwargs()["bias"].shape == (2,)
  fixed = attention_nnx.MultiHeadAttention(2, 8, rngs=nnx.Rngs(0), normalizer="sigmoid",
                                           sigmoid_bias=-2.5)
  assert fixed.normalizer_kwargs() == {"bias": -2.5}
  assert "sigmoid_bias" not in nnx.state(fixed, nnx.Param)
  ssmax = attention_nnx.MultiHeadAttention(2, 8, rngs=nnx.Rngs(0), normalizer="ssmax",
                                           ssmax_s_init=0.25)
  np.testing.assert_array_equal(ssmax.ssmax_s[...], [0.25, 0.25])


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(normalizer="sigmoid", sigmoid_bias="log n"), "sigmoid_bias must be"),
        (dict(normalizer="sigmoid", sigmoid_bias_learnable=True), "needs a float sigmoid_bias"),
        (dict(normalizer="ssmax", normalizer_kwargs={"s": 1.0}), "set by the layer's ssmax_s_init"),
        (dict(qkv_features=10), "divisible by num_heads"),
        (dict(normalizer="nope"), "unknown normalizer 'nope'"),
        (dict(ssmax_s=1.0), "unknown option.*ssmax_s; normalizer fields: .*ssmax_s_init"),
    ],
)
def test_errors_name_the_field(options, message):
  with pytest.raises(ValueError, match=message):
    attention_nnx.MultiHeadAttention(4, 16, rngs=nnx.Rngs(0), **options)


class TinyModel(nnx.Module):
  """A user's NNX model: softlab attention over a sequence, mean-pooled logits."""

  def __init__(self, *, rngs):
    self.attention = attention_nnx.MultiHeadAttention(
        2, 8, normalizer="ssmax", qk_norm=True, layer_scale_init=0.5, rngs=rngs)
    self.head = nnx.Linear(8, 3, rngs=rngs)

  def __call__(self, x):
    return self.head(self.attention(x).mean(axis=1))


def test_nnx_model_trains_with_nnx_optimizer_and_perpgrad():
  x = jnp.asarray(RNG.standard_normal((16, 5, 8)), jnp.float32)
  labels = jnp.asarray(RNG.integers(0, 3, 16))
  model = TinyModel(rngs=nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, optax.chain(optim.perpgrad(), optax.sgd(0.3)), wrt=nnx.Param)

  def loss_fn(model):
    return optax.softmax_cross_entropy_with_integer_labels(model(x), labels).mean()

  @nnx.jit
  def step(model, optimizer):
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss

  before = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  losses = [float(step(model, optimizer))]
  after = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  # ⊥Grad: with SGD each tensor's step is orthogonal to its weights.
  for (path, w), new in zip(jax.tree_util.tree_leaves_with_path(before), jax.tree.leaves(after)):
    delta = np.ravel(new - w)
    assert abs(np.dot(delta, np.ravel(w))) <= 1e-4 * np.linalg.norm(w) * np.linalg.norm(delta), path
  assert np.all(after["attention"]["ssmax_s"] != before["attention"]["ssmax_s"])
  losses += [float(step(model, optimizer)) for _ in range(7)]
  assert losses[-1] < losses[0] - 0.1, losses
  assert int(optimizer.step[...]) == 8
