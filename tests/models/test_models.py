"""Models: RoPE, causality, masks, weight quantization, builders."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fast_jit import jit

from softlab import models
from softlab.models import transformer

RNG = np.random.default_rng(0)

# The models are tested through one compiled program per check: eager Flax
# init / apply dispatches hundreds of small ops, each compiled on first use
# (fast_jit.jit).


def test_rope_rotates_pairs_and_depends_only_on_offsets():
  q = jnp.asarray(RNG.normal(size=(1, 6, 2, 8)), jnp.float32)
  k = jnp.asarray(RNG.normal(size=(1, 6, 2, 8)), jnp.float32)
  rope = jit(transformer.rope)
  rq, rk = rope(q, jnp.arange(6)), rope(k, jnp.arange(6))
  np.testing.assert_allclose(jnp.linalg.norm(rq, axis=-1), jnp.linalg.norm(q, axis=-1), rtol=1e-5)
  np.testing.assert_allclose(rope(q, jnp.zeros(6, jnp.int32)), q, rtol=1e-6)
  # <rope(q, i), rope(k, j)> depends on i - j only: shift both positions by 3.
  shifted = jnp.einsum("bthd,bshd->bhts", rope(q, jnp.arange(6) + 3), rope(k, jnp.arange(6) + 3))
  np.testing.assert_allclose(shifted, jnp.einsum("bthd,bshd->bhts", rq, rk), rtol=1e-4, atol=1e-5)
  # Against the textbook formula in float64.
  half, pos = 4, 5
  theta = pos * 10000.0 ** (-np.arange(half) / half)
  x = np.asarray(q[0, pos, 0], np.float64)
  want = np.concatenate([x[:half] * np.cos(theta) - x[half:] * np.sin(theta),
                         x[:half] * np.sin(theta) + x[half:] * np.cos(theta)])
  np.testing.assert_allclose(rq[0, pos, 0], want, rtol=1e-5)


@pytest.mark.parametrize("normalizer", ["softmax", "ssmax", "sigmoid", "softplus", "softpick"])
def test_decoder_is_causal_for_every_normalizer(normalizer):
  model = models.build({"name": "transformer", "d_model": 16, "num_layers": 2, "num_heads": 2,
                        "normalizer": normalizer}, {"vocab_size": 11}, dtype=jnp.float32)
  tokens = jnp.asarray(RNG.integers(0, 11, (2, 9)))
  changed = tokens.at[:, 6:].set((tokens[:, 6:] + 1) % 11)

  @jit
  def outputs(key):
    params = model.init(key, tokens)
    return (model.apply(params, tokens), model.apply(params, changed),
            model.apply(params, tokens, head=False))

  a, b, (hidden, weight) = outputs(jax.random.key(0))
  np.testing.assert_allclose(a[:, :6], b[:, :6], rtol=1e-5, atol=1e-6)
  assert not np.allclose(a[:, 6:], b[:, 6:])
  np.testing.assert_allclose(hidden @ weight, a, rtol=1e-5, atol=1e-5)


def test_set_attention_ignores_masked_items_and_sows_weights():
  model = models.build({"name": "set_attention", "d_model": 16}, {"num_classes": 5},
                       dtype=jnp.float32)
  items = jnp.asarray(RNG.normal(size=(3, 7, 4)), jnp.float32)
  mask = jnp.asarray(RNG.random((3, 7)) > 0.3).at[:, 0].set(True)
  noisy = jnp.where(mask[..., None], items, 100.0)

  @jit
  def outputs(key):
    params = model.init(key, items, mask)
    return (model.apply(params, items, mask, mutable=["intermediates"]),
            model.apply(params, noisy, mask))

  (out, state), noisy_out = outputs(jax.random.key(0))
  np.testing.assert_allclose(noisy_out, out, rtol=1e-5, atol=1e-6)
  weights = jax.tree.leaves(state["intermediates"])[0]
  assert weights.shape == (3, 1, 1, 7)
  np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
  assert np.all(weights[:, 0, 0][~mask] == 0)


def test_set_attention_query_init_std_scales_the_learned_query():
  shapes = {"num_classes": 5}
  items = jnp.zeros((1, 3, 4), jnp.float32)
  built = [models.build({"name": "set_attention", "d_model": 256, **extra}, shapes,
                        dtype=jnp.float32) for extra in ({}, {"query_init_std": 8.0})]
  init = jit(lambda key: [m.init(key, items)["params"]["query"] for m in built])
  default, wide = init(jax.random.key(0))
  np.testing.assert_allclose(np.std(default), 1.0, rtol=0.15)
  np.testing.assert_allclose(np.std(wide), 8.0, rtol=0.15)
  with pytest.raises(ValueError, match="model.query_init_std must be a number > 0"):
    models.build({"name": "set_attention", "query_init_std": 0.0}, shapes, dtype=jnp.float32)


def test_vit_and_two_tower_shapes():
  vit = models.build({"name": "vit_tiny", "d_model": 16}, {"num_classes": 10}, dtype=jnp.float32)
  images = jnp.zeros((2, 8, 8, 1))
  # Traced, not run: the shapes are the point (one trace, no compilation).
  out = jax.eval_shape(lambda key: vit.apply(vit.init(key, images), images), jax.random.key(0))
  assert out.shape == (2, 10)
  towers = models.build({"name": "two_tower", "embed_dim": 8}, {"vocab_size": 20},
                        dtype=jnp.float32)
  tokens = jnp.array([[3, 4, 0, 0], [5, 0, 0, 0]])
  # Padding (id 0) does not change a caption's embedding.
  longer = jnp.array([[3, 4, 0, 0, 0, 0], [5, 0, 0, 0, 0, 0]])

  @jit
  def outputs(key):
    params = towers.init(key, jnp.zeros((2, 64)), tokens)
    return (towers.apply(params, jnp.zeros((2, 64)), tokens),
            towers.apply(params, longer, method="encode_texts"))

  (zimg, ztxt), longer_ztxt = outputs(jax.random.key(0))
  assert zimg.shape == ztxt.shape == (2, 8)
  np.testing.assert_allclose(longer_ztxt, ztxt, rtol=1e-6)


@pytest.mark.parametrize("bits", [8, 4])
def test_quantize_weights_rounds_matrices_only(bits):
  params = {"kernel": jnp.asarray(RNG.normal(size=(16, 8)), jnp.float32),
            "bias": jnp.asarray(RNG.normal(size=8), jnp.float32)}
  quantized = models.quantize_weights(params, bits=bits)
  np.testing.assert_array_equal(quantized["bias"], params["bias"])
  levels = 2 ** (bits - 1) - 1
  step = float(jnp.max(jnp.abs(params["kernel"]))) / levels
  codes = np.asarray(quantized["kernel"]) / step
  np.testing.assert_allclose(codes, np.round(codes), atol=1e-4)
  assert len(np.unique(np.round(codes))) <= 2 * levels + 1
  assert float(jnp.max(jnp.abs(quantized["kernel"] - params["kernel"]))) <= step / 2 + 1e-6
  with pytest.raises(ValueError, match="bits must be an integer >= 2"):
    models.quantize_weights(params, bits=1)


def test_mlp_pytorch_initialization():
  # xavier_normal: untruncated N(0, 2 / (fan_in + fan_out)); fan_in_uniform biases in
  # +-1/sqrt(fan_in) (PyTorch's nn.Linear default), as the LDR paper's released MLP.
  model = models.build({"name": "mlp", "hidden": (300,), "kernel_init": "xavier_normal",
                        "bias_init": "fan_in_uniform"}, {"num_classes": 200}, dtype=jnp.float32)
  params = jit(model.init)(jax.random.key(0), jnp.zeros((1, 100)))["params"]
  for layer, fan_in, fan_out in (("Dense_0", 100, 300), ("Dense_1", 300, 200)):
    kernel, bias = np.asarray(params[layer]["kernel"]), np.asarray(params[layer]["bias"])
    std = np.sqrt(2 / (fan_in + fan_out))
    np.testing.assert_allclose(kernel.std(), std, rtol=0.03)
    assert np.abs(kernel).max() > 3.5 * std  # not truncated at 2 std
    bound = fan_in**-0.5
    assert np.abs(bias).max() <= bound and np.abs(bias).max() > 0.9 * bound
  default = models.build({"name": "mlp", "hidden": (300,)}, {"num_classes": 200}, dtype=jnp.float32)
  plain = jit(default.init)(jax.random.key(0), jnp.zeros((1, 100)))["params"]
  assert not np.asarray(plain["Dense_0"]["bias"]).any()


@pytest.mark.parametrize("options, message", [
    ({"name": "mlp", "activation": "swish"}, "activation 'swish'; valid"),
    ({"name": "transformer", "positions": "alibi"}, "positions 'alibi'; valid: rope, none"),
    ({"name": "mlp", "depth": 3}, "unknown field.*depth"),
    ({"name": "mlp", "kernel_init": "orthogonal"}, "kernel_init 'orthogonal'; valid: lecun_normal, xavier"),
    ({"name": "mlp", "bias_init": "ones"}, "bias_init 'ones'; valid: zeros, fan_in_uniform"),
    ({"name": "resnet"}, "unknown model 'resnet'"),
])
def test_bad_model_options(options, message):
  with pytest.raises(ValueError, match=message):
    models.build(options, {"num_classes": 3, "vocab_size": 5}, dtype=jnp.float32)
