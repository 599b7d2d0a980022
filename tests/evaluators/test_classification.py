"""The classification evaluator against NumPy over uneven, padded batches."""

import jax.numpy as jnp
import numpy as np
import pytest

from softlab import metrics
from softlab.evaluators.classification import Classification

from .conftest import batches, classification_predict, fake_experiment, softmax_ce

RNG = np.random.default_rng(1)
IN = {"inputs": (2 * RNG.normal(size=(23, 5))).astype(np.float32), "labels": RNG.integers(0, 5, 23)}
OOD = {"inputs": RNG.normal(size=(9, 5)).astype(np.float32), "labels": np.zeros(9, np.int64)}
PARAMS = {"scale": jnp.float32(1.5)}


def test_metrics_equal_numpy_over_the_whole_split(mesh):
  splits = {"test": batches(IN, 8, padding=3), "ood": batches(OOD, 4)}
  evaluator = Classification(fake_experiment(classification_predict), splits, mesh, every=1,
                             top_k=(2,), nll=True, ece_bins=10, ood_split="ood")
  got = evaluator.run(PARAMS, {})
  logits = IN["inputs"] * 1.5
  ce = softmax_ce(logits, IN["labels"])
  assert got["test/loss"] == pytest.approx(ce.mean(), rel=1e-5)
  assert got["test/nll"] == pytest.approx(ce.mean(), rel=1e-5)
  assert got["test/accuracy"] == pytest.approx(np.mean(logits.argmax(-1) == IN["labels"]))
  top2 = np.argsort(-logits, -1)[:, :2]
  assert got["test/top2_accuracy"] == pytest.approx(np.mean((top2 == IN["labels"][:, None]).any(-1)))
  assert got["test/ece"] == pytest.approx(
      float(metrics.expected_calibration_error(logits, IN["labels"], num_bins=10)), rel=1e-6)
  ood_logits = OOD["inputs"] * 1.5
  assert got["test/msp_auroc"] == pytest.approx(float(metrics.msp_auroc(logits, ood_logits)))
  assert got["test/msp_aupr"] == pytest.approx(float(metrics.msp_aupr(logits, ood_logits)))
  assert got["test/softmax_collapse"] == 0 and got["test/zero_loss"] == 0
  assert not any(key.startswith("ood/") for key in got)  # the OOD split is only a reference
