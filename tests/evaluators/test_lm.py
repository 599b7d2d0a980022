"""The language-model evaluator: per-window loss and token accuracy, per split."""

import jax.numpy as jnp
import numpy as np
import pytest

from softlab.evaluators.lm import LanguageModel

from .conftest import batches, fake_experiment, softmax_ce

RNG = np.random.default_rng(2)


def predict(params, extra, batch, *, sown=()):
  logits, targets = batch["logits"], batch["targets"]
  log_p = logits - jnp.log(jnp.sum(jnp.exp(logits), -1, keepdims=True))
  loss = -jnp.take_along_axis(log_p, targets[..., None], -1)[..., 0].mean(-1)
  return {"logits": logits, "targets": targets, "loss": loss, "sown": {}}


def test_loss_and_accuracy_per_split_equal_numpy(mesh):
  splits = {}
  for length in (4, 8):
    arrays = {"logits": RNG.normal(size=(7, length, 6)).astype(np.float32),
              "targets": RNG.integers(0, 6, (7, length))}
    splits[f"val_{length}"] = (arrays, batches(arrays, 3, padding=2))
  got = LanguageModel(fake_experiment(predict), {k: v[1] for k, v in splits.items()}, mesh,
                      every=1, top_k=(3,)).run({}, {})
  for name, (arrays, _) in splits.items():
    assert got[f"{name}/loss"] == pytest.approx(
        softmax_ce(arrays["logits"], arrays["targets"]).mean(), rel=1e-5)
    assert got[f"{name}/accuracy"] == pytest.approx(
        np.mean(arrays["logits"].argmax(-1) == arrays["targets"]))
    rank = (arrays["logits"] > np.take_along_axis(
        arrays["logits"], arrays["targets"][..., None], -1)).sum(-1)
    assert got[f"{name}/top3_accuracy"] == pytest.approx(np.mean(rank < 3))
