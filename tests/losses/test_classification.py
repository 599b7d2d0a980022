"""Classification losses against independent float64 NumPy references, plus properties.

The generic harness here (`Case`, `CASES`, `rowwise`, the parametrized tests)
also runs the LDR losses: tests/losses/test_ldr.py adds its cases to
`LDR_CASES` through `register_cases`.
"""

import functools
from typing import Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from jax.test_util import check_grads

import softlab.losses as L
from softlab import normalizers
from softlab.losses import classification
from fast_jit import jit

# ---------------------------------------------------------------------------
# Independent float64 references on one example: z = the kept logits (1-D),
# t = the label's index among them, or the kept per-class targets.
# ---------------------------------------------------------------------------


def lse(v):
  m = v.max()
  return m + np.log(np.exp(v - m).sum())


def log_softmax(v):
  return v - lse(v)


def softmax(v):
  return np.exp(log_softmax(v))


def one_minus_p(z, y):
  return -np.expm1(log_softmax(z)[y])


def ref_softmax_ce(z, y, label_smoothing=0.0):
  lp = log_softmax(z)
  return -(1 - label_smoothing) * lp[y] - label_smoothing * lp.mean()


def ref_soft_ce(z, t):
  return -(t * log_softmax(z)).sum()


def ref_stablemax_ce(z, y):
  s = np.array([v + 1 if v >= 0 else 1 / (1 - v) for v in z])
  return -np.log(s[y] / s.sum())


def log_sigmoid(v):
  return -np.logaddexp(0.0, -v)


def ref_sigmoid_bce(z, t):
  return -(t * log_sigmoid(z) + (1 - t) * log_sigmoid(-z)).sum()


def ref_focal(z, y, gamma=2.0):
  return -one_minus_p(z, y) ** gamma * log_softmax(z)[y]


def ref_poly1(z, y, epsilon=1.0):
  return -log_softmax(z)[y] + epsilon * one_minus_p(z, y)


def ref_squentropy(z, y):
  others = np.delete(z, y)
  return -log_softmax(z)[y] + (others**2).sum() / max(len(others), 1)


def ref_maxsup_regularizer(z):
  return z.max() - z.mean()


def ref_maxsup_ce(z, y, alpha=0.1):
  return -log_softmax(z)[y] + alpha * ref_maxsup_regularizer(z)


def ref_z_loss(z):
  return lse(z) ** 2


def ref_gce(z, y, q=0.7):
  return -np.expm1(q * log_softmax(z)[y]) / q


def ref_truncated_gce(z, y, q=0.7, k=0.5):
  p = np.exp(log_softmax(z)[y])
  return (1 - max(p, k) ** q) / q if p <= k else ref_gce(z, y, q)


def ref_sce(z, y, alpha=0.1, beta=1.0, log_zero=-4.0):
  # RCE = -sum_k p_k log q_k, log q_k = log_zero off the label, 0 on it.
  p = softmax(z)
  log_q = np.full(len(z), log_zero)
  log_q[y] = 0.0
  return alpha * -log_softmax(z)[y] + beta * -(p * log_q).sum()


def ref_nce(z, y):
  lp = log_softmax(z)
  return lp[y] / lp.sum() if len(z) > 1 else 0.0


def ref_nce_rce(z, y, alpha=1.0, beta=1.0):
  return alpha * ref_nce(z, y) + beta * 4 * one_minus_p(z, y)


def one_hot(y, k):
  e = np.zeros(k)
  e[y] = 1.0
  return e


def ref_mae(z, y):
  return np.abs(softmax(z) - one_hot(y, len(z))).sum()


def ref_mse(z, y):
  d = softmax(z) - one_hot(y, len(z))
  d[y] = -one_minus_p(z, y)
  return (d**2).sum()


def ref_ldam(z, y, margin=0.3, scale=30.0):
  shifted = z.copy()
  shifted[y] -= margin
  return -log_softmax(scale * shifted)[y]


def ref_asl(z, t, gamma_pos=0.0, gamma_neg=4.0, clip=0.05):
  p = np.exp(log_sigmoid(z))
  not_p = np.exp(log_sigmoid(-z))
  p_m = np.maximum(p - clip, 0)
  positive = not_p**gamma_pos * log_sigmoid(z)
  log_not_shifted = log_sigmoid(-z) if clip == 0 else np.log(np.minimum(not_p + clip, 1.0))
  negative = p_m**gamma_neg * log_not_shifted
  return -(t * positive + (1 - t) * negative).sum()


def _bisect(mass, lo, hi):
  for _ in range(200):
    mid = (lo + hi) / 2
    lo, hi = (mid, hi) if mass(mid) > 1 else (lo, mid)
  return (lo + hi) / 2


def ref_sparsemax_loss(z, y):
  z = z - z.max()  # shift invariant; keeps the bisection error away from |z| ~ 1e4
  tau = _bisect(lambda t: np.maximum(z - t, 0).sum(), z.max() - 1, z.max())
  p = np.maximum(z - tau, 0)
  # max_p <z, p> - ||p||^2 / 2 (+ 1/2 for the one-hot label) - z_y
  return p @ z - (p @ p) / 2 + 0.5 - z[y]


def ref_entmax15_loss(z, y):
  z = z - z.max()  # shift invariant; keeps the bisection error away from |z| ~ 1e4
  tau = _bisect(lambda t: (np.maximum(z / 2 - t, 0) ** 2).sum(), z.max() / 2 - 1, z.max() / 2)
  p = np.maximum(z / 2 - tau, 0) ** 2
  tsallis = (p - p**1.5).sum() / 0.75  # H_1.5(p); H of a one-hot is 0
  return p @ z + tsallis - z[y]


def ref_multilabel_sparsemax_loss(z, t):
  if t.sum() == 0:
    return 0.0
  q = t / t.sum()
  z = z - z.max()
  tau = _bisect(lambda s: np.maximum(z - s, 0).sum(), z.max() - 1, z.max())
  p = np.maximum(z - tau, 0)
  # Fenchel-Young with Omega(p) = ||p||^2 / 2: Omega*(z) + Omega(q) - <z, q>.
  return (p @ z - (p @ p) / 2) + (q @ q) / 2 - z @ q


def ref_topk_ce(z, y, k=5):
  chosen = set(np.argsort(-z, kind="stable")[:k]) | {y}
  return lse(z[sorted(chosen)]) - z[y]


def ref_spherical_z_loss(z, y, a=0.1, b=10.0):
  std = z.std()
  z_y = (z[y] - z.mean()) / std if std > 0 else 0.0
  return np.logaddexp(0.0, a * (b - z_y)) / a


def ref_ovr_squared_hinge(z, y):
  t = -np.ones(len(z))
  t[y] = 1.0
  return (np.maximum(0.0, 1 - t * z) ** 2).sum()


def ref_nfl(z, y, gamma=0.5):
  lp = log_softmax(z)
  focal = -(-np.expm1(lp)) ** gamma * lp
  return focal[y] / focal.sum() if focal.sum() > 0 else 0.0


def ref_nce_mae(z, y, alpha=1.0, beta=1.0):
  return alpha * ref_nce(z, y) + beta * ref_mae(z, y)


def ref_nfl_rce(z, y, alpha=1.0, beta=1.0, gamma=0.5):
  return alpha * ref_nfl(z, y, gamma) + beta * 4 * one_minus_p(z, y)


def ref_nfl_mae(z, y, alpha=1.0, beta=1.0, gamma=0.5):
  return alpha * ref_nfl(z, y, gamma) + beta * ref_mae(z, y)


def targets_of(t, k):
  return one_hot(t, k) if np.ndim(t) == 0 else t


def ref_jaccard(z, t):
  x, y = softmax(z), targets_of(t, len(z))
  a, b, d = np.abs(x).sum(), np.abs(y).sum(), np.abs(x - y).sum()
  return 1 - (a + b - d) / (a + b + d)


def ref_dice(z, t):
  x, y = softmax(z), targets_of(t, len(z))
  return np.abs(x - y).sum() / (np.abs(x).sum() + np.abs(y).sum())


# ---------------------------------------------------------------------------
# The cases every generic test runs.
# ---------------------------------------------------------------------------


class Case(NamedTuple):
  fn: Callable  # loss(logits, target, *, where, dtype)
  ref: Callable  # ref(z, t) on one example's kept entries
  target: str  # "int" | "probs" (soft targets) | "multi" (multi-label) | "none"


def case(fn, ref, target="int", **kwargs):
  return Case(functools.partial(fn, **kwargs), functools.partial(ref, **kwargs), target)


CASES = {
    "softmax_cross_entropy": case(L.softmax_cross_entropy, ref_softmax_ce),
    "softmax_cross_entropy_ls": case(L.softmax_cross_entropy, ref_softmax_ce, label_smoothing=0.2),
    "soft_cross_entropy": case(L.soft_cross_entropy, ref_soft_ce, "probs"),
    "stablemax_cross_entropy": case(L.stablemax_cross_entropy, ref_stablemax_ce),
    "sigmoid_binary_cross_entropy": case(L.sigmoid_binary_cross_entropy, ref_sigmoid_bce, "multi"),
    "focal_loss": case(L.focal_loss, ref_focal),
    "focal_loss_half": case(L.focal_loss, ref_focal, gamma=0.5),
    "poly1_cross_entropy": case(L.poly1_cross_entropy, ref_poly1),
    "squentropy": case(L.squentropy, ref_squentropy),
    "maxsup_regularizer": case(L.maxsup_regularizer, ref_maxsup_regularizer, "none"),
    "maxsup_cross_entropy": case(L.maxsup_cross_entropy, ref_maxsup_ce),
    "z_loss": case(L.z_loss, ref_z_loss, "none"),
    "gce": case(L.gce, ref_gce),
    "truncated_gce": case(L.truncated_gce, ref_truncated_gce),
    "sce": case(L.sce, ref_sce),
    "nce_rce": case(L.nce_rce, ref_nce_rce),
    "mae": case(L.mae, ref_mae),
    "mse": case(L.mse, ref_mse),
    "ldam": Case(
        functools.partial(L.ldam, margins=np.full(7, 0.3)), ref_ldam, "int"),
    "asl": case(L.asl, ref_asl, "multi"),
    "asl_no_clip": case(L.asl, ref_asl, "multi", gamma_pos=1.0, clip=0.0),
    "sparsemax_loss": case(L.sparsemax_loss, ref_sparsemax_loss),
    "entmax15_loss": case(L.entmax15_loss, ref_entmax15_loss),
    "jaccard_metric_loss": case(L.jaccard_metric_loss, ref_jaccard),
    "jaccard_metric_loss_soft": case(L.jaccard_metric_loss, ref_jaccard, "probs"),
    "dice_metric_loss": case(L.dice_metric_loss, ref_dice),
    "dice_metric_loss_soft": case(L.dice_metric_loss, ref_dice, "probs"),
    "multilabel_sparsemax_loss": case(L.multilabel_sparsemax_loss, ref_multilabel_sparsemax_loss, "multi"),
    "topk_cross_entropy": case(L.topk_cross_entropy, ref_topk_ce, k=2),
    "spherical_z_loss": case(L.spherical_z_loss, ref_spherical_z_loss, a=2.0, b=1.0),
    "ovr_squared_hinge": case(L.ovr_squared_hinge, ref_ovr_squared_hinge),
    "nfl": case(L.nfl, ref_nfl),
    "nce_mae": case(L.nce_mae, ref_nce_mae),
    "nfl_rce": case(L.nfl_rce, ref_nfl_rce),
    "nfl_mae": case(L.nfl_mae, ref_nfl_mae, gamma=2.0, beta=0.5),
}
# Cases of other loss modules that share this harness (filled by their tests).
LDR_CASES: dict[str, Case] = {}


def register_cases(cases):
  LDR_CASES.update(cases)


# ---------------------------------------------------------------------------
# Inputs and the row-by-row reference.
# ---------------------------------------------------------------------------

B, K = 6, 7
RNG = np.random.default_rng(0)
RANDOM = (3 * RNG.standard_normal((B, K))).astype(np.float32)
LABELS = np.array([0, 3, 6, 2, 5, 1])
PROBS = softmax(RNG.standard_normal(K))[None] * np.ones((B, 1))
PROBS = (0.5 * PROBS + 0.5 * RNG.dirichlet(np.ones(K), B)).astype(np.float32)
MULTI = (RNG.random((B, K)) > 0.5).astype(np.float32)
MASK = RNG.random((B, K)) > 0.25
MASK[np.arange(B), LABELS] = True
MASK[2] = False  # a fully masked row
MASK[4, LABELS[4]] = False  # a row whose label class is masked
EXTREME = np.array(
    [
        [1e4, -1e4, 0.0, 1e4, -1e4, 5.0, 1.0],
        [0.0] * 7,
        [-1e4] * 6 + [-9999.5],
        [1e4] + [-1e4] * 6,
        [-1e4] + [1e4] * 6,
        [1.0, 1.0 + 1e-6, 1.0, 0.5, -0.5, 3.0, -1e4],
    ],
    np.float32,
)


# Random rows (with a random mask, a fully masked row and a row whose label
# class is masked) followed by the extreme rows (unmasked): one call checks both.
X = np.concatenate([RANDOM, EXTREME])
X_LABELS = np.concatenate([LABELS, LABELS])
X_MASK = np.concatenate([MASK, np.ones_like(MASK)])
X_TARGETS = {
    "int": X_LABELS,
    "probs": np.concatenate([PROBS, PROBS]),
    "multi": np.concatenate([MULTI, MULTI]),
    "none": None,
}


def call(c, x, where=None, target=None):
  """The case's loss on x; the target defaults to the first len(x) rows of X's."""
  if c.target == "none":
    return c.fn(x, where=where)
  target = X_TARGETS[c.target][: len(x)] if target is None else target
  return c.fn(x, target, where=where)


def rowwise(c, x, where=None, target=None):
  """The reference on every example's kept entries; 0 where the loss must be 0."""
  x = np.asarray(x, np.float64)
  if target is None and c.target != "none":
    target = X_TARGETS[c.target][: len(x)]
  keep = np.ones(x.shape, bool) if where is None else np.broadcast_to(where, x.shape)
  out = np.zeros(x.shape[:-1])
  for i in np.ndindex(x.shape[:-1]):
    kept = keep[i]
    if not kept.any() or (c.target == "int" and not kept[target[i]]):
      continue
    z = x[i][kept]
    if c.target == "none":
      out[i] = c.ref(z)
    elif c.target == "int":
      out[i] = c.ref(z, int(kept[: target[i]].sum()))
    else:
      out[i] = c.ref(z, np.asarray(target[i], np.float64)[kept])
  return out


def all_cases():
  return {**CASES, **LDR_CASES}


def names():
  return sorted(CASES)


# ---------------------------------------------------------------------------
# Generic tests (also run by test_ldr.py through `generic_tests`).
# ---------------------------------------------------------------------------


# Every generic check runs on arrays of X's shape, so the eagerly compiled
# primitives are shared by all cases (a new shape recompiles each of them).


def check_values(c, variant=lambda f: f):
  """Float32 values against the reference; `variant` wraps the call (chex: jit or not)."""
  target = X_TARGETS[c.target]
  got = variant(lambda x, target, where: call(c, x, where=where, target=target))(X, target, X_MASK)
  assert got.shape == (2 * B,) and got.dtype == jnp.float32
  assert np.all(np.isfinite(got))
  np.testing.assert_allclose(got, rowwise(c, X, X_MASK), rtol=2e-5, atol=2e-5)
  assert got[2] == 0
  if c.target == "int":
    assert got[4] == 0


def check_float64(c):
  got = call(c, jnp.asarray(X, jnp.float64), where=X_MASK)
  assert got.dtype == jnp.float64
  np.testing.assert_allclose(got, rowwise(c, X, X_MASK), rtol=1e-10, atol=1e-10)


def check_gradients(c):
  # The random rows only (the extreme ones sit on kinks and ties): masking a
  # whole row makes its loss and gradient 0, finite differences included.
  where = X_MASK & (np.arange(2 * B) < B)[:, None]
  f = lambda x: call(c, x, where=where)
  check_grads(f, (jnp.asarray(X, jnp.float64),), order=1, modes=("fwd", "rev"), atol=1e-5, rtol=1e-5)


def check_masked_rows(c):
  weights = jnp.asarray(RNG.standard_normal(2 * B), jnp.float32)
  grad = jax.grad(lambda x: jnp.sum(call(c, x, where=X_MASK) * weights))(X)
  assert np.all(np.isfinite(grad))
  assert np.all(grad[2] == 0) and np.all(grad[~X_MASK] == 0)
  if c.target == "int":
    assert np.all(grad[4] == 0)
  # -inf logits count as masked.
  inf = jnp.where(X_MASK, X, -jnp.inf)
  np.testing.assert_allclose(call(c, inf), call(c, X, where=X_MASK), rtol=1e-6, atol=1e-6)


def check_jit_vmap_and_batch_shapes(c):
  target = X_TARGETS[c.target]
  args = (X,) if target is None else (X, target)
  f = lambda *a: c.fn(*a, where=X_MASK[0])

  @jax.jit  # one program: cheaper than running vmap and new shapes eagerly
  def transformed(*args):
    grid = f(*(a.reshape((2, B) + a.shape[1:]) for a in args))  # two example axes
    return f(*args), jax.vmap(f)(*args), grid

  want = f(*args)
  jitted, vmapped, grid = transformed(*args)
  np.testing.assert_allclose(jitted, want, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(vmapped, want, rtol=1e-6, atol=1e-6)
  assert grid.shape == (2, B)
  np.testing.assert_allclose(grid.reshape(-1), want, rtol=1e-6, atol=1e-6)


def check_low_precision(c):
  for dtype in (jnp.bfloat16, jnp.float16):
    x = jnp.asarray(X, dtype)
    got = call(c, x, where=X_MASK)
    assert got.dtype == jnp.float32
    want = rowwise(c, np.asarray(x.astype(jnp.float32)), X_MASK)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# check_values runs in ReferenceValues, with and without jit.
GENERIC_CHECKS = {
    "float64": check_float64,
    "gradients": check_gradients,
    "masked_rows": check_masked_rows,
    "jit_vmap_and_batch_shapes": check_jit_vmap_and_batch_shapes,
    "low_precision": check_low_precision,
}
X64_CHECKS = {"float64", "gradients"}


def run_check(check, c, request):
  if check in X64_CHECKS:
    request.getfixturevalue("x64")
  GENERIC_CHECKS[check](c)


@pytest.mark.parametrize("check", sorted(GENERIC_CHECKS))
@pytest.mark.parametrize("name", names())
def test_generic(name, check, request):
  run_check(check, CASES[name], request)


class ReferenceValues(chex.TestCase):
  """Every case against its float64 NumPy reference, with and without jit (as optax's tests)."""

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters((name, name) for name in names())
  def test_values(self, name):
    check_values(CASES[name], self.variant)


# ---------------------------------------------------------------------------
# Properties: no NaN/inf for finite logits in [-1e4, 1e4], any mask.
# ---------------------------------------------------------------------------

FINITE = hnp.arrays(np.float32, (3, K), elements=st.floats(-1e4, 1e4, width=32))
CLUSTERED = hnp.arrays(np.float32, (3, K), elements=st.sampled_from([-1e4, -3.0, 0.0, 1.0, 1e4]))
MASKS = hnp.arrays(np.bool_, (3, K))
LABEL_ARRAYS = hnp.arrays(np.int32, 3, elements=st.integers(0, K - 1))


@functools.cache
def values_and_grads(names_):
  """One jit for all the named cases: name -> (summed loss, its gradient).

  A NaN/inf anywhere shows in both. One program compiles about twice as fast
  as one per case.
  """
  cases = all_cases()

  def evaluate(x, targets, where):
    out = {}
    for name in names_:
      c = cases[name]
      total = lambda x: jnp.sum(call(c, x, where=where, target=targets[c.target]))
      out[name] = jax.value_and_grad(total)(x)
    return out

  return jax.jit(evaluate)


def property_targets(labels, seed):
  rng = np.random.default_rng(seed)
  return {
      "int": labels,
      "probs": rng.dirichlet(np.ones(K), 3).astype(np.float32),
      "multi": (rng.random((3, K)) > 0.5).astype(np.float32),
      "none": np.zeros(3, np.float32),
  }


def check_finite_everywhere(names_, x, where, labels, seed):
  results = values_and_grads(tuple(names_))(x, property_targets(labels, seed), where)
  for name, (value, grad) in results.items():
    assert np.isfinite(value) and np.all(np.isfinite(grad)), name


@given(x=st.one_of(FINITE, CLUSTERED), where=MASKS, labels=LABEL_ARRAYS, seed=st.integers(0, 99))
def test_property_finite_values_and_gradients(x, where, labels, seed):
  check_finite_everywhere(names(), x, where, labels, seed)


# ---------------------------------------------------------------------------
# The papers' special cases and identities.
# ---------------------------------------------------------------------------


def ce(x=RANDOM, labels=LABELS, **kw):
  return L.softmax_cross_entropy(x, labels, **kw)


@pytest.mark.parametrize("x", [RANDOM, EXTREME], ids=["random", "extreme"])
def test_reductions_to_cross_entropy(x):
  want = ce(x, where=MASK)
  for got in [
      L.poly1_cross_entropy(x, LABELS, where=MASK, epsilon=0.0),
      L.focal_loss(x, LABELS, where=MASK, gamma=0.0),
      L.softmax_cross_entropy(x, LABELS, where=MASK, label_smoothing=0.0),
      L.sce(x, LABELS, where=MASK, alpha=1.0, beta=0.0),
      L.maxsup_cross_entropy(x, LABELS, where=MASK, alpha=0.0),
      L.ldam(x / 2, LABELS, where=MASK, margins=jnp.zeros(K), scale=2.0),
      L.soft_cross_entropy(x, jax.nn.one_hot(LABELS, K), where=MASK),
  ]:
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_gce_approaches_cross_entropy_as_q_vanishes():
  np.testing.assert_allclose(L.gce(RANDOM, LABELS, q=1e-4), ce(), rtol=1e-3)


def test_stablemax_ce_is_softmax_ce_of_log_s():
  log_s = np.where(RANDOM >= 0, np.log1p(np.maximum(RANDOM, 0)), -np.log1p(-np.minimum(RANDOM, 0)))
  np.testing.assert_allclose(
      L.stablemax_cross_entropy(RANDOM, LABELS, where=MASK), ce(log_s, where=MASK), rtol=1e-6
  )


def test_stablemax_ce_default_dtype_follows_x64():
  assert L.stablemax_cross_entropy(X, X_LABELS).dtype == jnp.float32
  with jax.enable_x64(True):
    assert L.stablemax_cross_entropy(X, X_LABELS).dtype == jnp.float64
    assert L.stablemax_cross_entropy(X, X_LABELS, dtype=jnp.float32).dtype == jnp.float32
    assert L.softmax_cross_entropy(X, X_LABELS).dtype == jnp.float32


def test_label_smoothing_and_maxsup_regularizer_forms():
  a = 0.3
  x = np.asarray(RANDOM, np.float64)
  z_y = x[np.arange(B), LABELS]
  ls = ce(RANDOM, label_smoothing=a)
  np.testing.assert_allclose(ls, ce() + a * (z_y - x.mean(-1)), rtol=1e-5)
  maxsup = L.maxsup_cross_entropy(RANDOM, LABELS, alpha=a)
  np.testing.assert_allclose(maxsup, ce() + a * (x.max(-1) - x.mean(-1)), rtol=1e-5)
  top1 = x.argmax(-1) == LABELS
  assert top1.any() and not top1.all()
  np.testing.assert_allclose(maxsup[top1], ls[top1], rtol=1e-6)
  assert np.all(maxsup[~top1] > ls[~top1])  # MaxSup also penalizes confident mistakes


def test_gce_limits():
  np.testing.assert_allclose(L.gce(RANDOM, LABELS, q=1.0), L.mae(RANDOM, LABELS) / 2, rtol=1e-6)
  k, x = 0.4, 3 * X
  truncated = L.truncated_gce(x, X_LABELS, k=k)
  p_y = np.exp(-np.asarray(ce(x, X_LABELS)))
  assert (p_y <= k).any() and (p_y > k).any()
  np.testing.assert_allclose(truncated[p_y <= k], (1 - k**0.7) / 0.7, rtol=1e-6)
  np.testing.assert_allclose(truncated[p_y > k], L.gce(x, X_LABELS)[p_y > k], rtol=1e-6)
  grad = jax.grad(lambda x: jnp.sum(L.truncated_gce(x, X_LABELS, k=k)))(x)
  assert np.all(grad[p_y <= k] == 0) and np.all(np.any(grad[p_y > k] != 0, axis=-1))


def test_sigmoid_bce_matches_optax_and_asl_special_case():
  want = optax.sigmoid_binary_cross_entropy(RANDOM, MULTI).sum(-1)
  np.testing.assert_allclose(L.sigmoid_binary_cross_entropy(RANDOM, MULTI), want, rtol=1e-6)
  asl = L.asl(RANDOM, MULTI, gamma_pos=0.0, gamma_neg=0.0, clip=0.0)
  np.testing.assert_allclose(asl, want, rtol=1e-5)


def test_asl_down_weights_easy_negatives():
  x = jnp.array([[-6.0, -1.0, 2.0]])
  y = jnp.zeros((1, 3))
  per_class = lambda i: L.asl(x[:, i : i + 1], y[:, i : i + 1])
  assert float(per_class(0)[0]) == 0.0  # p = sigmoid(-6) < clip: discarded
  assert 0 < float(per_class(1)[0]) < float(L.sigmoid_binary_cross_entropy(x[:, 1:2], y[:, 1:2])[0])


@pytest.mark.parametrize("loss, normalizer", [
    (L.sparsemax_loss, "sparsemax"), (L.entmax15_loss, "entmax15")])
def test_fenchel_young_gradient_and_zero_loss(loss, normalizer):
  grad = jax.grad(lambda x: jnp.sum(loss(x, X_LABELS, where=X_MASK)))(X)
  want = normalizers.get(normalizer)(X, where=X_MASK) - jax.nn.one_hot(X_LABELS, K)
  valid = X_MASK[np.arange(2 * B), X_LABELS]
  np.testing.assert_allclose(grad[valid], np.where(X_MASK, want, 0)[valid], atol=1e-6)
  separated = 10.0 * jax.nn.one_hot(X_LABELS, K)
  np.testing.assert_array_equal(loss(separated, X_LABELS), 0.0)
  assert np.all(np.asarray(loss(X, X_LABELS)) >= 0)


def test_metric_losses_with_soft_labels():
  # Zero exactly when the prediction equals the soft target, positive elsewhere.
  logits = np.log(PROBS)
  for loss in (L.jaccard_metric_loss, L.dice_metric_loss):
    np.testing.assert_allclose(loss(logits, PROBS), 0.0, atol=1e-6)
    assert np.all(np.asarray(loss(RANDOM, PROBS)) > 0.01)
  # Hard labels: JML = 2 (1 - p_y) / (2 - p_y), DML = 1 - p_y.
  p_y = np.exp(-np.asarray(ce(), np.float64))
  np.testing.assert_allclose(L.jaccard_metric_loss(RANDOM, LABELS), 2 * (1 - p_y) / (2 - p_y), rtol=1e-5)
  np.testing.assert_allclose(L.dice_metric_loss(RANDOM, LABELS), 1 - p_y, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(
      L.jaccard_metric_loss(RANDOM, LABELS), L.jaccard_metric_loss(RANDOM, jax.nn.one_hot(LABELS, K)), rtol=1e-6
  )


def test_ldam_margins_and_drw_weights():
  counts = np.array([5000, 500, 50, 5])
  margins = L.ldam_margins(counts, max_margin=0.5)
  np.testing.assert_allclose(margins, 0.5 * (counts / 5.0) ** -0.25, rtol=1e-6)
  x = RANDOM[:4, :4]
  labels = np.array([0, 1, 2, 3])
  got = L.ldam(x, labels, margins=margins)
  want = [ref_ldam(np.asarray(x[i], np.float64), labels[i], margin=float(margins[i])) for i in range(4)]
  np.testing.assert_allclose(got, want, rtol=1e-5)
  weights = L.drw_class_weights(counts, beta=0.999)
  effective = (1 - 0.999**counts) / (1 - 0.999)
  np.testing.assert_allclose(weights, (1 / effective) / (1 / effective).sum() * 4, rtol=1e-6)
  assert np.all(np.diff(weights) > 0)
  np.testing.assert_allclose(L.drw_class_weights(counts, beta=0.0), 1.0)


def test_z_loss_and_maxsup_regularizer_do_not_need_labels():
  np.testing.assert_allclose(L.z_loss(RANDOM), jax.nn.logsumexp(RANDOM, -1) ** 2, rtol=1e-6)
  assert np.all(np.asarray(L.maxsup_regularizer(RANDOM)) > 0)
  np.testing.assert_array_equal(L.maxsup_regularizer(np.zeros((2, 5))), 0.0)


def test_label_smoothing_counts_only_kept_classes():
  where = np.array([True] * 4 + [False] * 3)
  got = L.softmax_cross_entropy(RANDOM, LABELS % 4, where=where, label_smoothing=0.1)
  want = L.softmax_cross_entropy(RANDOM[:, :4], LABELS % 4, label_smoothing=0.1)
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_training_a_linear_classifier_end_to_end():
  # What a user does: jit(grad(mean loss)) steps on a linear model.
  rng = np.random.default_rng(1)
  centers = 3 * rng.standard_normal((4, 5))
  labels = rng.integers(0, 4, 64)
  inputs = (centers[labels] + rng.standard_normal((64, 5))).astype(np.float32)

  @jax.jit
  def train():  # one program for all the losses: one compilation
    results = {}
    for name in ("stablemax_cross_entropy", "sparsemax_loss", "jaccard_metric_loss"):
      objective = lambda w, loss=L.get(name): jnp.mean(loss(inputs @ w, labels))
      w0 = jnp.zeros((5, 4))
      w = jax.lax.fori_loop(0, 50, lambda _, w: w - 0.1 * jax.grad(objective)(w), w0)
      accuracy = jnp.mean(jnp.argmax(inputs @ w, -1) == labels)
      results[name] = (objective(w0), objective(w), accuracy)
    return results

  for name, (first, last, accuracy) in train().items():
    assert last < 0.5 * first and accuracy > 0.9, name


def test_registry():
  registered = set(L.names())
  assert set(classification.__all__) - {"ldam_margins", "drw_class_weights"} <= registered
  for name in classification.__all__:
    if name in registered:
      assert L.get(name) is getattr(L, name) is getattr(classification, name)
  with pytest.raises(ValueError, match="unknown loss 'softmax_crossentropy'; valid: "):
    L.get("softmax_crossentropy")


@pytest.mark.parametrize(
    "call_, message",
    [
        (lambda: ce(RANDOM, LABELS[:3]), r"labels of shape \(3,\) must have the shape of logits without the class axis, \(6,\)"),
        (lambda: ce(RANDOM, LABELS.astype(np.float32)), "labels must be integer class indices"),
        (lambda: ce(RANDOM, LABELS + 4), r"labels must lie in \[0, 7\)"),
        (lambda: ce(RANDOM, LABELS, where=MASK.astype(str)), "where must be a boolean or numeric"),
        (lambda: ce(RANDOM, LABELS, where=MASK[:, 0]), r"where of shape \(6,\) does not broadcast .*where\[\.\.\., None\]"),
        (lambda: ce(np.float32(1.0), LABELS), "logits must have a class axis"),
        (lambda: ce(RANDOM, LABELS, dtype=jnp.int32), "dtype must be a floating dtype"),
        (lambda: ce(RANDOM, LABELS, label_smoothing=1.5), r"label_smoothing must be in \[0, 1\]"),
        (lambda: L.gce(RANDOM, LABELS, q=0.0), r"q must be in \(0, 1\]"),
        (lambda: L.truncated_gce(RANDOM, LABELS, k=1.0), r"k must be in \(0, 1\)"),
        (lambda: L.focal_loss(RANDOM, LABELS, gamma=-1.0), "gamma must be >= 0"),
        (lambda: L.asl(RANDOM, MULTI, clip=1.0), r"clip must be in \[0, 1\)"),
        (lambda: L.soft_cross_entropy(RANDOM, PROBS[:, :3]), r"label_probs of shape \(6, 3\) does not broadcast"),
        (lambda: L.ldam(RANDOM, LABELS, margins=np.zeros(3)), r"margins of shape \(3,\) does not broadcast"),
        (lambda: L.ldam_margins([10, 0]), "class_counts must be a non-empty 1-D array of positive counts"),
        (lambda: L.drw_class_weights([10, 5], beta=1.0), r"beta must be in \[0, 1\)"),
    ],
)
def test_bad_arguments_raise_one_line_errors(call_, message):
  with pytest.raises(ValueError, match=message):
    call_()


# ---------------------------------------------------------------------------
# Wave 2: top-k CE, spherical Z-loss, comp-sum, SOVR, APL, multi-label sparsemax.
# ---------------------------------------------------------------------------


def test_topk_cross_entropy_is_at_most_ce_with_equality_at_k_equal_k():
  full = ce(X, X_LABELS, where=X_MASK)
  for k in (1, 3):
    assert np.all(np.asarray(L.topk_cross_entropy(X, X_LABELS, where=X_MASK, k=k)) <= full + 1e-6)
  for k in (K, 100):
    np.testing.assert_allclose(L.topk_cross_entropy(X, X_LABELS, where=X_MASK, k=k), full, rtol=1e-6)
  # Only the selected logits (top k and the label) get gradients.
  grad = jax.grad(lambda x: jnp.sum(L.topk_cross_entropy(x, LABELS, k=2)))(RANDOM)
  assert np.all(np.sum(grad != 0, axis=-1) <= 3)


def test_spherical_z_loss_invariances_and_constant_rows():
  x = np.asarray(RANDOM)
  want = L.spherical_z_loss(x, LABELS, where=MASK)
  for moved in (x + 7.0, 3.5 * x, 0.01 * x - 2.0):
    np.testing.assert_allclose(L.spherical_z_loss(moved, LABELS, where=MASK), want, rtol=1e-4)
  assert not np.allclose(L.spherical_z_loss(-x, LABELS, where=MASK), want)
  flat = jnp.full((2, K), 3.0)
  value, grad = jax.value_and_grad(lambda x: jnp.sum(L.spherical_z_loss(x, LABELS[:2])))(flat)
  np.testing.assert_allclose(value, 2 * np.logaddexp(0, 0.1 * 10.0) / 0.1, rtol=1e-6)
  assert np.all(np.isfinite(grad))
  # Not PaLM's z_loss: it depends on the label and ignores the scale of Z.
  assert not np.allclose(L.spherical_z_loss(x, LABELS), L.spherical_z_loss(x, (LABELS + 1) % K))


def ref_sum_exp(z, y):
  return np.exp(np.delete(z, y) - z[y]).sum()


def test_sum_exp_loss_against_numpy_and_one_over_p_minus_one(x64):
  got = L.sum_exp_loss(RANDOM, LABELS, where=MASK)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, rowwise(Case(None, ref_sum_exp, "int"), RANDOM, MASK), rtol=2e-5)
  p_y = np.exp(-np.asarray(ce(RANDOM, LABELS), np.float64))
  np.testing.assert_allclose(L.sum_exp_loss(RANDOM, LABELS), 1 / p_y - 1, rtol=1e-5)
  small = np.array([[30.0, 0.0, -2.0]])  # 1/p - 1 ~ 1e-13: expm1 keeps it
  np.testing.assert_allclose(L.sum_exp_loss(small, [0]), np.exp(-30.0) + np.exp(-32.0), rtol=1e-6)
  x64_rows = jnp.asarray(RANDOM, jnp.float64)
  where = MASK & (np.arange(B) != 2)[:, None]
  check_grads(lambda x: L.sum_exp_loss(x, LABELS, where=where), (x64_rows,), order=1,
              modes=("fwd", "rev"), atol=1e-5, rtol=1e-5)
  grad = jax.grad(lambda x: jnp.sum(L.sum_exp_loss(x, LABELS, where=MASK)))(RANDOM)
  assert np.all(grad[2] == 0) and np.all(grad[4] == 0) and np.all(grad[~MASK] == 0)


def ref_ovr_logistic(z, y):
  t = -np.ones(len(z))
  t[y] = 1.0
  return np.logaddexp(0.0, -t * z).sum()


def ref_sovr(x, labels, where, f):
  x = np.asarray(x, np.float64)
  rows = range(len(x))
  valid = [where[i].any() and where[i, labels[i]] for i in rows]
  margins = [x[i, labels[i]] - np.max(np.where(where[i] & (np.arange(x.shape[1]) != labels[i]), x[i], -np.inf))
             for i in rows]
  order = sorted((i for i in rows if valid[i]), key=lambda i: (margins[i], i))
  switched = set(order[: int(np.ceil(f * len(order)))])
  ce_case, ovr_case = Case(None, ref_softmax_ce, "int"), Case(None, ref_ovr_logistic, "int")
  ce_rows, ovr_rows = rowwise(ce_case, x, where, labels), rowwise(ovr_case, x, where, labels)
  return np.where([i in switched for i in rows], ovr_rows, ce_rows)


def test_sovr_switches_the_smallest_margins_to_one_vs_rest():
  for f in (0.0, 0.3, 0.5, 1.0):
    got = L.sovr(RANDOM, LABELS, where=MASK, switch_fraction=f)
    np.testing.assert_allclose(got, ref_sovr(RANDOM, LABELS, MASK, f), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(L.sovr(RANDOM, LABELS, where=MASK, switch_fraction=0.0),
                             ce(where=MASK), rtol=1e-6)
  grad = jax.grad(lambda x: jnp.sum(L.sovr(x, LABELS, where=MASK, switch_fraction=0.5)))(RANDOM)
  assert np.all(grad[2] == 0) and np.all(grad[4] == 0) and np.all(grad[~MASK] == 0)
  grid = L.sovr(RANDOM.reshape(2, 3, K), LABELS.reshape(2, 3), switch_fraction=0.5)
  np.testing.assert_allclose(grid.reshape(-1), L.sovr(RANDOM, LABELS, switch_fraction=0.5), rtol=1e-6)


def test_apl_special_cases():
  x = X
  nce = L.nce_rce(x, X_LABELS, where=X_MASK, beta=0.0)
  nfl = L.nfl(x, X_LABELS, where=X_MASK, gamma=0.0)
  np.testing.assert_allclose(nfl, nce, rtol=1e-6, atol=1e-7)
  for gamma in (0.5, 2.0):
    values = np.asarray(L.nfl(x, X_LABELS, where=X_MASK, gamma=gamma))
    assert np.all((values >= 0) & (values <= 1))
  mae = L.mae(x, X_LABELS, where=X_MASK)
  np.testing.assert_allclose(L.nce_mae(x, X_LABELS, where=X_MASK, alpha=0.0), mae, rtol=1e-6)
  np.testing.assert_allclose(L.nfl_mae(x, X_LABELS, where=X_MASK, alpha=0.0), mae, rtol=1e-6)
  np.testing.assert_allclose(L.nfl_rce(x, X_LABELS, where=X_MASK, alpha=0.0), 2 * mae, rtol=1e-6)


def ref_released_rce(z, y):
  """github.com/HanxunH/Active-Passive-Losses loss.py ReverseCrossEntropy, one example."""
  p = np.clip(softmax(z), 1e-7, 1.0)
  q = np.clip(one_hot(y, len(z)), 1e-4, 1.0)
  return -np.sum(p * np.log(q))


def ref_released_nfl_grad(z, y, gamma):
  """Gradient of the released NormalizedFocalLoss (same file): (1 - p_k)^gamma constant.

  L = w_y l_y / S, l_k = -log p_k, w_k = (1 - p_k)^gamma, S = sum_k w_k l_k;
  dl_k / dz_j = p_j - [k = j].
  """
  p = softmax(z)
  w, l = (1 - p) ** gamma, -log_softmax(z)
  total = np.sum(w * l)
  dl_y = p - one_hot(y, len(z))
  d_total = p * np.sum(w) - w
  return w[y] * dl_y / total - w[y] * l[y] * d_total / total**2


def test_rce_paper_and_released_scales(x64):
  z = RANDOM.astype(np.float64)
  paper = np.array([ref_nce(zi, yi) + 4 * one_minus_p(zi, yi) for zi, yi in zip(z, LABELS)])
  np.testing.assert_allclose(L.nce_rce(z, LABELS), paper, rtol=1e-12)
  released = np.array([ref_nce(zi, yi) + ref_released_rce(zi, yi) for zi, yi in zip(z, LABELS)])
  got = L.nce_rce(z, LABELS, log_zero=np.log(1e-4))
  assert np.min(softmax(z)) > 1e-7  # no clamp: equal to float precision
  np.testing.assert_allclose(got, released, rtol=1e-12)
  np.testing.assert_allclose(L.nce_rce(z, LABELS, beta=-np.log(1e-4) / 4), got, rtol=1e-12)
  tiny = z.copy()
  tiny[:, 0] = -40.0  # p_0 < 1e-7: the released clamp adds at most 9.21 (K - 1) 1e-7
  got = L.nfl_rce(tiny, LABELS, alpha=0.0, log_zero=np.log(1e-4))
  want = np.array([ref_released_rce(zi, yi) for zi, yi in zip(tiny, LABELS)])
  assert 0 < np.max(np.abs(got - want)) <= -np.log(1e-4) * (K - 1) * 1e-7


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_nfl_detached_focal_weights_give_the_released_gradient(x64, gamma):
  z = RANDOM.astype(np.float64)
  detached = lambda x: jnp.sum(L.nfl(x, LABELS, gamma=gamma, detach_focal_weights=True))
  np.testing.assert_allclose(L.nfl(z, LABELS, gamma=gamma, detach_focal_weights=True),
                             L.nfl(z, LABELS, gamma=gamma), rtol=1e-14)
  want = np.array([ref_released_nfl_grad(zi, yi, gamma) for zi, yi in zip(z, LABELS)])
  np.testing.assert_allclose(jax.grad(detached)(z), want, rtol=1e-10, atol=1e-14)
  true_grad = jax.grad(lambda x: jnp.sum(L.nfl(x, LABELS, gamma=gamma)))(z)
  assert not np.allclose(true_grad, want)
  nfl_rce = lambda x: jnp.sum(L.nfl_rce(x, LABELS, gamma=gamma, detach_focal_weights=True))
  p_y = np.array([softmax(zi)[yi] for zi, yi in zip(z, LABELS)])[:, None]
  rce_grad = 4 * p_y * (np.array([softmax(zi) for zi in z]) - np.eye(K)[LABELS])  # 4 (1 - p_y)
  np.testing.assert_allclose(jax.grad(nfl_rce)(z), want + rce_grad, rtol=1e-10, atol=1e-14)


def test_multilabel_sparsemax_loss_gradient_and_one_hot_case():
  one_hot = jax.nn.one_hot(X_LABELS, K)
  np.testing.assert_allclose(L.multilabel_sparsemax_loss(X, one_hot, where=X_MASK),
                             L.sparsemax_loss(X, X_LABELS, where=X_MASK), rtol=1e-6, atol=1e-6)
  targets = MULTI * X_MASK[:B]
  grad = jax.grad(lambda x: jnp.sum(L.multilabel_sparsemax_loss(x, MULTI, where=MASK)))(RANDOM)
  q = targets / np.maximum(targets.sum(-1, keepdims=True), 1)
  want = np.where(MASK, normalizers.sparsemax(RANDOM, where=MASK) - q, 0)
  has_labels = targets.sum(-1) > 0
  np.testing.assert_allclose(grad[has_labels], want[has_labels], atol=1e-6)
  assert np.all(grad[~has_labels] == 0)
  separated = 10.0 * MULTI[:1] * np.array([[1, 0, 0, 0, 0, 0, 0]])  # p = q = e_0
  np.testing.assert_allclose(L.multilabel_sparsemax_loss(separated, np.eye(K)[:1]), 0.0, atol=1e-6)


def test_ovr_squared_hinge_is_zero_beyond_the_margins():
  t = 2 * jax.nn.one_hot(LABELS, K) - 1
  np.testing.assert_array_equal(L.ovr_squared_hinge(1.5 * t, LABELS), 0.0)
  np.testing.assert_allclose(L.ovr_squared_hinge(0.5 * t, LABELS), K * 0.25, rtol=1e-6)


@pytest.mark.parametrize(
    "call_, message",
    [
        (lambda: L.topk_cross_entropy(RANDOM, LABELS, k=0), "k must be a positive int"),
        (lambda: L.spherical_z_loss(RANDOM, LABELS, a=0.0), "a must be > 0"),
        (lambda: L.sovr(RANDOM, LABELS, switch_fraction=1.5), r"switch_fraction must be in \[0, 1\]"),
        (lambda: L.nfl(RANDOM, LABELS, gamma=-1.0), "gamma must be >= 0"),
        (lambda: L.multilabel_sparsemax_loss(RANDOM, MULTI[:, :3]), r"label_matrix of shape \(6, 3\) does not broadcast"),
    ],
)
def test_wave2_bad_arguments_raise_one_line_errors(call_, message):
  with pytest.raises(ValueError, match=message):
    call_()


def ref_noisy_softmax(x, labels, where, xi, alpha, norm_product=None):
  """float64: CE with alpha |xi| (free noise) or alpha (r - z_y) |xi| (annealed noise) taken
  off the label's logit."""
  x = np.asarray(x, np.float64)
  out = np.zeros(len(x))
  for i in range(len(x)):
    kept = where[i]
    if not kept[labels[i]]:
      continue
    z = x[i].copy()
    amplitude = 1.0 if norm_product is None else norm_product[i] - z[labels[i]]
    z[labels[i]] -= alpha * amplitude * abs(xi[i])
    out[i] = lse(z[kept]) - z[labels[i]]
  return out


def test_noisy_softmax_against_numpy_and_alpha_zero_is_cross_entropy(x64):
  key = jax.random.key(3)
  norm_product = np.abs(RANDOM).sum(-1) + 1.0

  @jit
  def run(x):
    def total(x):
      return jnp.sum(L.noisy_softmax_cross_entropy(x, LABELS, key=key, where=MASK, alpha=0.5))
    return {
        "free": L.noisy_softmax_cross_entropy(x, LABELS, key=key, where=MASK, alpha=0.5),
        "annealed": L.noisy_softmax_cross_entropy(x, LABELS, key=key, where=MASK, alpha=0.5,
                                                  norm_product=norm_product),
        "zero": L.noisy_softmax_cross_entropy(x, LABELS, key=key, where=MASK, alpha=0.0),
        "ce": L.softmax_cross_entropy(x, LABELS, where=MASK),
        "halfway": L.noisy_softmax_cross_entropy(x, LABELS, key=key, step=5, where=MASK,
                                                 alpha=1.0, anneal_steps=10),
        "annealed_away": L.noisy_softmax_cross_entropy(x, LABELS, key=key, step=12, where=MASK,
                                                       alpha=1.0, anneal_steps=10),
        "grad": jax.grad(total)(x),
        "xi": jax.random.normal(key, (B,), jnp.float32),
    }

  got = run(RANDOM)
  xi = np.asarray(got["xi"], np.float64)
  np.testing.assert_allclose(got["free"], ref_noisy_softmax(RANDOM, LABELS, MASK, xi, 0.5),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got["annealed"], ref_noisy_softmax(RANDOM, LABELS, MASK, xi, 0.5,
                                                                norm_product), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(got["zero"], got["ce"])  # alpha = 0: CE exactly
  np.testing.assert_allclose(got["halfway"], got["free"], rtol=1e-6)  # alpha_t = 1 * (1 - 5/10)
  np.testing.assert_array_equal(got["annealed_away"], got["ce"])
  valid = MASK[np.arange(B), LABELS] & MASK.any(-1)
  assert np.all(got["free"][valid] > got["ce"][valid])  # the noise only lowers z_y
  assert np.all(got["free"][~valid] == 0) and np.all(got["grad"][~valid] == 0)
  assert np.all(got["grad"][~MASK] == 0) and np.all(np.isfinite(got["grad"]))
  with pytest.raises(ValueError, match="key: a PRNG key is required"):
    L.noisy_softmax_cross_entropy(RANDOM, LABELS, alpha=0.1)
  with pytest.raises(ValueError, match="step: required with anneal_steps"):
    L.noisy_softmax_cross_entropy(RANDOM, LABELS, key=key, anneal_steps=10)


def test_noisy_softmax_is_the_papers_equations_5_and_6_on_a_linear_head(x64):
  """Eq. (5): f_y - alpha |W_y| |X| (1 - cos theta_y) |xi|, from explicit weights and features."""
  rng = np.random.default_rng(5)
  weights, features = rng.standard_normal((K, 4)), rng.standard_normal((B, 4))
  logits = features @ weights.T
  labels = np.arange(B) % K
  key = jax.random.key(7)
  xi = np.asarray(jax.random.normal(key, (B,), jnp.float64))
  norms = np.linalg.norm(weights[labels], axis=-1) * np.linalg.norm(features, axis=-1)
  cos = np.einsum("bd,bd->b", weights[labels], features) / norms
  want = np.zeros(B)
  for i in range(B):
    f = logits[i].copy()
    f[labels[i]] -= 0.3 * norms[i] * (1 - cos[i]) * abs(xi[i])  # Eq. (5)
    want[i] = -(f[labels[i]] - lse(f))  # Eq. (6), one example
  got = L.noisy_softmax_cross_entropy(logits, labels, key=key, alpha=0.3, norm_product=norms)
  np.testing.assert_allclose(got, want, rtol=1e-12)


def test_classification_loss_inputs_are_checked_at_registration():
  assert L.info("noisy_softmax_cross_entropy").inputs == ("key", "step")
  with pytest.raises(ValueError, match=r"unknown input\(s\) cos for a classification loss; "
                                       r"valid: key, step"):
    L.REGISTRY.register("bad_inputs", kind="classification", inputs=("cos",))
  with pytest.raises(ValueError, match=r"unknown input\(s\) key for a pairwise loss; valid: none"):
    L.REGISTRY.register("bad_inputs", kind="pairwise", inputs=("key",))
