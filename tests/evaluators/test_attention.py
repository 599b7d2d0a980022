"""Attention evaluators read sown values by name, whatever else the model sows."""

import jax.numpy as jnp
import numpy as np
import pytest

from softlab.attention import diagnostics
from softlab.evaluators.attention import AttentionDiagnostics, AttentionOnTarget

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


def test_diagnostics_of_one_batch_equal_the_diagnostics_functions(mesh):
  causal = np.tril(np.ones((4, 4), bool))
  arrays = {"w0": row_normalized((5, 2, 4, 4)) * causal, "w1": row_normalized((5, 2, 4, 4)) * causal,
            "h0": RNG.normal(size=(5, 4, 3)).astype(np.float32),
            "h1": RNG.normal(size=(5, 4, 3)).astype(np.float32), "target": np.zeros(5, np.int64)}
  arrays["w0"][:, 0, :, 0] += 10  # a sink head
  got = AttentionDiagnostics(fake_experiment(predict_sowing), {"v": batches(arrays, 5, padding=3)},
                             mesh, every=1).run({}, {})
  weights = jnp.stack([arrays["w0"], arrays["w1"]])
  assert got["v/sink_rate"] == pytest.approx(float(diagnostics.sink_rate(weights.mean(1))))
  assert got["v/sink_rate"] == 0.25  # one of 2 layers x 2 heads
  assert got["v/sparsity"] == pytest.approx(float(diagnostics.sparsity(
      weights, np.broadcast_to(causal, weights.shape))))
  assert got["v/kurtosis"] == pytest.approx(float(diagnostics.hidden_state_kurtosis(
      jnp.stack([arrays["h0"], arrays["h1"]]))), rel=1e-5)
