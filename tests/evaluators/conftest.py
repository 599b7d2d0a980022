"""A fake trainer whose predictions are its batch's arrays, and splits of uneven batches."""

import jax.numpy as jnp
import numpy as np
import pytest

from softlab.experiment import Experiment
from softlab.sharding import make_mesh


def fake_experiment(predict):
  """An Experiment that only predicts (evaluators need nothing else)."""
  return Experiment(init_params=None, init_extra=None, loss=None, predict=predict)


def batches(arrays, size, *, padding=0):
  """Consecutive batches of `size` with a "weight" of ones; `padding` zero-weight rows appended
  to the last (the loop pads batches to the device count the same way)."""
  num = len(next(iter(arrays.values())))
  out = [{**{k: v[i:i + size] for k, v in arrays.items()},
          "weight": np.ones(len(next(iter(arrays.values()))[i:i + size]), np.float32)}
         for i in range(0, num, size)]
  if padding:
    last = out[-1]
    out[-1] = {k: np.concatenate([v, np.zeros((padding,) + v.shape[1:], v.dtype)])
               for k, v in last.items()}
  return out


@pytest.fixture(scope="session")
def mesh():
  return make_mesh(1)


def softmax_ce(logits, labels):
  """Per-example softmax cross-entropy, float64 NumPy."""
  z = np.asarray(logits, np.float64)
  z = z - z.max(-1, keepdims=True)
  log_p = z - np.log(np.exp(z).sum(-1, keepdims=True))
  return -np.take_along_axis(log_p, np.asarray(labels)[..., None], -1)[..., 0]


def classification_predict(params, extra, batch, *, sown=()):
  logits = batch["inputs"] * params["scale"]
  labels = batch["labels"]
  log_p = logits - jnp.max(logits, -1, keepdims=True)
  log_p = log_p - jnp.log(jnp.sum(jnp.exp(log_p), -1, keepdims=True))
  loss = -jnp.take_along_axis(log_p, labels[:, None], -1)[:, 0]
  return {"logits": logits, "labels": labels, "loss": loss, "sown": {}}
