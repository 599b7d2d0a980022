"""A masked row gives value 0 and gradient 0: every registered loss that takes `where`.

The project's convention (shared/DESIGN.md): a fully masked row (logit losses:
every class masked; margin losses: a padding example, where = False; the
vocabulary head: a masked token) contributes exactly 0 to the loss and gets
exactly 0 gradient, whatever the other rows hold, so a padded batch trains as
the unpadded one. The inputs are the per-kind ones tests/losses/test_nan_propagation.py
builds from the registry, so a newly registered loss is tested at once.
"""

import inspect

import jax
import numpy as np
import pytest
from test_classification import X, X_MASK, X_TARGETS, call
from test_nan_propagation import (LOGIT_LOSSES, MARGIN_FLOATS, MARGIN_LOSSES, MARGIN_VALUES,
                                  RNG, VOCAB_LOSSES, logit_loss, margin_arguments, margin_loss)
from test_vocab import problem

from softlab import losses
from softlab.losses import margin

ROWS = [0, 1, 3, 5]  # rows of X: all classes kept, some masked, random, extreme
MASKED_ROW = 2  # of the examples built from ROWS


def check_masked(fn, inputs, masked):
  """fn(*inputs)[masked] is 0 and the gradient of a random cotangent is 0 in row `masked`."""
  values, vjp = jax.vjp(fn, *inputs)
  assert np.asarray(values)[masked] == 0, values
  cotangent = RNG.standard_normal(np.shape(values)).astype(np.asarray(values).dtype)
  for grad in vjp(cotangent):
    grad = np.asarray(grad)
    assert np.all(grad[masked] == 0), grad[masked]
    assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("name", LOGIT_LOSSES)
def test_logit_loss_of_a_fully_masked_row_is_zero(name):
  case = logit_loss(name)
  where = X_MASK[ROWS].copy()
  where[MASKED_ROW] = False
  targets = {kind: None if t is None else t[ROWS] for kind, t in X_TARGETS.items()}
  loss = lambda x: call(case, x, where=where, target=targets[case.target])
  check_masked(loss, [X[ROWS].astype(np.float32)], MASKED_ROW)


MASKED_MARGIN_LOSSES = [n for n in MARGIN_LOSSES if "where" in margin.margin_inputs(n)]
PADDING = 3


@pytest.mark.parametrize("name", MASKED_MARGIN_LOSSES)
def test_margin_loss_of_a_padding_example_is_zero(name):
  loss, inputs = margin_loss(name), margin.margin_inputs(name)
  floats = [k for k in MARGIN_FLOATS if k in inputs]
  values = {**MARGIN_VALUES, "where": np.arange(len(MARGIN_VALUES["where"])) != PADDING}
  fn = lambda *arrays: loss(**margin_arguments(name, {**values, **dict(zip(floats, arrays))}))
  check_masked(fn, [values[k] for k in floats], PADDING)


@pytest.mark.parametrize("name", VOCAB_LOSSES)
def test_vocab_loss_of_a_masked_token_is_zero(name):
  hidden, weight, labels = problem(tokens=8)
  where = np.arange(8) != 2
  values, vjp = jax.vjp(lambda h: losses.get(name)(h, weight, labels, where=where), hidden)
  assert np.asarray(values)[2] == 0
  assert np.all(np.asarray(vjp(np.ones_like(values))[0])[2] == 0)


def test_every_loss_that_takes_where_is_covered():
  takes_where = {n for n in losses.names()
                 if "where" in inspect.signature(losses.get(n)).parameters}
  assert takes_where <= set(LOGIT_LOSSES) | set(MASKED_MARGIN_LOSSES) | set(VOCAB_LOSSES)
