"""Attention evaluators read sown values by name, whatever else the model sows."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from softlab.attention import diagnostics
from softlab.evaluators.attention import AttentionDiagnostics, AttentionOnTarget
from softlab.models import transformer
from softlab.trainers.base import sowing, sown_values

from .conftest import batches, fake_experiment

RNG = np.random.default_rng(4)


def row_normalized(shape):
  w = RNG.random(shape).astype(np.float32)
  return w / w.sum(-1, keepdims=True)


def predict_sowing(params, extra, batch, *, sown=()):
  """Two layers of weights and hidden states, plus decoys that sort after them."""
  values = {"attention_weights": [batch["w0"], batch["w1"]], "hidden": [batch["h0"], batch["h1"]],
            "zzz_decoy": [jnp.zeros_like(batch["w1"])]}
  return {"sown": {name: values[name] for name in sown}}


def test_attention_on_target_reads_the_last_attention_layer_by_name(mesh):
  arrays = {"w0": row_normalized((6, 2, 3, 5)), "w1": row_normalized((6, 2, 3, 5)),
            "h0": RNG.normal(size=(6, 3, 4)).astype(np.float32),
            "h1": RNG.normal(size=(6, 3, 4)).astype(np.float32), "target": RNG.integers(0, 5, 6)}
  got = AttentionOnTarget(fake_experiment(predict_sowing), {"t": batches(arrays, 4, padding=2)},
                          mesh, every=1).run({}, {})
  first_query = arrays["w1"][:, :, 0, :].mean(1)
  want = first_query[np.arange(6), arrays["target"]].mean()
  assert got["t/attention_on_target"] == pytest.approx(want, rel=1e-6)
  assert got["t/attention_max"] == pytest.approx(first_query.max(1).mean(), rel=1e-6)


def numpy_diagnostics(weights, hidden):
  """Float64 references per example: weights [layers, B, N, T, T], hidden [layers, B, T, D]."""
  weights, hidden = np.asarray(weights, np.float64), np.asarray(hidden, np.float64)
  alpha = weights[..., 0].mean(-1)  # [layers, B, N]: mean over queries of the first key's weight
  magnitude = np.abs(hidden)
  per_layer_max = magnitude.max(axis=(2, 3))  # [layers, B]
  median = np.median(np.moveaxis(magnitude, 1, 0).reshape(hidden.shape[1], -1), axis=1)
  return {"sink_rate": (alpha > 0.3).mean(axis=(0, 2)), "per_layer_max": per_layer_max,
          "max_activation": per_layer_max.max(0), "max_to_median": per_layer_max.max(0) / median}


def test_diagnostics_of_one_batch_equal_the_diagnostics_functions(mesh):
  causal = np.tril(np.ones((4, 4), bool))
  arrays = {"w0": row_normalized((5, 2, 4, 4)) * causal, "w1": row_normalized((5, 2, 4, 4)) * causal,
            "h0": RNG.normal(size=(5, 4, 3)).astype(np.float32),
            "h1": RNG.normal(size=(5, 4, 3)).astype(np.float32), "target": np.zeros(5, np.int64)}
  arrays["w0"][:, 0, :, 0] += 10  # a sink head
  arrays["h1"][2, 0, 1] = -40.0  # a massive activation in one window's first position
  got = AttentionDiagnostics(fake_experiment(predict_sowing), {"v": batches(arrays, 5, padding=3)},
                             mesh, every=1).run({}, {})
  weights = jnp.stack([arrays["w0"], arrays["w1"]])
  want = numpy_diagnostics(weights, np.stack([arrays["h0"], arrays["h1"]]))
  assert got["v/sink_rate"] == pytest.approx(want["sink_rate"].mean())
  assert got["v/sink_rate"] >= 0.25  # the sink head in every window, random heads in some
  assert got["v/sparsity"] == pytest.approx(float(diagnostics.sparsity(
      weights, np.broadcast_to(causal, weights.shape))))
  assert got["v/kurtosis"] == pytest.approx(float(diagnostics.hidden_state_kurtosis(
      jnp.stack([arrays["h0"], arrays["h1"]]))), rel=1e-5)
  for i in range(2):
    assert got[f"v/max_activation_l{i}"] == pytest.approx(want["per_layer_max"][i].mean(), rel=1e-6)
  assert got["v/max_activation"] == pytest.approx(want["max_activation"].mean(), rel=1e-6)
  assert got["v/max_activation_l1"] > 40 / 5  # the massive one counts in its window's max
  assert got["v/max_to_median"] == pytest.approx(want["max_to_median"].mean(), rel=1e-5)


def test_sink_rate_is_thresholded_per_example_then_averaged(mesh):
  """Gu et al. threshold each sequence: a sink in 1 of 4 windows counts for that window only,
  where thresholding the batch-mean weights would call the head a sink in all of them."""
  itself = np.broadcast_to(np.eye(4, dtype=np.float32), (4, 1, 4, 4))  # alpha 1/4 (query 0)
  first = itself.copy()
  first[0, 0] = np.eye(4)[[0, 0, 0, 0]]  # window 0: every query on the first key, alpha 1
  arrays = {"w0": first, "w1": itself, "h0": np.ones((4, 4, 2), np.float32),
            "h1": np.ones((4, 4, 2), np.float32)}
  got = AttentionDiagnostics(fake_experiment(predict_sowing), {"v": batches(arrays, 4)},
                             mesh, every=1).run({}, {})
  assert got["v/sink_rate"] == pytest.approx(0.5 / 4)  # 1 of 2 units, in 1 of 4 windows
  batch_mean = np.stack([first, itself]).mean(1)  # alpha of layer 0: (1 + 3 / 4) / 4 > 0.3
  assert float(diagnostics.sink_rate(batch_mean)) == 0.5


def test_diagnostics_of_a_tiny_transformer_match_numpy(mesh):
  model = transformer.transformer({"d_model": 8, "num_layers": 2, "num_heads": 2, "mlp_ratio": 2},
                                  {"vocab_size": 11}, dtype=jnp.float32)
  tokens = np.random.default_rng(0).integers(0, 11, (3, 6))
  params = model.init(jax.random.key(0), tokens)
  params = jax.tree.map(lambda p: p * 3, params)  # larger weights: a spread of magnitudes

  def predict(params, extra, batch, *, sown=()):
    _, state = sowing(model, sown).apply(params, batch["tokens"], mutable=["intermediates"])
    return {"sown": sown_values(state, sown)}

  got = AttentionDiagnostics(fake_experiment(predict), {"v": batches({"tokens": tokens}, 3)},
                             mesh, every=1).run(params, {})
  _, state = sowing(model, ("attention_weights", "hidden")).apply(params, tokens,
                                                                  mutable=["intermediates"])
  sown = sown_values(state, ("attention_weights", "hidden"))
  want = numpy_diagnostics(np.stack(sown["attention_weights"]), np.stack(sown["hidden"]))
  assert got["v/sink_rate"] == pytest.approx(want["sink_rate"].mean())
  for i in range(2):
    assert got[f"v/max_activation_l{i}"] == pytest.approx(want["per_layer_max"][i].mean(), rel=1e-5)
  assert got["v/max_activation"] == pytest.approx(want["max_activation"].mean(), rel=1e-5)
  assert got["v/max_to_median"] == pytest.approx(want["max_to_median"].mean(), rel=1e-5)
  assert got["v/max_to_median"] > 1
