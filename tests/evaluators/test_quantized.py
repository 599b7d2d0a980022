"""The quantized-weight evaluator: the loss at quantized weights, per bit width."""

import jax.numpy as jnp
import numpy as np
import pytest

from softlab.evaluators.quantized import Quantized

from .conftest import batches, fake_experiment

RNG = np.random.default_rng(3)
W = RNG.normal(size=(4, 3)).astype(np.float32)


def predict(params, extra, batch, *, sown=()):
  return {"loss": jnp.sum(batch["x"] @ params["w"], -1) + params["b"], "sown": {}}


def quantized_numpy(w, bits):
  step = np.abs(w).max() / (2 ** (bits - 1) - 1)
  return np.round(w / step) * step


def test_loss_at_each_bit_width_equals_numpy(mesh):
  x = RNG.normal(size=(9, 4)).astype(np.float32)
  evaluator = Quantized(fake_experiment(predict), {"val": batches({"x": x}, 4, padding=3)},
                        mesh, every=1, bits=(8, 2))
  got = evaluator.run({"w": jnp.asarray(W), "b": jnp.float32(0.5)}, {})
  for bits in (8, 2):
    want = np.mean((x.astype(np.float64) @ quantized_numpy(W.astype(np.float64), bits)).sum(-1)) + 0.5
    assert got[f"val/loss_int{bits}"] == pytest.approx(want, rel=1e-5)  # the bias vector stays
  assert set(got) == {"val/loss_int8", "val/loss_int2"}
