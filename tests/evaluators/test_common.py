"""Building evaluators from config.evals: names, cadence, splits, one-line errors."""

import ml_collections
import numpy as np
import pytest

from softlab import evaluators
from softlab.data import Dataset
from softlab.trainers import ConfigError

from .conftest import batches, classification_predict, fake_experiment

RNG = np.random.default_rng(0)
SPLIT = {"inputs": RNG.normal(size=(10, 4)).astype(np.float32), "labels": RNG.integers(0, 4, 10)}
DATASET = Dataset(train_batch=None, eval_splits={"a": batches(SPLIT, 4), "b": batches(SPLIT, 5)},
                  info={})


def build(evals, every=7):
  return evaluators.build(ml_collections.ConfigDict(evals), fake_experiment(classification_predict),
                          DATASET, None, default_every=every)


def test_entries_name_evaluators_with_cadence_and_splits():
  built = build({"main": {"name": "classification", "top_k": (2,)},
                 "rare": {"name": "classification", "every": 3, "splits": ("b",)}})
  assert isinstance(built["main"], evaluators.get("classification"))
  assert built["main"].every == 7 and list(built["main"].splits) == ["a", "b"]
  assert built["rare"].every == 3 and list(built["rare"].splits) == ["b"]
  assert set(evaluators.names()) >= {"classification", "lm", "attention_diagnostics",
                                     "attention_on_target", "quantized", "zero_shot", "retrieval"}


@pytest.mark.parametrize("evals, message", [
    ({"x": {"top_k": (1,)}}, "config.evals.x: missing field 'name'; valid: attention_diagnostics"),
    ({"x": {"name": "clasification"}}, "config.evals.x.name: unknown evaluator 'clasification'"),
    ({"x": {"name": "classification", "topk": 2}},
     r"config.evals.x: unknown field\(s\) topk for evaluator 'classification'; valid: every, "
     r"splits, top_k, nll, ece_bins, ood_split"),
    ({"x": {"name": "classification", "every": 0}}, "config.evals.x.every must be an integer >= 1"),
    ({"x": {"name": "lm", "splits": ("c",)}}, r"config.evals.x.splits: unknown split\(s\) c; valid: a, b"),
    ({"x": {"name": "quantized", "bits": (1,)}}, "config.evals.x: bits must be a non-empty tuple"),
    ({"x": {"name": "classification", "ood_split": "c"}}, "config.evals.x: ood_split: no split 'c'"),
])
def test_bad_entries_are_one_line_config_errors(evals, message):
  with pytest.raises(ConfigError, match=message):
    build(evals)
