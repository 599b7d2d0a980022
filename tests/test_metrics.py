"""Metrics against NumPy references, the Softmax Collapse onsets, and masks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fast_jit import jit

import softlab.losses as L
from softlab import metrics as M

RNG = np.random.default_rng(0)
LOGITS = (2 * RNG.standard_normal((40, 5))).astype(np.float32)
LABELS = RNG.integers(0, 5, 40)
WHERE = RNG.random(40) > 0.2

# Functions with many small ops are tested compiled: eager dispatch compiles
# each op on first use, which costs more than one program (fast_jit.jit).


def softmax_numpy(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_accuracy_and_topk():
  want = (LOGITS.argmax(-1) == LABELS).astype(np.float32)
  np.testing.assert_array_equal(M.accuracy(LOGITS, LABELS), want)
  np.testing.assert_array_equal(M.accuracy(LOGITS, LABELS, where=WHERE), want * WHERE)
  np.testing.assert_array_equal(M.topk_accuracy(LOGITS, LABELS, k=1), want)
  rank = (LOGITS > LOGITS[np.arange(40), LABELS][:, None]).sum(-1)  # no ties in random logits
  for k in (2, 3, 5):
    np.testing.assert_array_equal(M.topk_accuracy(LOGITS, LABELS, k=k, where=WHERE), (rank < k) * WHERE)
  assert M.accuracy(LOGITS, LABELS).dtype == jnp.float32


def test_ties_go_to_the_lowest_index():
  tied = jnp.zeros((2, 4))
  np.testing.assert_array_equal(M.accuracy(tied, jnp.array([0, 1])), [1.0, 0.0])
  np.testing.assert_array_equal(M.topk_accuracy(tied, jnp.array([1, 2]), k=2), [1.0, 0.0])


def test_metrics_compose_with_jit_and_extra_batch_axes():
  x, y, w = LOGITS.reshape(4, 10, 5), LABELS.reshape(4, 10), WHERE.reshape(4, 10)
  got = jax.jit(lambda x, y, w: M.topk_accuracy(x, y, k=2, where=w))(x, y, w)
  np.testing.assert_array_equal(got.reshape(-1), M.topk_accuracy(LOGITS, LABELS, k=2, where=WHERE))
  np.testing.assert_allclose(
      jax.jit(lambda x, y, w: M.expected_calibration_error(x, y, where=w))(x, y, w),
      M.expected_calibration_error(LOGITS, LABELS, where=WHERE), rtol=1e-6)


def ece_numpy(logits, labels, num_bins, where):
  p = softmax_numpy(np.asarray(logits, np.float64))[where]
  conf, correct = p.max(-1), (p.argmax(-1) == labels[where])
  total = 0.0
  for b in range(num_bins):
    in_bin = (conf > b / num_bins) & (conf <= (b + 1) / num_bins)
    if in_bin.any():
      total += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
  return total


@pytest.mark.parametrize("num_bins", [1, 10, 15])
def test_expected_calibration_error(num_bins):
  got = M.expected_calibration_error(LOGITS, LABELS, num_bins=num_bins, where=WHERE)
  np.testing.assert_allclose(got, ece_numpy(LOGITS, LABELS, num_bins, WHERE), rtol=1e-5, atol=1e-7)
  assert float(M.expected_calibration_error(LOGITS, LABELS, where=np.zeros(40, bool))) == 0.0


def test_ece_of_a_calibrated_predictor_is_small():
  # Labels drawn from the predicted distribution: calibrated by construction.
  rng = np.random.default_rng(1)
  logits = rng.standard_normal((20_000, 3)).astype(np.float32)
  labels = np.array([rng.choice(3, p=p) for p in softmax_numpy(logits.astype(np.float64))])
  assert float(M.expected_calibration_error(logits, labels)) < 0.02
  overconfident = float(M.expected_calibration_error(5 * logits, labels))
  assert overconfident > 0.1


# Paper onset gaps (113 classes, the other logits equal); XLA's CPU sums fall
# within 1.5 of them (the exact onset depends on the summation order).
ONSETS = {"float16": 12.4, "float32": 19.3, "float64": 40.1}


@pytest.mark.parametrize("dtype", sorted(ONSETS))
def test_softmax_collapse_onsets(dtype, request):
  if dtype == "float64":
    request.getfixturevalue("x64")
  onset = ONSETS[dtype]
  gaps = np.array([0.0, 1.0, onset - 1.5, onset + 1.5, onset + 10.0])
  logits = np.zeros((5, 113))
  logits[:, 7] = gaps
  logits = jnp.asarray(logits, dtype)
  per_row = [float(M.softmax_collapse_fraction(row[None], dtype=dtype)) for row in logits]
  assert per_row == [0.0, 0.0, 0.0, 1.0, 1.0]
  assert float(M.softmax_collapse_fraction(logits, dtype=dtype)) == pytest.approx(2 / 5)
  where = np.array([True, True, True, False, False])
  assert float(M.softmax_collapse_fraction(logits, dtype=dtype, where=where)) == 0.0


def test_collapse_means_zero_loss_and_zero_gradient():
  # A float32 row past the onset: CE and its gradient are exactly 0.
  logits = jnp.zeros((3, 113)).at[:, 0].set(jnp.array([5.0, 30.0, 60.0]))
  labels = jnp.zeros(3, jnp.int32)

  @jit
  def outputs(logits, labels):
    loss = L.softmax_cross_entropy(logits, labels)
    grad = jax.grad(lambda x: jnp.sum(L.softmax_cross_entropy(x, labels)))(logits)
    return (loss, M.zero_loss_fraction(loss),
            M.softmax_collapse_fraction(logits, dtype=jnp.float32), grad,
            L.stablemax_cross_entropy(logits, labels))

  loss, zero_fraction, collapse_fraction, grad, stablemax_loss = outputs(logits, labels)
  assert list(np.asarray(loss) == 0) == [False, True, True]
  np.testing.assert_allclose(zero_fraction, 2 / 3)
  np.testing.assert_allclose(collapse_fraction, 2 / 3)
  # The label's gradient entry is exactly 0; the others are exp(-gap), far below
  # what moves float32 weights.
  assert np.all(grad[1:, 0] == 0) and np.all(np.abs(grad[1:]) < 1e-12) and grad[0, 0] < -1e-3
  # StableMax does not collapse at the same gaps.
  assert np.all(np.asarray(stablemax_loss) > 0)


def test_zero_loss_fraction_masks():
  loss = jnp.array([0.0, 0.5, 0.0, 1e-30])
  assert float(M.zero_loss_fraction(loss)) == 0.5
  assert float(M.zero_loss_fraction(loss, where=np.array([True, True, False, True]))) == pytest.approx(1 / 3)
  assert float(M.zero_loss_fraction(loss, where=np.zeros(4, bool))) == 0.0


def auroc_numpy(pos, neg):
  """P(pos > neg) + P(pos = neg) / 2 over all pairs."""
  pos, neg = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
  return ((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size)


def test_msp_auroc_matches_a_pairwise_reference():
  rng = np.random.default_rng(2)
  in_logits = (3 * rng.standard_normal((30, 6))).astype(np.float32)
  out_logits = rng.standard_normal((25, 6)).astype(np.float32)
  out_logits[:5] = in_logits[:5]  # exact ties across the two sets
  msp = lambda z: softmax_numpy(np.asarray(z, np.float64)).max(-1)
  in_where, out_where = rng.random(30) > 0.3, rng.random(25) > 0.3

  @jit
  def auroc(in_where, out_where):
    return (M.msp_auroc(in_logits, out_logits),
            M.msp_auroc(in_logits, out_logits, in_where=in_where, out_where=out_where))

  got, got_where = auroc(in_where, out_where)
  np.testing.assert_allclose(got, auroc_numpy(msp(in_logits), msp(out_logits)), rtol=1e-6)
  got = got_where
  want = auroc_numpy(msp(in_logits)[in_where], msp(out_logits)[out_where])
  np.testing.assert_allclose(got, want, rtol=1e-6)


def aupr_numpy(pos, neg):
  """Average precision over the distinct thresholds t: sum (R_t - R_prev) P_t, float64."""
  pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
  scores = np.concatenate([pos, neg])
  area, recall_before = 0.0, 0.0
  for t in np.unique(scores)[::-1]:
    true_positives = np.sum(pos >= t)
    precision = true_positives / np.sum(scores >= t)
    recall = true_positives / len(pos)
    area += (recall - recall_before) * precision
    recall_before = recall
  return area


def test_msp_aupr_matches_a_threshold_reference():
  rng = np.random.default_rng(3)
  in_logits = (3 * rng.standard_normal((30, 6))).astype(np.float32)
  out_logits = rng.standard_normal((25, 6)).astype(np.float32)
  out_logits[:5] = in_logits[:5]  # exact ties across the two sets
  in_logits[10:13] = in_logits[13]  # and within the positives
  score = lambda z: np.max(np.log(softmax_numpy(np.asarray(z, np.float64))), -1)
  msp32 = lambda z: np.asarray(jax.nn.log_softmax(jnp.asarray(z)).max(-1), np.float64)
  got = M.msp_aupr(in_logits, out_logits)
  np.testing.assert_allclose(got, aupr_numpy(msp32(in_logits), msp32(out_logits)), rtol=1e-6)
  np.testing.assert_allclose(got, aupr_numpy(score(in_logits), score(out_logits)), rtol=1e-2)
  in_where, out_where = rng.random(30) > 0.3, rng.random(25) > 0.3
  got = M.msp_aupr(in_logits, out_logits, in_where=in_where, out_where=out_where)
  want = aupr_numpy(msp32(in_logits)[in_where], msp32(out_logits)[out_where])
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_msp_aupr_extremes():
  confident = jnp.array([[10.0, 0.0, 0.0]] * 4)
  uniform = jnp.zeros((3, 3))
  assert float(M.msp_aupr(confident, uniform)) == 1.0
  assert float(M.msp_aupr(uniform, confident)) == pytest.approx(3 / 7)  # positives ranked last
  assert float(M.msp_aupr(uniform, uniform)) == 0.5  # one tie: precision 3 / 6
  assert float(M.msp_aupr(confident, uniform, in_where=np.zeros(4, bool))) == 0.0


def test_msp_auroc_extremes():
  confident = jnp.array([[10.0, 0.0, 0.0]] * 4)
  uniform = jnp.zeros((3, 3))

  @jit
  def aurocs(confident, uniform):
    return (M.msp_auroc(confident, uniform), M.msp_auroc(uniform, confident),
            M.msp_auroc(uniform, uniform),
            M.msp_auroc(confident, uniform, out_where=np.zeros(3, bool)))

  assert [float(x) for x in aurocs(confident, uniform)] == [1.0, 0.0, 0.5, 0.5]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: M.accuracy(LOGITS, LABELS[:3]), r"labels of shape \(3,\) must have the shape"),
        (lambda: M.accuracy(LOGITS, LABELS.astype(np.float32)), "labels must be integer"),
        (lambda: M.accuracy(LOGITS, LABELS, where=WHERE[:, None]), "where must be a boolean array of the examples' shape"),
        (lambda: M.topk_accuracy(LOGITS, LABELS, k=6), r"k must be an integer in \[1, 5\]"),
        (lambda: M.expected_calibration_error(LOGITS, LABELS, num_bins=0), "num_bins must be an integer >= 1"),
        (lambda: M.msp_auroc(LOGITS, LOGITS, out_where=WHERE[:3]), "out_where must be a boolean array"),
        (lambda: M.softmax_collapse_fraction(np.float32(1.0), dtype=jnp.float32), "logits must have a class axis"),
    ],
)
def test_bad_arguments_raise_one_line_errors(call, message):
  with pytest.raises(ValueError, match=message):
    call()
