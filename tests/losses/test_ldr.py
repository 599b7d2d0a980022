"""LDR losses and their baselines against float64 NumPy references, plus the paper's special cases.

The generic checks (values incl. extreme logits, float64, gradients, masks,
jit/vmap, low precision, no NaN/inf) come from test_classification's harness.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from hypothesis import given
from hypothesis import strategies as st
from test_classification import (
    CLUSTERED,
    FINITE,
    GENERIC_CHECKS,
    LABEL_ARRAYS,
    MASKS,
    X,
    X_LABELS,
    X_MASK,
    Case,
    case,
    check_finite_everywhere,
    check_values,
    log_softmax,
    lse,
    ref_nce,
    register_cases,
    run_check,
    softmax,
)

import softlab.losses as L
from softlab.losses import ldr

# ---------------------------------------------------------------------------
# Independent float64 references on one example's kept logits z, label index y.
# ---------------------------------------------------------------------------


def normalize(z, mode):
  if mode is None:
    return z
  if mode == "softplus":
    z = np.logaddexp(0.0, z)
  scale = np.abs(z).mean()
  return z / scale if scale > 0 else z


def ref_ldr_kl(z, y, lam=1.0, margin=0.1, normalize_logits=None):
  z = normalize(z, normalize_logits)
  u = z - z[y] + margin * (np.arange(len(z)) != y)
  return lam * (lse(u / lam) - np.log(len(z)))


def ref_aldr_kl(z, y, lam=7.0, lam0=10.0, alpha=2.0, margin=0.1, normalize_logits=None):
  """(loss, new lambda) of one visit."""
  z = normalize(z, normalize_logits)
  log_k = np.log(len(z))
  p = softmax(z / lam)
  kl = np.clip(sum(pk * np.log(pk) for pk in p if pk > 0) + log_k, 0, log_k)
  new = lam0 * (1 - kl / (alpha * log_k)) if len(z) > 1 else lam0
  loss = ref_ldr_kl(z, y, lam=new, margin=margin) - alpha * log_k / (2 * lam0) * (new - lam0) ** 2
  return loss, new


def ref_crammer_singer(z, y, margin=1.0):
  others = np.delete(z, y)
  return max(0.0, (margin + others - z[y]).max()) if len(others) else 0.0


def ref_weston_watkins(z, y, margin=1.0):
  return np.maximum(0.0, margin + np.delete(z, y) - z[y]).sum()


def ref_rll(z, y, alpha=0.1):
  p = softmax(z)
  others = np.delete(p, y)
  spread = np.log(alpha + others).mean() if len(others) else 0.0
  return np.log((alpha + 1) / alpha) - np.log(alpha + p[y]) + spread


def ref_js(z, y, pi1=0.5):
  p = softmax(z)
  e = np.zeros(len(z))
  e[y] = 1.0
  m = pi1 * e + (1 - pi1) * p
  kl = lambda a, b: sum(ai * np.log(ai / bi) for ai, bi in zip(a, b) if ai > 0)
  return (pi1 * kl(e, m) + (1 - pi1) * kl(p, m)) / (-(1 - pi1) * np.log(1 - pi1))


def ref_nce_agce(z, y, alpha=1.0, beta=4.0, a=6.0, q=1.5):
  p_y = np.exp(log_softmax(z)[y])
  return alpha * ref_nce(z, y) + beta * ((a + 1) ** q - (a + p_y) ** q) / q


def ref_nce_aul(z, y, alpha=1.0, beta=4.0, a=6.3, p=1.5):
  p_y = np.exp(log_softmax(z)[y])
  return alpha * ref_nce(z, y) + beta * ((a - p_y) ** p - (a - 1) ** p) / p


def aldr_loss(logits, labels, *, where=None, lam=7.0, **kwargs):
  return L.aldr_kl(logits, labels, lam, where=where, **kwargs)[0]


def ref_aldr_loss(z, y, **kwargs):
  return ref_aldr_kl(z, y, **kwargs)[0]


CASES = {
    "ldr_kl": case(L.ldr_kl, ref_ldr_kl),
    "ldr_kl_mean_abs": case(L.ldr_kl, ref_ldr_kl, lam=10.0, normalize_logits="mean_abs"),
    "ldr_kl_softplus": case(L.ldr_kl, ref_ldr_kl, normalize_logits="softplus"),
    "aldr_kl": Case(aldr_loss, ref_aldr_loss, "int"),
    "crammer_singer": case(L.crammer_singer, ref_crammer_singer),
    "weston_watkins": case(L.weston_watkins, ref_weston_watkins),
    "rll": case(L.rll, ref_rll),
    "js": case(L.js, ref_js),
    "js_pi_0.9": case(L.js, ref_js, pi1=0.9),
    "nce_agce": case(L.nce_agce, ref_nce_agce),
    "nce_aul": case(L.nce_aul, ref_nce_aul),
}
register_cases(CASES)
# ALDR-KL's lambda moves with the logits but carries no gradient (the paper's
# stop-gradient), so finite differences of its value are not its gradient;
# test_aldr_kl_gradient_is_ldr_kl_at_the_new_lambda checks it instead.
GENERIC = [
    (name, check)
    for name in sorted(CASES)
    for check in sorted(GENERIC_CHECKS)
    if not (name.startswith("aldr") and check == "gradients")
]


@pytest.mark.parametrize("name, check", GENERIC)
def test_generic(name, check, request):
  run_check(check, CASES[name], request)


class ReferenceValues(chex.TestCase):
  """Every case against its float64 NumPy reference, with and without jit."""

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters((name, name) for name in sorted(CASES))
  def test_values(self, name):
    check_values(CASES[name], self.variant)


@given(x=st.one_of(FINITE, CLUSTERED), where=MASKS, labels=LABEL_ARRAYS, seed=st.integers(0, 99))
def test_property_finite_values_and_gradients(x, where, labels, seed):
  check_finite_everywhere(sorted(CASES), x, where, labels, seed)


# ---------------------------------------------------------------------------
# The paper's special cases.
# ---------------------------------------------------------------------------

RANDOM = X[:6]
LABELS = X_LABELS[:6]
MASK = X_MASK[:6]
VALID = MASK[np.arange(6), LABELS]


def test_ldr_kl_with_margin_0_and_lam_1_is_cross_entropy_minus_log_k():
  got = L.ldr_kl(X, X_LABELS, where=X_MASK, lam=1.0, margin=0.0)
  log_k = np.log(np.maximum(X_MASK.sum(-1), 1))
  ce = L.softmax_cross_entropy(X, X_LABELS, where=X_MASK)
  valid = X_MASK[np.arange(12), X_LABELS]
  np.testing.assert_allclose(got, np.where(valid, ce - log_k, 0), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("x", [RANDOM, X[6:]], ids=["random", "extreme"])
def test_ldr_kl_tends_to_crammer_singer_as_lam_vanishes(x):
  lams = (1.0, 1e-1, 1e-2, 1e-3, 1e-5)
  cs, *ldr_values = jax.jit(  # one program for all the lambdas
      lambda x: [L.crammer_singer(x, LABELS, margin=0.1)]
      + [L.ldr_kl(x, LABELS, lam=lam, margin=0.1) for lam in lams])(x)
  cs = np.asarray(cs, np.float64)
  log_k = np.log(x.shape[-1])
  previous = np.inf
  for lam, ldr_value in zip(lams, ldr_values):
    ldr_value = np.asarray(ldr_value, np.float64)
    # lam (log sum exp(u / lam) - log K) lies in [max u - lam log K, max u].
    assert np.all(ldr_value <= cs + 1e-3 * np.abs(cs) + 1e-6)
    assert np.all(ldr_value >= cs - lam * log_k - 1e-3 * np.abs(cs) - 1e-6)
    gap = np.max(np.abs(ldr_value - cs))
    assert gap <= previous + 1e-6
    previous = gap
  assert previous < 1e-4 * max(1.0, np.abs(cs).max())


def test_ldr_kl_tends_to_the_mean_gap_as_lam_grows(x64):
  x = np.asarray(RANDOM, np.float64)
  u = x - x[np.arange(6), LABELS][:, None] + 0.1 * (np.arange(7) != LABELS[:, None])
  np.testing.assert_allclose(L.ldr_kl(x, LABELS, lam=1e8), u.mean(-1), rtol=1e-5, atol=1e-6)


def test_logit_normalizations():
  # Values against the reference are in the generic checks; here: what they are for.
  base = L.ldr_kl(RANDOM, LABELS, where=MASK, normalize_logits="mean_abs")
  scaled = L.ldr_kl(7.5 * RANDOM, LABELS, where=MASK, normalize_logits="mean_abs")
  np.testing.assert_allclose(scaled, base, rtol=1e-5)  # scale invariant
  softplus = L.ldr_kl(RANDOM, LABELS, where=MASK, normalize_logits="softplus")
  shifted = L.ldr_kl(RANDOM - 30.0, LABELS, where=MASK, normalize_logits="softplus")
  assert np.all(np.isfinite(shifted)) and not np.allclose(softplus, shifted)
  # A row with mean absolute value 0 is left as it is.
  zeros = np.zeros((2, 7), np.float32)
  np.testing.assert_allclose(
      L.ldr_kl(zeros, LABELS[:2], normalize_logits="mean_abs"), L.ldr_kl(zeros, LABELS[:2]), rtol=1e-6
  )


# NumPy transcriptions of the released losses (Optimization-AI/ICML2023_LDR, loss.py), one
# row each, float64: LDRLoss_V1 and ALDRLoss_V1 before their batch means.


def released_ldr(f, y, lam, margin):
  """LDRLoss_V1: softplus, divide by the row mean, then lam log mean exp(gaps / lam)."""
  f = np.logaddexp(0.0, f)
  f = f / f.mean()
  gaps = (margin * (np.arange(len(f)) != y) + f - f[y]) / lam
  top = gaps.max()
  return lam * (np.log(np.mean(np.exp(gaps - top))) + top)


def released_aldr(f, y, lam_old, lam0, alpha, margin):
  """ALDRLoss_V1 without softplus (all datasets but CIFAR-100): (loss, new lambda)."""
  k = len(f)
  f = f / (np.abs(f).sum() / k)
  p = np.exp(f / lam_old - np.max(f / lam_old))
  p = p / p.sum() + 1e-5
  p = p / p.sum()
  kl = np.sum(p * np.log(k * p))
  lam = lam0 - lam0 * kl / (alpha * np.log(k))
  gaps = (margin * (np.arange(k) != y) + f - f[y]) / lam
  top = gaps.max()
  penalty = -0.5 * alpha * np.log(k) / lam0 * (lam - lam0) ** 2
  return lam * (np.log(np.mean(np.exp(gaps - top))) + top) + penalty, lam


@pytest.mark.parametrize("num_classes", [10, 26, 100])
def test_ldr_kl_softplus_is_the_released_ldr_loss(num_classes):
  rng = np.random.default_rng(num_classes)
  f = 3 * rng.standard_normal((8, num_classes))
  y = rng.integers(0, num_classes, 8)
  want = [released_ldr(f[i], y[i], lam=10.0, margin=0.1) for i in range(8)]
  got = L.ldr_kl(f.astype(np.float32), y, lam=10.0, margin=0.1, normalize_logits="softplus")
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # The rule matters: mean |f| without softplus is another loss.
  other = L.ldr_kl(f.astype(np.float32), y, lam=10.0, margin=0.1, normalize_logits="mean_abs")
  assert np.max(np.abs(np.asarray(other) - want)) > 1e-2


@pytest.mark.parametrize("num_classes", [10, 26, 100])
def test_aldr_kl_mean_abs_is_the_released_aldr_loss(num_classes):
  rng = np.random.default_rng(num_classes)
  f = 3 * rng.standard_normal((8, num_classes))
  y = rng.integers(0, num_classes, 8)
  lam_old = rng.uniform(5.0, 10.0, 8)
  want = [released_aldr(f[i], y[i], lam_old[i], 10.0, 2.0, 0.1) for i in range(8)]
  loss, lam = L.aldr_kl(f.astype(np.float32), y, lam_old.astype(np.float32), lam0=10.0,
                        alpha=2.0, margin=0.1, normalize_logits="mean_abs")
  # The released update smooths p by 1e-5 (module doc): lambda agrees to 1e-3 lam0.
  np.testing.assert_allclose(lam, [w[1] for w in want], atol=1e-2)
  np.testing.assert_allclose(loss, [w[0] for w in want], atol=1e-2)


@pytest.mark.parametrize("num_classes, fixed_point", [(10, 9.84), (26, 8.87), (49, 5.04)])
def test_aldr_kl_lambda_of_the_most_peaked_row_after_mean_abs(num_classes, fixed_point):
  # The row (1, 0, ..., 0) visited again and again: lambda settles where the
  # released rule puts it; at K = 10 it stays near lam0 = 10 by construction.
  f = np.zeros((1, num_classes), np.float32)
  f[0, 0] = 1.0
  lam, lam_released = np.full(1, 10.0, np.float32), 10.0
  for _ in range(30):
    _, lam = L.aldr_kl(f, np.zeros(1, int), lam, lam0=10.0, alpha=2.0,
                       normalize_logits="mean_abs")
    lam_released = released_aldr(f[0].astype(np.float64), 0, lam_released, 10.0, 2.0, 0.1)[1]
  np.testing.assert_allclose(lam[0], lam_released, atol=1e-2)
  np.testing.assert_allclose(lam[0], fixed_point, atol=0.01)


def aldr_numpy(x, labels, mask, lam, **kwargs):
  """The NumPy reference of one ALDR-KL visit for every example."""
  losses, lams = np.zeros(len(x)), np.array(lam, np.float64)
  for i in range(len(x)):
    kept = mask[i]
    if kept.any() and kept[labels[i]]:
      y = int(kept[: labels[i]].sum())
      losses[i], lams[i] = ref_aldr_kl(np.asarray(x[i], np.float64)[kept], y, lam=lam[i], **kwargs)
  return losses, lams


@pytest.mark.parametrize("alpha", [2.0, 1.25])
def test_aldr_kl_lambda_update_matches_numpy_and_stays_in_bounds(alpha):
  lam0 = 10.0
  lam = np.full(12, lam0, np.float32)
  want_lam = lam.astype(np.float64)
  for visit in range(3):
    x = X * (1 + visit)  # the logits change between visits
    loss, lam = L.aldr_kl(x, X_LABELS, lam, where=X_MASK, lam0=lam0, alpha=alpha)
    want_loss, want_lam = aldr_numpy(x, X_LABELS, X_MASK, want_lam, lam0=lam0, alpha=alpha)
    assert lam.dtype == jnp.float32 and lam.shape == (12,)
    np.testing.assert_allclose(lam, want_lam, rtol=1e-5)
    np.testing.assert_allclose(loss, want_loss, rtol=2e-5, atol=2e-5)
    assert np.all(lam >= lam0 * (1 - 1 / alpha)) and np.all(lam <= lam0)
  # Examples whose label class is masked keep their stored lambda.
  np.testing.assert_array_equal(np.asarray(lam)[[2, 4]], lam0)


def test_aldr_kl_gradient_is_ldr_kl_at_the_new_lambda():
  lam = np.full(6, 4.0, np.float32)

  @jax.jit  # one program for both gradients
  def gradients(x):
    _, new = L.aldr_kl(x, LABELS, lam, where=MASK)
    grad = jax.grad(lambda x: jnp.sum(L.aldr_kl(x, LABELS, lam, where=MASK)[0]))(x)
    fixed = jax.grad(lambda x: jnp.sum(L.ldr_kl(x, LABELS, where=MASK, lam=new)))(x)
    return grad, fixed

  grad, fixed = gradients(RANDOM)
  np.testing.assert_allclose(grad, fixed, rtol=1e-5, atol=1e-7)
  assert np.all(np.isfinite(grad))


def test_aldr_kl_state_kept_by_a_jitted_trainer():
  # What a trainer does: lambda per training example, gathered and scattered by id.
  rng = np.random.default_rng(3)
  n, lam0 = 32, 10.0
  inputs = jnp.asarray(rng.standard_normal((n, 5)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 4, n))

  @jax.jit
  def step(w, state, ids):
    def objective(w):
      loss, new = L.aldr_kl(inputs[ids] @ w, labels[ids], state[ids], lam0=lam0)
      return jnp.mean(loss), new

    (loss, new), grad = jax.value_and_grad(objective, has_aux=True)(w)
    return w - 0.5 * grad, state.at[ids].set(new), loss

  w, state = jnp.zeros((5, 4)), jnp.full(n, lam0)
  for t in range(8):
    ids = jnp.arange(8 * (t % 4), 8 * (t % 4) + 8)
    w, state, loss = step(w, state, ids)
    assert np.isfinite(loss)
  assert np.all(state >= lam0 / 2) and np.all(state <= lam0)
  assert np.all(state < lam0)  # second visits see non-uniform predictions


def test_aldr_kl_stateful_is_the_functional_loss_on_stored_lambdas():
  loss = L.aldr_kl_stateful(lam0=10.0, alpha=2.0, normalize_logits="mean_abs")
  state = loss.init(9)
  assert state["lambda"].shape == (9,) and np.all(state["lambda"] == 10.0)
  ids = jnp.array([4, 0, 9, 7, 2, 5])  # 9 lies outside the state: padding
  stored = jnp.asarray(np.linspace(6.0, 9.0, 9), jnp.float32)
  values, new = loss.apply(RANDOM, LABELS, {"lambda": stored}, ids, where=MASK)
  lam = np.array([stored[4], stored[0], 10.0, stored[7], stored[2], stored[5]])
  want, want_lam = L.aldr_kl(RANDOM, LABELS, lam, where=MASK, lam0=10.0, alpha=2.0,
                             normalize_logits="mean_abs")
  np.testing.assert_allclose(values, want, rtol=1e-6)
  expected = np.asarray(stored).copy()
  expected[[4, 0, 7, 2, 5]] = np.asarray(want_lam)[[0, 1, 3, 4, 5]]
  np.testing.assert_array_equal(new["lambda"], expected)
  # Under jit; the state keeps its dtype.
  _, kept = jax.jit(loss.apply)(RANDOM, LABELS, loss.init(9, jnp.bfloat16), ids)
  assert kept["lambda"].dtype == jnp.bfloat16
  with pytest.raises(ValueError, match="lam0 must be > 0"):
    L.aldr_kl_stateful(lam0=0.0)


def test_every_loss_declares_its_kind():
  for name in L.names():
    info = L.info(name)
    assert info.kind in L.KINDS, name
  assert L.info("aldr_kl").stateful is L.aldr_kl_stateful
  assert L.info("aldr_kl").describe() == "stateful classification"
  assert "aldr_kl (stateful classification)" in L.REGISTRY.listing()
  with pytest.raises(ValueError, match="unknown kind 'logits'"):
    L.REGISTRY.register("a_new_loss", kind="logits")


def test_js_limits(x64):
  x = np.asarray(RANDOM, np.float64)
  ce = L.softmax_cross_entropy(x, LABELS)
  np.testing.assert_allclose(L.js(x, LABELS, pi1=1e-6), ce, rtol=1e-4)
  np.testing.assert_allclose(L.js(x, LABELS, pi1=1 - 1e-12), L.mae(x, LABELS) / 2, rtol=0.05)


def test_rll_is_zero_at_the_label_and_symmetric():
  np.testing.assert_allclose(L.rll(30.0 * np.eye(7)[LABELS], LABELS), 0.0, atol=1e-5)
  # Sum over all labels is the same constant for every prediction.
  totals = sum(L.rll(RANDOM, np.full(6, y)) for y in range(7))
  np.testing.assert_allclose(totals, np.full(6, totals[0]), rtol=1e-5)


def test_hinge_baselines():
  cs = L.crammer_singer(RANDOM, LABELS)
  ww = L.weston_watkins(RANDOM, LABELS)
  assert np.all(ww >= cs - 1e-6) and np.all(cs >= 0)
  separated = 5.0 * np.eye(7)[LABELS]  # margin 5 > 1
  np.testing.assert_array_equal(L.crammer_singer(separated, LABELS), 0.0)
  np.testing.assert_array_equal(L.weston_watkins(separated, LABELS), 0.0)


def test_nce_is_in_unit_interval_and_apl_terms_vanish_at_the_label():
  for loss in (L.nce_agce, L.nce_aul):
    nce = loss(X, X_LABELS, where=X_MASK, beta=0.0)
    assert np.all((nce >= 0) & (nce <= 1))
    np.testing.assert_allclose(loss(100.0 * np.eye(7)[LABELS], LABELS), 0.0, atol=1e-6)


def test_registry():
  assert set(ldr.__all__) <= set(L.names())
  for name in ldr.__all__:
    assert L.get(name) is getattr(L, name) is getattr(ldr, name)


@pytest.mark.parametrize(
    "call_, message",
    [
        (lambda: L.ldr_kl(RANDOM, LABELS, normalize_logits="l2"),
         "normalize_logits='l2' is not valid; valid: None, 'mean_abs', 'softplus'"),
        (lambda: L.ldr_kl(RANDOM, LABELS, lam=0.0), "lam must be > 0"),
        (lambda: L.aldr_kl(RANDOM, LABELS, 1.0, alpha=1.0), "alpha must be > 1"),
        (lambda: L.aldr_kl(RANDOM, LABELS, np.ones(4)), r"lam of shape \(4,\) does not broadcast to the examples \(6,\)"),
        (lambda: L.js(RANDOM, LABELS, pi1=1.0), r"pi1 must be in \(0, 1\)"),
        (lambda: L.nce_aul(RANDOM, LABELS, a=1.0), "a must be > 1"),
        (lambda: L.rll(RANDOM, LABELS, alpha=0.0), "alpha must be > 0"),
        (lambda: L.crammer_singer(RANDOM, LABELS[:2]), r"labels of shape \(2,\)"),
    ],
)
def test_bad_arguments_raise_one_line_errors(call_, message):
  with pytest.raises(ValueError, match=message):
    call_()


def test_small_lambda_keeps_precision_in_float32():
  # Gaps are formed before dividing by lam, so lam = 1e-6 stays exact.
  x = jnp.array([[1.0, 1.5, -2.0]])
  got = L.ldr_kl(x, jnp.array([0]), lam=1e-6, margin=0.1)
  np.testing.assert_allclose(got, 0.6, rtol=1e-5)
