"""NaN in, NaN out: every registered normalizer and loss, generated from the registries.

The training loop stops on a non-finite loss only, so a normalizer or a loss
that turns a NaN or an infinite input into a finite number hides the fault.
For every name in `softlab.normalizers.names()` and `softlab.losses.names()`
(a newly registered one is tested at once, with its kind's inputs):
- a NaN among the kept entries of a row makes every kept weight of that row
  NaN (normalizers) and the example's loss NaN (losses); a kept +inf does the
  same to the weights and makes the loss at least non-finite;
- -inf is masked where the inputs have masks (normalizers, and the logits of
  classification, multilabel and regularizer losses), so the result is the one
  with that entry masked by `where`; in inputs without masks (cosines,
  embeddings, hidden states) it is a non-finite input like the others;
- every other row or example keeps its value bit for bit, except in losses
  whose examples read each other's inputs (READS_OTHER_EXAMPLES, with why):
  there the others keep their value or are non-finite, never a new number;
- a NaN or +inf in a masked entry changes nothing: values and gradients
  equal those with a finite entry there, and masked entries get weight 0
  (log-normalizers: -inf) and gradient exactly 0; a NaN in a padding example
  (margin losses' where = False) leaves every value and gradient as it is
  (the padding example's are 0: tests/losses/test_masked_rows.py).
The functions run eagerly (no jit): every case shares the same few shapes.
This directory holds the loss tests' input helpers; the normalizer variants
come from tests/test_normalizers.py.
"""

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import test_ldr  # noqa: F401  (adds the LDR losses' cases to all_cases())
from test_classification import X, X_LABELS, X_MASK, X_TARGETS, Case, all_cases, call
from test_contrastive import pairs
from test_metric_losses import COS, EMB, KEY, PAIR_LABELS
from test_normalizers import VARIANTS
from test_vocab import problem

from softlab import losses, normalizers
from softlab.losses import margin

NAN, INF = np.nan, np.inf
RNG = np.random.default_rng(7)
# Keyword arguments without a default that a caller must supply (gumbel_softmax's
# PRNG key), and what a trainer supplies to a classification loss (losses.CLASSIFICATION_INPUTS).
SUPPLIED = {"key": jax.random.key(0), "step": 3}
# Losses whose value for one example reads other examples' inputs.
READS_OTHER_EXAMPLES = {
    "adaface": "the norm statistics it uses are the batch's (its stateful form)",
    "madacos": "its scale and margin come from the batch's median target cosine",
    "nbc_softmax": "its contrastive term is one value per batch, from all embeddings",
    "unpg": "the batch's negative pairs enter every example's denominator",
    "pairwise_circle_loss": "an example's pairs are the other examples",
    "sovr": "the examples with the batch's smallest margins switch to one-vs-rest",
    "siglip_loss": "an image's loss reads every text of the batch",
    "clip_loss": "each softmax runs over the whole batch, in both directions",
}


def put(values, changes):
  """A float32 copy of values with values[index] = value for each (index, value) of changes."""
  values = np.array(values, np.float32)
  for index, value in changes:
    values[index] = value
  return values


def changed(values, where, changes):
  """(put(values, ...), a copy of where) with the entries of changes, [(index, value, kept)]."""
  where = np.array(where, bool)
  for index, _, kept in changes:
    where[index] = kept
  return put(values, [(index, value) for index, value, _ in changes]), where


def check_examples(got, want, changed_examples, *, coupled=False):
  """Changed examples NaN (a NaN went in) or non-finite (+-inf); the others unchanged.

  changed_examples maps an example's index to the value put into it. With
  `coupled`, the others may be non-finite instead of unchanged.
  """
  got, want = np.asarray(got), np.asarray(want)
  for index, value in changed_examples.items():
    assert np.isnan(got[index]) if np.isnan(value) else not np.isfinite(got[index]), (
        index, value, got[index])
  others = np.ones(got.shape, bool)
  others[list(changed_examples)] = False
  assert np.all(np.isfinite(want[others]))
  same = got[others] == want[others]
  assert np.all(same | ~np.isfinite(got[others]) if coupled else same), (got, want)


def check_masked_inputs(fn, inputs, clean, masked):
  """fn(*inputs) and its gradients equal those of fn(*clean); exact zeros at masked entries.

  inputs hold NaN or +inf where `masked` (one boolean array per input, along
  its leading axes) is True, clean finite values there.
  """
  want, vjp = jax.vjp(fn, *clean)
  got, vjp_got = jax.vjp(fn, *inputs)
  np.testing.assert_array_equal(got, want)
  cotangent = RNG.standard_normal(np.shape(want)).astype(np.float32)
  for grad, clean_grad, where in zip(vjp_got(cotangent), vjp(cotangent), masked):
    np.testing.assert_array_equal(grad, clean_grad)
    assert np.all(np.asarray(grad)[where] == 0)


# ---------------------------------------------------------------------------
# Normalizers: rows of SCORES, normalized along the last axis or, transposed, the first.
# ---------------------------------------------------------------------------

SCORES = (2 * RNG.standard_normal((6, 5))).astype(np.float32)
WHERE = np.ones(SCORES.shape, bool)
WHERE[3, 0] = False
# Kept non-finite entries, one per row but row 0 (row 3 also has a masked entry).
KEPT_CHANGES = [((1, 1), NAN, True), ((2, 2), INF, True), ((3, 4), NAN, True),
                ((4, 3), -INF, True)]
# Masked ones: rows with a masked NaN and a masked +inf, and row 5, all masked, with a NaN.
MASKED_CHANGES = [((1, 1), NAN, False), ((2, 2), INF, False), ((5, 3), NAN, False)]
MASKED_WHERE = WHERE & (np.arange(len(SCORES)) != 5)[:, None]
# Normalizer hyperparameters under which a NaN takes another path (top-k with k = 1,
# LSSAR, the two-pass softmax, ...), as tests/test_normalizers.py runs them.
NORMALIZER_VARIANTS = {**VARIANTS, "gumbel_softmax_hard": ("gumbel_softmax", {"hard": True})}


def normalizer(name, axis):
  """(x, where) -> weights of the registered normalizer or variant `name` along `axis`."""
  base, kwargs = NORMALIZER_VARIANTS.get(name, (name, {}))
  defaults = normalizers.keyword_defaults(base)
  required = {k: SUPPLIED[k] for k, v in defaults.items() if v is inspect.Parameter.empty}
  fn = functools.partial(normalizers.get(base), **required, **kwargs)
  if axis == 0:
    return lambda x, where: fn(x.T, axis=0, where=where.T).T
  return lambda x, where: fn(x, where=where)


NORMALIZER_CASES = [
    pytest.param(name, axis, id=f"{name}-axis{axis}")
    for name in sorted(normalizers.names()) + sorted(NORMALIZER_VARIANTS) for axis in (-1, 0)]


@pytest.mark.parametrize("name, axis", NORMALIZER_CASES)
def test_normalizer_rows_with_a_kept_nan_or_inf_are_nan(name, axis):
  fn = normalizer(name, axis)
  x, where = changed(SCORES, WHERE, KEPT_CHANGES)
  kept = where & (x != -INF)  # -inf counts as masked
  got, want = np.asarray(fn(x, where)), np.asarray(fn(SCORES, kept))
  bad = np.any(kept & ~np.isfinite(x), axis=-1)
  assert np.all(np.isnan(got[bad][kept[bad]]))
  np.testing.assert_array_equal(got[bad][~kept[bad]], want[bad][~kept[bad]])  # 0 or -inf
  np.testing.assert_array_equal(got[~bad], want[~bad])
  assert np.all(np.isfinite(want[kept]))


@pytest.mark.parametrize("name", sorted(normalizers.names()) + sorted(NORMALIZER_VARIANTS))
def test_normalizer_ignores_nan_and_inf_in_masked_entries(name):
  fn = normalizer(name, -1)
  x, where = changed(SCORES, MASKED_WHERE, MASKED_CHANGES)
  np.testing.assert_array_equal(fn(x, where), fn(SCORES, where))
  kept = lambda x: jnp.where(where, fn(x, where), 0)  # the log-normalizers' -inf left out
  check_masked_inputs(kept, [x], [SCORES], [~where])


# ---------------------------------------------------------------------------
# Losses of logits (classification, multilabel, regularizer): test_classification's harness.
# ---------------------------------------------------------------------------

LOGIT_KINDS = {"classification": "int", "multilabel": "multi", "regularizer": "none"}
# Examples made from rows of test_classification's X: (row, entry changed, value put there).
# Row 0 keeps every class, row 1 has masked classes, row 2 none kept, row 4 its label's masked.
KEPT_LOGITS = [(0, None, None), (0, "other", NAN), (1, "label", NAN), (3, "other", INF),
               (5, "label", INF), (0, "other", -INF), (1, "label", -INF), (1, None, None)]
MASKED_LOGITS = [(0, None, None), (1, "masked", NAN), (3, "masked", INF), (2, "masked", NAN),
                 (4, "label", NAN)]


def logit_column(row, entry):
  """The label's column of X's row, or its first kept ("other") or masked class."""
  if entry == "label":
    return X_LABELS[row]
  kept = X_MASK[row] & (np.arange(X.shape[1]) != X_LABELS[row])
  return np.flatnonzero(kept if entry == "other" else ~X_MASK[row])[0]


def logit_examples(examples):
  """(logits, where, targets by test_classification's target kind, {example: value put in})."""
  rows = [row for row, _, _ in examples]
  put = {i: value for i, (_, entry, value) in enumerate(examples) if entry}
  changes = [((i, logit_column(row, entry)), value, X_MASK[row, logit_column(row, entry)])
             for i, (row, entry, value) in enumerate(examples) if entry]
  x, where = changed(X[rows], X_MASK[rows], changes)
  targets = {kind: None if t is None else t[rows] for kind, t in X_TARGETS.items()}
  return x, where, targets, put


def logit_loss(name):
  """test_classification's case of registered loss `name` (hyperparameters it needs bound),
  else the function with its kind's targets and the inputs a trainer supplies."""
  if name in all_cases():
    return all_cases()[name]
  info = losses.info(name)
  fn = functools.partial(losses.get(name), **{k: SUPPLIED[k] for k in info.inputs})
  return Case(fn, None, LOGIT_KINDS[info.kind])


LOGIT_LOSSES = [name for name in losses.names() if losses.info(name).kind in LOGIT_KINDS]


@pytest.mark.parametrize("name", LOGIT_LOSSES)
def test_logit_loss_of_a_nan_or_inf_logit_is_not_finite(name):
  case = logit_loss(name)
  x, where, targets, put = logit_examples(KEPT_LOGITS)
  kept = where & (x != -INF)  # -inf counts as masked
  clean = np.where(np.isfinite(x), x, X[[row for row, _, _ in KEPT_LOGITS]])
  got = call(case, x, where=where, target=targets[case.target])
  want = call(case, clean, where=kept, target=targets[case.target])
  check_examples(got, want, {i: v for i, v in put.items() if v != -INF},
                 coupled=name in READS_OTHER_EXAMPLES)


@pytest.mark.parametrize("name", LOGIT_LOSSES)
def test_logit_loss_ignores_nan_and_inf_in_masked_classes(name):
  case = logit_loss(name)
  x, where, targets, _ = logit_examples(MASKED_LOGITS)
  clean = X[[row for row, _, _ in MASKED_LOGITS]]
  loss = lambda x: call(case, x, where=where, target=targets[case.target])
  check_masked_inputs(loss, [x], [clean], [~where])


# ---------------------------------------------------------------------------
# Margin losses: the inputs each registers (losses.MARGIN_INPUTS), by keyword.
# ---------------------------------------------------------------------------

EXAMPLES, CLASSES = COS.shape
MARGIN_VALUES = {
    "cos": COS.astype(np.float32),
    "labels": PAIR_LABELS,
    "embeddings": EMB.astype(np.float32),
    "centers": RNG.standard_normal((CLASSES, EMB.shape[1])).astype(np.float32),
    "norms": np.linspace(5.0, 40.0, EXAMPLES, dtype=np.float32),
    "key": KEY,
    "where": np.ones(EXAMPLES, bool),
    "quality": np.linspace(0.1, 1.0, EXAMPLES, dtype=np.float32),
}
# Per-example float inputs a NaN may sit in; the first a loss takes gets the +-inf too.
MARGIN_FLOATS = ("cos", "embeddings", "norms", "quality")
# (example, column: the label's or another class's for cosines, value); 0 and 7 unchanged.
MARGIN_CHANGES = [(1, "other", NAN), (2, "label", NAN), (3, "other", INF), (4, "label", INF),
                  (5, "other", -INF), (6, "label", -INF)]
PADDING = 6  # a padding example (where = False) of the masked test


def margin_loss(name):
  """**inputs -> values of registered margin loss `name`: learnable arguments from its
  logit_params module, a stateful loss applied once from a fresh state."""
  info = losses.info(name)
  fn = losses.get(name)
  if info.logit_params is not None:
    arguments = info.logit_params(num_classes=CLASSES).init_with_output(
        jax.random.key(0), method="loss_arguments")[0]
    fn = functools.partial(fn, **arguments)
  if info.stateful is None:
    return fn
  made = info.stateful()
  return lambda **inputs: made.apply(**inputs, state=made.init(EXAMPLES),
                                     ids=jnp.arange(EXAMPLES))[0]


def margin_arguments(name, values):
  """The inputs margin loss `name` takes, from `values` (sub-center losses: [N, C, 2] cosines)."""
  arguments = {k: values[k] for k in margin.margin_inputs(name)}
  if name == "subcenter_arcface":
    arguments["cos"] = np.stack([arguments["cos"], 0.5 * arguments["cos"]], axis=-1)
  return arguments


def margin_entry(input_name, example, entry):
  """Where a change goes: the label's or another class's cosine; all of an embedding
  (Unicom reads a random half of its dimensions); a per-example scalar."""
  if input_name == "cos":
    return example, PAIR_LABELS[example] + (entry == "other")
  return example


MARGIN_LOSSES = [name for name in losses.names() if losses.info(name).kind == "margin"]


@pytest.mark.parametrize("name", MARGIN_LOSSES)
def test_margin_loss_of_a_nan_or_inf_input_is_not_finite(name):
  loss, inputs = margin_loss(name), margin.margin_inputs(name)
  floats = [k for k in MARGIN_FLOATS if k in inputs]
  want = loss(**margin_arguments(name, MARGIN_VALUES))
  for position, k in enumerate(floats):
    changes = MARGIN_CHANGES if position == 0 else [(2, "other", NAN)]
    entries = [(margin_entry(k, i, entry), value) for i, entry, value in changes]
    values = {**MARGIN_VALUES, k: put(MARGIN_VALUES[k], entries)}
    got = loss(**margin_arguments(name, values))
    check_examples(got, want, {i: value for i, _, value in changes},
                   coupled=name in READS_OTHER_EXAMPLES)


@pytest.mark.parametrize("name", [n for n in MARGIN_LOSSES if "where" in margin.margin_inputs(n)])
def test_margin_loss_ignores_nan_in_padding_examples(name):
  loss, inputs = margin_loss(name), margin.margin_inputs(name)
  floats = [k for k in MARGIN_FLOATS if k in inputs]
  real = np.arange(EXAMPLES) != PADDING
  clean = {**MARGIN_VALUES, "where": real}
  padded = [put(clean[k], [(PADDING, NAN)]) for k in floats]
  values = lambda *arrays: loss(**margin_arguments(name, {**clean, **dict(zip(floats, arrays))}))
  want, vjp = jax.vjp(values, *(clean[k] for k in floats))
  got, vjp_got = jax.vjp(values, *padded)
  np.testing.assert_array_equal(got, want)
  cotangent = RNG.standard_normal(EXAMPLES).astype(np.float32)
  for grad, clean_grad in zip(vjp_got(cotangent), vjp(cotangent)):
    np.testing.assert_array_equal(grad, clean_grad)


# ---------------------------------------------------------------------------
# Pairwise losses: (zimg, ztxt) from test_contrastive, logit arguments from logit_params.
# ---------------------------------------------------------------------------

PAIRWISE_LOSSES = [name for name in losses.names() if losses.info(name).kind == "pairwise"]


@pytest.mark.parametrize("tower", [0, 1])
@pytest.mark.parametrize("name", PAIRWISE_LOSSES)
def test_pairwise_loss_of_a_nan_or_inf_embedding_is_not_finite(name, tower):
  arguments = losses.info(name).logit_params().init_with_output(
      jax.random.key(0), method="loss_arguments")[0]
  loss = functools.partial(losses.get(name), **arguments)
  embeddings = list(pairs())
  want = loss(*embeddings)
  changes = {1: NAN, 2: INF, 3: -INF}
  embeddings[tower] = put(embeddings[tower], [((i, 0), value) for i, value in changes.items()])
  check_examples(loss(*embeddings), want, changes, coupled=name in READS_OTHER_EXAMPLES)


# ---------------------------------------------------------------------------
# Vocabulary-head losses: (hidden, weight, labels) from test_vocab, with and without a soft cap.
# ---------------------------------------------------------------------------

VOCAB_LOSSES = [name for name in losses.names() if losses.info(name).kind == "vocab_head"]
# The soft cap's tanh would turn an infinite logit into a finite one.
VOCAB_OPTIONS = {"defaults": {}, "soft_cap": {"logit_soft_cap": 2.0}}


@pytest.mark.parametrize("options", sorted(VOCAB_OPTIONS))
@pytest.mark.parametrize("name", VOCAB_LOSSES)
def test_vocab_loss_of_a_nan_or_inf_hidden_state_is_not_finite(name, options):
  loss = functools.partial(losses.get(name), **VOCAB_OPTIONS[options])
  hidden, weight, labels = problem(tokens=8)
  changes = {1: NAN, 2: INF, 3: -INF}
  poisoned = put(hidden, [((i, 0), value) for i, value in changes.items()])
  check_examples(loss(poisoned, weight, labels), loss(hidden, weight, labels), changes)


@pytest.mark.parametrize("options", sorted(VOCAB_OPTIONS))
@pytest.mark.parametrize("name", VOCAB_LOSSES)
def test_vocab_loss_ignores_nan_in_masked_tokens(name, options):
  hidden, weight, labels = problem(tokens=8)
  where = np.arange(8) != 2
  masked = put(hidden, [((2, 0), NAN)])
  loss = lambda h, w: losses.get(name)(h, w, labels, where=where, **VOCAB_OPTIONS[options])
  unmasked_weight = np.zeros(len(weight), bool)
  check_masked_inputs(loss, [masked, weight], [hidden, weight], [~where, unmasked_weight])


def test_every_registered_loss_is_covered():
  kinds = set(LOGIT_KINDS) | {"margin", "pairwise", "vocab_head"}
  assert {losses.info(name).kind for name in losses.names()} <= kinds
  assert set(READS_OTHER_EXAMPLES) <= set(losses.names())
