"""config.model.api = "nnx": the NNX versions compute what the linen models compute."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fast_jit import jit

from softlab import models
from softlab.config import load_config, override
from softlab.trainers.base import sowing

RNG = np.random.default_rng(0)
LM = {"name": "transformer", "d_model": 16, "num_layers": 2, "num_heads": 2, "mlp_ratio": 2,
      "normalizer": "ssmax", "qk_norm": True, "tie_embeddings": False}
LM_INFO = {"vocab_size": 11}
TOKENS = jnp.asarray(RNG.integers(0, 11, (2, 6)))


def build(config, info, api):
  return models.build({**config, "api": api}, info, dtype=jnp.float32)


def linen_lm_to_nnx(params: dict) -> dict:
  """The linen DecoderLM's parameters under the NNX DecoderLM's names."""
  block = lambda p: {"attention_norm": p["LayerNorm_0"], "attention": p["attention"],
                     "mlp_norm": p["LayerNorm_1"], "mlp_in": p["Dense_0"], "mlp_out": p["Dense_1"]}
  blocks = sorted((k for k in params if k.startswith("block")), key=lambda k: int(k[5:]))
  return {"embed": params["Embed_0"], "final_norm": params["LayerNorm_0"], "head": params["head"],
          "blocks": {i: block(params[k]) for i, k in enumerate(blocks)}}


def test_nnx_decoder_lm_with_linen_weights_gives_linen_logits_and_sown_values():
  linen, nnx_model = build(LM, LM_INFO, "linen"), build(LM, LM_INFO, "nnx")

  @jit
  def both(key):
    params = linen.init(key, TOKENS)
    nnx_params = {"params": linen_lm_to_nnx(params["params"])}
    return (params, nnx_model.init(key, TOKENS),
            linen.apply(params, TOKENS, mutable=["intermediates"]),
            nnx_model.apply(nnx_params, TOKENS, mutable=["intermediates"]),
            linen.apply(params, TOKENS, head=False), nnx_model.apply(nnx_params, TOKENS, head=False))

  params, nnx_init, (want, linen_sown), (got, nnx_sown), want_head, got_head = both(
      jax.random.key(0))
  assert jax.tree.map(jnp.shape, nnx_init["params"]) == jax.tree.map(
      jnp.shape, linen_lm_to_nnx(params["params"]))
  np.testing.assert_allclose(got, want, atol=1e-5)
  assert got.shape == (2, 6, 11)
  for a, b in zip(want_head, got_head):
    np.testing.assert_allclose(b, a, atol=1e-5)
  for i in range(2):
    for name in ("attention_mean_square", "hidden"):
      (a,) = linen_sown["intermediates"][f"block{i}"][name]
      (b,) = nnx_sown["intermediates"]["blocks"][i][name]
      np.testing.assert_allclose(b, a, atol=1e-5, rtol=1e-5)


def test_nnx_model_sows_attention_weights_on_request_and_reads_its_spec():
  model = build({**LM, "num_layers": 1}, LM_INFO, "nnx")
  assert model.num_heads == 2 and model.attention_options["normalizer"] == "ssmax"
  sowing_model = sowing(model, ("attention_weights",))

  @jit
  def sown(key):
    params = model.init(key, TOKENS)
    return model.apply(params, TOKENS, mutable=["intermediates"])[1], sowing_model.apply(
        params, TOKENS, mutable=["intermediates"])[1]

  plain, with_weights = sown(jax.random.key(1))
  assert "attention" not in plain["intermediates"]["blocks"][0]
  (weights,) = with_weights["intermediates"]["blocks"][0]["attention"]["attention_weights"]
  assert weights.shape == (2, 2, 6, 6)
  np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
  np.testing.assert_array_equal(np.triu(weights[0, 0], 1), 0)  # causal


def test_nnx_mlp_with_linen_weights_gives_linen_logits_and_its_initializers():
  config = {"name": "mlp", "hidden": (300,), "kernel_init": "xavier_normal",
            "bias_init": "fan_in_uniform", "activation": "tanh"}
  info = {"num_classes": 200, "input_shape": (4, 25)}
  x = jnp.asarray(RNG.normal(size=(3, 4, 25)), jnp.float32)
  linen, nnx_model = build(config, info, "linen"), build(config, info, "nnx")

  @jit
  def both(key):
    params = linen.init(key, x)
    p = params["params"]
    nnx_params = {"params": {"layers": {0: p["Dense_0"], 1: p["Dense_1"]}}}
    return linen.apply(params, x), nnx_model.apply(nnx_params, x), nnx_model.init(key, x)

  want, got, init = both(jax.random.key(0))
  np.testing.assert_allclose(got, want, atol=1e-5)
  for i, (fan_in, fan_out) in enumerate(((100, 300), (300, 200))):
    kernel, bias = (np.asarray(init["params"]["layers"][i][k]) for k in ("kernel", "bias"))
    assert kernel.shape == (fan_in, fan_out)
    np.testing.assert_allclose(kernel.std(), np.sqrt(2 / (fan_in + fan_out)), rtol=0.03)
    assert fan_in**-0.5 >= np.abs(bias).max() > 0.9 * fan_in**-0.5


@pytest.mark.parametrize("options, message", [
    ({"name": "mlp", "api": "jax"}, "api 'jax'; valid: linen, nnx"),
    ({"name": "vit_tiny", "api": "nnx"},
     "api 'nnx': model 'vit_tiny' has no NNX version; models with one: mlp, transformer"),
])
def test_bad_api(options, message):
  with pytest.raises(ValueError, match=message):
    models.build(options, {"num_classes": 3, "input_shape": (8, 8, 1)}, dtype=jnp.float32)


def test_api_survives_switching_the_model_in_a_config():
  config = override(load_config("configs/grokking/softmax.py"), {"model.api": "nnx"})
  switched = override(config, {"model.name": "transformer", "model.d_model": 16})
  assert dict(switched.model) == {"name": "transformer", "api": "nnx", "d_model": 16}
