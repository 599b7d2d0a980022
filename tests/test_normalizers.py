"""Normalizers against independent float64 NumPy references, plus properties."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from jax.test_util import check_grads

from softlab import normalizers as N

# ---------------------------------------------------------------------------
# Independent float64 references, written on 1-D rows of kept entries.
# ---------------------------------------------------------------------------


def ref_softmax(v, two_pass=False):
  # two_pass is an algorithm of the same function: one reference for both.
  e = np.exp(v - v.max())
  return e / e.sum()


def ref_topk_softmax(v, k=5):
  # Ties at the k-th place go to the lower index: a stable sort of -v.
  chosen = np.argsort(-v, kind="stable")[:k]
  out = np.zeros_like(v)
  out[chosen] = ref_softmax(v[chosen])
  return out


def ref_log_softmax(v):
  return v - v.max() - np.log(np.exp(v - v.max()).sum())


def ref_stablemax(v):
  s = np.array([x + 1 if x >= 0 else 1 / (1 - x) for x in v])
  return s / s.sum()


def ref_ssmax(v, s=0.43, n=None):
  n = len(v) if n is None else n
  return ref_softmax(s * np.log(n) * v)


def ref_sigmoid(v, bias=0.0):
  z = v + bias
  return np.array([1 / (1 + np.exp(-t)) if t >= 0 else np.exp(t) / (1 + np.exp(t)) for t in z])


def ref_softplus(v, scale=1.0, sharpen_power=None, n=None):
  z = scale * v
  # softplus(z) = exp(z) (1 + O(exp(z))): where it all underflows, weights = softmax(z).
  w = np.logaddexp(0.0, z) if z.max() > -700 else np.exp(z - z.max())
  w = w / w.sum()
  if sharpen_power is None:
    return w
  n = len(v) if n is None else n
  r = np.maximum(w * n - (0.0 if n <= 3 else 1.0), 0.0)
  if r.max() == 0:
    return w
  r = r**sharpen_power
  return r / r.sum()


def ref_softpick(v, eps=1e-8):
  if v.max() <= 0:
    return np.zeros_like(v)
  m = v.max()
  e = np.exp(v - m) - np.exp(-m)
  return np.maximum(e, 0) / (np.abs(e).sum() + eps)


def _bisect(mass, lo, hi):
  """The tau in [lo, hi] where the decreasing function mass(tau) crosses 1."""
  for _ in range(200):
    mid = (lo + hi) / 2
    lo, hi = (mid, hi) if mass(mid) > 1 else (lo, mid)
  return (lo + hi) / 2


def ref_sparsemax(v):
  tau = _bisect(lambda t: np.maximum(v - t, 0).sum(), v.max() - 1, v.max())
  return np.maximum(v - tau, 0)


def ref_entmax15(v):
  u = v / 2
  tau = _bisect(lambda t: (np.maximum(u - t, 0) ** 2).sum(), u.max() - 1, u.max())
  return np.maximum(u - tau, 0) ** 2


def ref_sa_softmax(v, normalized=True):
  p = ref_softmax(v)
  if not normalized:
    return v * p
  lo, hi = min(v.min(), 0.0), max(v.max(), 0.0)
  return np.zeros_like(v) if hi == lo else (v - lo) / (hi - lo) * p


def ref_adaptive_softmax(v):
  p = ref_softmax(v)
  h = -sum(pi * np.log(pi) for pi in p if pi > 0)
  beta = np.polyval([-0.037, 0.481, -2.3, 4.917, -1.791], h)
  beta = max(beta, 1.0) if h > 0.5 else 1.0
  return ref_softmax(beta * v)


REFERENCES = {
    "softmax": ref_softmax,
    "log_softmax": ref_log_softmax,
    "stablemax": ref_stablemax,
    "log_stablemax": lambda v: np.log(ref_stablemax(v)),
    "ssmax": ref_ssmax,
    "sigmoid": ref_sigmoid,
    "softplus": ref_softplus,
    "softpick": ref_softpick,
    "sparsemax": ref_sparsemax,
    "entmax15": ref_entmax15,
    "sa_softmax": ref_sa_softmax,
    "adaptive_softmax": ref_adaptive_softmax,
    "topk_softmax": ref_topk_softmax,
    "gaussian": ref_softmax,  # on plain scores; its kernel is in q.k (tests/attention/test_gaussian_attention.py)
}
LOG_NORMALIZERS = {"log_softmax", "log_stablemax"}
# Those whose attention spec says so, and gumbel_softmax (samples, no spec).
SUMS_TO_ONE = {name for name in N.attention_names() if N.attention_spec(name).rows_sum_to_one}
SUMS_TO_ONE |= {"gumbel_softmax"}
DETERMINISTIC = sorted(REFERENCES)
# Normalizers with extra variants worth running through every generic test.
VARIANTS = {
    "ssmax_s1": ("ssmax", {"s": 1.0}),
    "sigmoid_bias": ("sigmoid", {"bias": -1.5}),
    "softplus_scaled": ("softplus", {"scale": 2.5}),
    "lssar_p3": ("softplus", {"sharpen_power": 3.0}),
    "lssar_p15": ("softplus", {"sharpen_power": 15.0}),
    "sa_softmax_raw": ("sa_softmax", {"normalized": False}),
    "softmax_two_pass": ("softmax", {"two_pass": True}),
    "topk_softmax_k1": ("topk_softmax", {"k": 1}),
}
ALL_CASES = DETERMINISTIC + sorted(VARIANTS)


def case(name):
  """(jax function with hyperparameters bound, reference, is_log)."""
  base, kwargs = VARIANTS.get(name, (name, {}))
  fn = functools.partial(N.get(base), **kwargs)
  ref = functools.partial(REFERENCES[base], **kwargs)
  return fn, ref, base in LOG_NORMALIZERS


def rowwise(ref, x, where=None, axis=-1, fill=0.0):
  """Applies a 1-D reference to the kept entries of every row of x."""
  x = np.asarray(x, np.float64)
  keep = np.ones(x.shape, bool) if where is None else np.broadcast_to(where, x.shape)
  xm, km = np.moveaxis(x, axis, -1), np.moveaxis(keep & (x != -np.inf), axis, -1)
  out = np.full(xm.shape, fill)
  for idx in np.ndindex(xm.shape[:-1]):
    if km[idx].any():
      out[idx + (km[idx],)] = ref(xm[idx][km[idx]])
  return np.moveaxis(out, -1, axis)


RNG = np.random.default_rng(0)
RANDOM = (3 * RNG.standard_normal((4, 9))).astype(np.float32)
ADVERSARIAL = np.array(
    [
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # all tied
        [1e4, -1e4, 0.0, 1e4, -1e4, 5.0],  # extremes with ties at the top
        [-np.inf, 1.0, 2.0, -np.inf, 2.0, -3.0],  # -inf entries
        [-1e4, -1e4, -9999.5, -1e4, -1e4, -1e4],  # far below zero
        [1.0, 1.0 + 1e-6, 1.0, 0.5, -0.5, 3.0],  # near ties
        [-np.inf] * 6,  # nothing to attend to
    ],
    np.float32,
)
ADVERSARIAL_MASK = np.array(
    [[True] * 6, [True] * 6, [True] * 6, [True, True, True, False, True, True],
     [False, True, True, True, False, True], [True] * 6]
)


class MatchesReference(chex.TestCase):
  """Every case against its float64 NumPy reference, with and without jit (as optax's tests)."""

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      (f"{name}_axis{axis}", name, axis) for name in ALL_CASES for axis in (-1, 0))
  def test_random_inputs(self, name, axis):
    fn, ref, is_log = case(name)
    where = RNG.random(RANDOM.shape) > 0.25
    where[1] = False  # a fully masked row / column
    got = self.variant(lambda x, where: fn(x, axis=axis, where=where))(RANDOM, where)
    want = rowwise(ref, RANDOM, where, axis, fill=-np.inf if is_log else 0.0)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters((name, name) for name in ALL_CASES)
  def test_adversarial_inputs(self, name):
    fn, ref, is_log = case(name)
    fill = -np.inf if is_log else 0.0
    normalize = self.variant(lambda x, where: fn(x, where=where))
    np.testing.assert_allclose(
        normalize(ADVERSARIAL, None), rowwise(ref, ADVERSARIAL, fill=fill), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        normalize(ADVERSARIAL, ADVERSARIAL_MASK),
        rowwise(ref, ADVERSARIAL, ADVERSARIAL_MASK, fill=fill),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.parametrize("name", sorted(SUMS_TO_ONE))
def test_rows_sum_to_one(name):
  fn = N.get(name)
  kwargs = {"key": jax.random.key(1)} if name == "gumbel_softmax" else {}
  where = RNG.random(RANDOM.shape) > 0.3
  where[:, 0] = True
  sums = jnp.sum(fn(RANDOM, where=where, **kwargs), axis=-1)
  np.testing.assert_allclose(sums, 1.0, rtol=1e-6)
  np.testing.assert_allclose(
      jnp.sum(fn(ADVERSARIAL[:5], **kwargs), axis=-1), 1.0, rtol=1e-6
  )


@pytest.mark.parametrize("name", sorted(ALL_CASES) + ["gumbel_soft", "gumbel_hard"])
def test_fully_masked_rows_are_zero_with_zero_gradient(name):
  if name.startswith("gumbel"):
    fn = functools.partial(
        N.gumbel_softmax, key=jax.random.key(0), hard=name.endswith("hard")
    )
    is_log = False
  else:
    fn, _, is_log = case(name)
  x = jnp.asarray(RANDOM[:3, :5])
  where = jnp.array([[True, False, True, True, False], [False] * 5, [True] * 5])
  out = fn(x, where=where)
  assert np.all(out[1] == (-np.inf if is_log else 0.0))
  assert np.all(out[0, ~where[0]] == (-np.inf if is_log else 0.0))
  weights = jnp.asarray(RNG.standard_normal(x.shape), jnp.float32)
  grad = jax.grad(lambda x: jnp.sum(jnp.where(where, fn(x, where=where), 0) * weights))(x)
  assert np.all(np.isfinite(grad))
  assert np.all(grad[1] == 0) and np.all(grad[0, ~where[0]] == 0)


GRAD_ORDER = {
    "softmax": 2, "log_softmax": 2, "stablemax": 2, "log_stablemax": 2,
    "ssmax": 2, "ssmax_s1": 2, "sigmoid": 2, "sigmoid_bias": 2, "softplus": 2,
    "softplus_scaled": 2, "adaptive_softmax": 2, "sa_softmax": 2,
    "sa_softmax_raw": 2, "softmax_two_pass": 2,
}


@pytest.mark.parametrize("name", ALL_CASES)
def test_gradients_match_finite_differences_in_float64(name, x64):
  fn, _, _ = case(name)
  x = jnp.asarray(RANDOM[:2, :6], jnp.float64)
  where = jnp.array([[True, True, False, True, True, True], [True] * 6])
  masked = lambda x: jnp.where(where, fn(x, where=where), 0)
  check_grads(masked, (x,), order=GRAD_ORDER.get(name, 1), modes=("fwd", "rev"),
              atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "fn, hyper, value",
    [
        (N.ssmax, "s", 0.6),
        (N.sigmoid, "bias", -1.2),
        (N.softplus, "scale", 1.7),
        (N.softpick, "eps", 0.3),
        (functools.partial(N.gumbel_softmax, key=jax.random.key(3)), "temperature", 0.7),
    ],
)
def test_hyperparameter_gradients(fn, hyper, value, x64):
  x = jnp.asarray(RANDOM[:2, :6], jnp.float64)
  where = jnp.array([[True, True, False, True, True, True], [False] * 6])
  f = lambda h: jnp.where(where, fn(x, where=where, **{hyper: h}), 0)
  check_grads(f, (jnp.float64(value),), order=2, modes=("fwd", "rev"))


def test_gradients_are_finite_with_inf_and_extreme_entries():
  x = jnp.asarray(ADVERSARIAL)
  keep = jnp.isfinite(x)
  weights = {name: jnp.asarray(RNG.standard_normal(x.shape), jnp.float32) for name in ALL_CASES}

  @jax.jit  # one program for every case
  def grads(x):
    return {
        name: jax.grad(lambda x, fn=case(name)[0]: jnp.sum(jnp.where(keep, fn(x), 0) * weights[name]))(x)
        for name in ALL_CASES
    }

  for name, grad in grads(x).items():
    assert np.all(np.isfinite(grad)), name
    assert np.all(grad[~keep] == 0), name


def test_stablemax_gradient_at_one_is_finite_in_float32():
  # The published implementation divides by zero in the unused branch at x = 1.
  x = jnp.array([1.0, 0.0, -1.0, 1.0], jnp.float32)
  got = jax.jit(jax.jacobian(N.stablemax))(x)
  s = np.array([2.0, 1.0, 0.5, 2.0])
  ds = np.array([1.0, 1.0, 0.25, 1.0])  # s'(x): 1 for x >= 0, 1 / (1 - x)^2 below
  total = s.sum()
  want = np.diag(ds / total) - np.outer(s, ds) / total**2
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_stablemax_is_softmax_of_log_s():
  x = RANDOM
  log_s = np.where(x >= 0, np.log1p(np.maximum(x, 0)), -np.log1p(-np.minimum(x, 0)))
  np.testing.assert_allclose(N.stablemax(x), N.softmax(log_s), rtol=1e-6)
  np.testing.assert_allclose(jnp.exp(N.log_stablemax(x)), N.stablemax(x), rtol=1e-6)
  np.testing.assert_allclose(jnp.exp(N.log_softmax(x)), N.softmax(x), rtol=1e-6)


@pytest.mark.parametrize("n, softmax_max, ssmax_max", [(1_000, 0.129, 0.9996), (100_000, 0.0015, 1.0000)])
def test_ssmax_figure_1(n, softmax_max, ssmax_max):
  x = jnp.full((n,), -2.0).at[0].set(3.0)
  assert round(float(N.softmax(x).max()), 4 if n > 1000 else 3) == softmax_max
  assert round(float(N.ssmax(x, s=0.43).max()), 4) == ssmax_max


def test_ssmax_uses_n_per_row():
  x = RANDOM[:3]
  n = np.array([2.0, 50.0, 1000.0])
  want = np.stack([ref_ssmax(x[i].astype(np.float64), n=n[i]) for i in range(3)])
  np.testing.assert_allclose(N.ssmax(x, n=n), want, rtol=1e-5)
  np.testing.assert_allclose(N.ssmax(x, n=7.0), rowwise(functools.partial(ref_ssmax, n=7.0), x), rtol=1e-5)
  # Along axis 0 the rows are the columns.
  np.testing.assert_allclose(
      N.ssmax(x, axis=0, n=n[:1]), rowwise(functools.partial(ref_ssmax, n=2.0), x, axis=0), rtol=1e-5
  )
  # s broadcasts against x, e.g. one value per leading row.
  s = np.array([[0.2], [0.5], [1.0]])
  want = np.stack([ref_ssmax(x[i].astype(np.float64), s=s[i, 0]) for i in range(3)])
  np.testing.assert_allclose(N.ssmax(x, s=s), want, rtol=1e-5)


def test_ssmax_with_one_entry_or_n_below_one_is_finite():
  assert float(N.ssmax(jnp.array([3.0]))[0]) == 1.0
  out = N.ssmax(RANDOM[:2], n=0.0)
  np.testing.assert_allclose(out, 1 / RANDOM.shape[1], rtol=1e-6)


def test_exact_zeros():
  np.testing.assert_array_equal(N.sparsemax(jnp.array([3.0, 0.0, -1.0])), [1.0, 0.0, 0.0])
  out = N.sparsemax(jnp.array([0.2, 0.0, -2.0]))
  np.testing.assert_allclose(out[:2], [0.6, 0.4], rtol=1e-6)
  assert out[2] == 0
  out = N.entmax15(jnp.array([4.0, 3.9, 0.0, -5.0]))
  assert np.all(out[2:] == 0) and np.all(out[:2] > 0)
  out = np.asarray(N.softpick(jnp.array([2.0, 0.0, -1.0, 1e-3])))
  assert np.all(out[1:3] == 0) and np.all(out[[0, 3]] > 0) and float(out.sum()) < 1
  np.testing.assert_array_equal(N.softpick(jnp.array([-1e4, -3.0, 0.0])), 0.0)


def test_softpick_keeps_its_digits_for_scores_near_zero():
  # exp(x) - 1 computed by subtraction loses about half the float32 digits at
  # |x| ~ 1e-5; the weights must still match float64 to float32 precision.
  x = np.array([2e-5, 2.5e-5, -1e-5, 3e-6, -4e-5], np.float32)
  want = ref_softpick(x.astype(np.float64), eps=0.0)
  np.testing.assert_allclose(N.softpick(jnp.asarray(x), eps=0.0), want, rtol=2e-6)


def test_lssar_sharpening():
  x = jnp.array([[2.0, 1.0, 0.0, -1.0, 0.5, 0.2]])
  lssa = N.softplus(x)
  sharp = N.softplus(x, sharpen_power=15.0)
  assert float(sharp[0, 0]) > float(lssa[0, 0])  # amplifies the largest weight
  assert np.all(sharp[0, lssa[0] <= 1 / 6] == 0)  # drops weights below the mean
  np.testing.assert_allclose(N.softplus(x, sharpen_power=400.0), [[1, 0, 0, 0, 0, 0]], atol=1e-6)
  # A uniform row keeps its LSSA weights; rows with n <= 3 use offset 0.
  np.testing.assert_allclose(N.softplus(jnp.zeros((1, 5)), sharpen_power=3.0), 0.2)
  short = N.softplus(x[:, :3], sharpen_power=3.0)
  w = np.asarray(N.softplus(x[:, :3]), np.float64)[0] * 3
  np.testing.assert_allclose(short[0], w**3 / np.sum(w**3), rtol=1e-5)


def test_two_pass_softmax_never_overflows_and_equals_softmax():
  x = jnp.array([[1e4, 1e4 - 1.0, -1e4, 0.0], [-1e4, -1e4, -1e4 + 2.0, -9999.0],
                 [88.0, 89.0, 90.0, 91.0]], jnp.float32)  # exp(89) overflows float32
  got = N.softmax(x, two_pass=True)
  assert np.all(np.isfinite(got))
  np.testing.assert_allclose(got, rowwise(ref_softmax, x), rtol=1e-6, atol=1e-7)
  grad = jax.grad(lambda x: jnp.sum(N.softmax(x, two_pass=True)[:, 0]))(x)
  np.testing.assert_allclose(grad, jax.grad(lambda x: jnp.sum(N.softmax(x)[:, 0]))(x), atol=1e-7)


def test_topk_softmax_special_cases():
  x = jnp.asarray(RANDOM)
  np.testing.assert_allclose(N.topk_softmax(x, k=9), N.softmax(x), rtol=1e-6)
  np.testing.assert_allclose(N.topk_softmax(x, k=100), N.softmax(x), rtol=1e-6)
  np.testing.assert_array_equal(N.topk_softmax(x, k=1), jax.nn.one_hot(jnp.argmax(x, -1), 9))
  assert np.all(np.sum(N.topk_softmax(x, k=3) > 0, axis=-1) == 3)
  # Ties at the k-th place: the lower index wins; -inf and masked never chosen.
  tied = jnp.array([[2.0, 1.0, 2.0, 2.0, -jnp.inf, 3.0]])
  np.testing.assert_array_equal(N.topk_softmax(tied, k=2) > 0, [[1, 0, 0, 0, 0, 1]])
  np.testing.assert_array_equal(N.topk_softmax(tied, k=9) > 0, [[1, 1, 1, 1, 0, 1]])
  where = jnp.array([[False, True, True, True, True, True]])
  np.testing.assert_array_equal(N.topk_softmax(tied, where=where, k=2) > 0, [[0, 0, 1, 0, 0, 1]])
  for bad in (0, 2.0, True):
    with pytest.raises(ValueError, match="k must be a positive int"):
      N.topk_softmax(x, k=bad)


def test_sa_softmax_zero_row_gives_zero():
  np.testing.assert_array_equal(N.sa_softmax(jnp.zeros(4)), 0.0)


def test_adaptive_softmax_sharpens_only_dispersed_rows():
  confident = jnp.array([10.0, 0.0, 0.0, 0.0])
  np.testing.assert_allclose(N.adaptive_softmax(confident), N.softmax(confident), rtol=1e-6)
  dispersed = jnp.asarray(0.5 * RNG.standard_normal(12), jnp.float32)
  assert float(N.adaptive_softmax(dispersed).max()) > float(N.softmax(dispersed).max())


def test_gumbel_softmax_hard_is_one_hot_with_straight_through_gradient():
  x = jnp.asarray(RANDOM[:3, :5])
  where = jnp.array([[True] * 5, [True, False, True, False, True], [False] * 5])
  key = jax.random.key(7)
  hard = N.gumbel_softmax(x, where=where, key=key, hard=True)
  soft = N.gumbel_softmax(x, where=where, key=key)
  np.testing.assert_array_equal(jnp.sum(hard, -1), [1, 1, 0])
  assert set(np.unique(np.asarray(hard))) <= {0.0, 1.0}
  np.testing.assert_array_equal(jnp.argmax(hard[:2], -1), jnp.argmax(soft[:2], -1))
  assert np.all(hard[1, ~where[1]] == 0)
  c = jnp.asarray(RNG.standard_normal(x.shape), jnp.float32)
  g_hard = jax.grad(lambda x: jnp.sum(N.gumbel_softmax(x, where=where, key=key, hard=True) * c))(x)
  g_soft = jax.grad(lambda x: jnp.sum(N.gumbel_softmax(x, where=where, key=key) * c))(x)
  np.testing.assert_allclose(g_hard, g_soft, rtol=1e-6)


def test_gumbel_max_samples_follow_softmax():
  x = jnp.array([1.0, 0.0, -1.0, 0.5])
  keys = jax.random.split(jax.random.key(0), 20_000)
  samples = jax.jit(jax.vmap(lambda k: N.gumbel_softmax(x, key=k, temperature=0.1, hard=True)))(keys)
  np.testing.assert_allclose(samples.mean(0), ref_softmax(np.asarray(x, np.float64)), atol=0.015)


@functools.cache
def every_case():
  """jit(x -> {name: weights}) for all cases: one program for every case."""
  return jax.jit(lambda x: {name: case(name)[0](x) for name in ALL_CASES})


@pytest.mark.parametrize("dtype, tol", [(jnp.bfloat16, 2e-2), (jnp.float16, 2e-3)])
def test_low_precision_inputs(dtype, tol):
  x = jnp.asarray(RANDOM, dtype)
  for name in ALL_CASES:
    fn, ref, is_log = case(name)
    out = fn(x)
    assert out.dtype == dtype, name
    want = rowwise(ref, np.asarray(x.astype(jnp.float32)), fill=-np.inf if is_log else 0.0)
    np.testing.assert_allclose(np.asarray(out, np.float64), want, rtol=tol, atol=tol, err_msg=name)


def test_float64_inputs_stay_float64(x64):
  x = jnp.asarray(RANDOM, jnp.float64)
  outs = every_case()(x)
  for name in ALL_CASES:
    _, ref, _ = case(name)
    out = outs[name]
    assert out.dtype == jnp.float64, name
    np.testing.assert_allclose(out, rowwise(ref, x), rtol=1e-12, atol=1e-14, err_msg=name)


def test_integer_inputs_give_float32():
  out = N.softmax(jnp.arange(4))
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, ref_softmax(np.arange(4.0)), rtol=1e-6)


@pytest.mark.parametrize("name", ALL_CASES)
def test_jit_vmap_grad_compose(name):
  fn, _, _ = case(name)
  x = jnp.asarray(RANDOM[:, :6])
  f = lambda x: fn(x, where=x > -2)
  loss = lambda x: jnp.sum(jnp.where(x > -2, f(x), 0) * jnp.arange(6.0))

  @jax.jit  # one program for the transformed functions; the references below run eagerly
  def transformed(x):
    return f(x), jax.vmap(f)(x), jax.grad(loss)(x), jax.vmap(jax.grad(loss))(x)

  jitted, vmapped, jitted_grad, vmapped_grad = transformed(x)
  want, want_grad = f(x), jax.grad(loss)(x)
  np.testing.assert_allclose(jitted, want, rtol=1e-6, atol=1e-9)
  np.testing.assert_allclose(vmapped, want, rtol=1e-6, atol=1e-9)
  np.testing.assert_allclose(jitted_grad, want_grad, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(vmapped_grad, want_grad, rtol=1e-5, atol=1e-6)


def test_registry():
  assert set(N.names()) == set(REFERENCES) | {"gumbel_softmax"}
  assert N.get("stablemax") is N.stablemax
  with pytest.raises(ValueError, match=r"unknown normalizer 'softmaxx'; valid: .*softmax.*stablemax"):
    N.get("softmaxx")


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: N.softmax(jnp.ones(3), axis=1), "axis=1 is not a valid axis"),
        (lambda: N.softmax(jnp.float32(1.0)), "at least one dimension"),
        (lambda: N.softmax(jnp.ones(3), where=np.array(["a", "b", "c"])), "where must be a boolean or numeric"),
        (lambda: N.softmax(jnp.ones((2, 3)), where=jnp.ones(2, bool)), "where of shape"),
        (lambda: N.ssmax(jnp.ones((2, 3)), n=jnp.ones(3)), r"n of shape \(3,\) does not broadcast to the rows \(2,\)"),
        (lambda: N.softplus(jnp.ones(3), sharpen_power=0.0), "sharpen_power must be > 0"),
        (lambda: N.gumbel_softmax(jnp.ones(3), key=jax.random.key(0), temperature=0.0), "temperature must be > 0"),
    ],
)
def test_bad_arguments_raise_one_line_errors(call, message):
  with pytest.raises(ValueError, match=message):
    call()


# ---------------------------------------------------------------------------
# Properties (hypothesis, derandomized).
# ---------------------------------------------------------------------------

FINITE_ROWS = hnp.arrays(
    np.float32, (3, 7), elements=st.floats(-1e4, 1e4, width=32)
)
MASKS = hnp.arrays(np.bool_, (3, 7))
CLUSTERED_ROWS = hnp.arrays(  # many ties and near-ties
    np.float32, (3, 7), elements=st.sampled_from([-1e4, -3.0, -1.0, 0.0, 0.5, 1.0, 2.0, 1e4])
)


@functools.cache
def values_and_grads():
  """jit((x, where) -> {name: (weights, grad of the masked weights' sum)}) for all cases.

  One program for every case: the property tests compile once per input shape
  instead of once per case and shape.
  """

  def evaluate(x, where):
    out = {}
    for name in ALL_CASES:
      fn = case(name)[0]
      masked_sum = lambda x: jnp.sum(jnp.where(where, fn(x, where=where), 0))
      out[name] = (fn(x, where=where), jax.grad(masked_sum)(x))
    return out

  return jax.jit(evaluate)


@given(x=st.one_of(FINITE_ROWS, CLUSTERED_ROWS), where=MASKS)
def test_property_finite_values_and_gradients(x, where):
  for name, (out, grad) in values_and_grads()(x, where).items():
    is_log = case(name)[2]
    assert np.all(np.isfinite(np.asarray(out)[where if is_log else np.ones_like(where)])), name
    assert np.all(np.isfinite(grad)), name


# Top-k softmax breaks ties at the k-th place by position, so it is permutation
# equivariant on rows without ties only.
BREAKS_TIES_BY_POSITION = {"topk_softmax", "topk_softmax_k1"}


@given(x=st.one_of(FINITE_ROWS, CLUSTERED_ROWS), seed=st.integers(0, 2**16))
def test_property_permutation_equivariance(x, seed):
  perm = np.random.default_rng(seed).permutation(x.shape[-1])
  keep = np.ones(x.shape, bool)
  permuted, original = values_and_grads()(x[:, perm], keep), values_and_grads()(x, keep)
  distinct = np.array([len(np.unique(row)) == len(row) for row in x])
  for name in ALL_CASES:
    rows = distinct if name in BREAKS_TIES_BY_POSITION else np.ones_like(distinct)
    np.testing.assert_allclose(
        np.asarray(permuted[name][0])[rows], np.asarray(original[name][0])[:, perm][rows],
        rtol=1e-5, atol=1e-6, err_msg=name
    )


@functools.cache
def masked_and_dropped(kept):
  """jit((x, where, x[where], ones) -> {name: (weights of x under where, weights of x[where])}).

  One program per number of kept entries (the shape of x[where]) for all cases.
  """

  def evaluate(x, where, dropped, keep_all):
    out = {}
    for name in ALL_CASES:
      fn = case(name)[0]
      out[name] = (fn(x, where=where), fn(dropped, where=keep_all))
    return out

  return jax.jit(evaluate)


@settings(max_examples=15)  # every distinct mask size (1-6) compiles anew
@given(x=hnp.arrays(np.float32, 6, elements=st.floats(-50, 50, width=32)),
       where=hnp.arrays(np.bool_, 6).filter(lambda m: m.any()))
def test_property_mask_equals_dropping_entries(x, where):
  for name, (masked, dropped) in masked_and_dropped(int(where.sum()))(
      x, where, x[where], np.ones(where.sum(), bool)).items():
    masked = np.asarray(masked)
    np.testing.assert_allclose(masked[where], dropped, rtol=1e-5, atol=1e-6, err_msg=name)
    assert np.all(masked[~where] == (-np.inf if case(name)[2] else 0.0)), name
