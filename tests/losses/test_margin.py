"""Margin losses against float64 NumPy formulas; Partial FC on 1 and 8 devices."""

import dataclasses
import functools
import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from jax.test_util import check_grads

import softlab.losses
from softlab.losses import margin as M

RNG = np.random.default_rng(0)
N, C = 6, 10
COS = RNG.uniform(-0.9, 0.9, (N, C)).astype(np.float32)
LABELS = RNG.integers(0, C, N).astype(np.int32)
COS[0, LABELS[0]] = -0.95  # theta_y + 0.5 > pi: ArcFace's fallback branch
COS[1, LABELS[1]] = 0.85
NORMS = np.array([5.0, 15.0, 20.0, 25.0, 60.0, 0.0], np.float32)
KEY = jax.random.key(3)


def run(fn, *args, **kwargs):
  """fn(*args, **kwargs) compiled as one program (faster than op by op)."""
  return jax.jit(functools.partial(fn, **kwargs))(*args)


# ---------------------------------------------------------------------------
# Float64 NumPy references, one example at a time.
# ---------------------------------------------------------------------------


def ref_cross_entropy(logits, y):
  top = logits.max()
  return top + np.log(np.exp(logits - top).sum()) - logits[y]


def ref_target_softmax(cos, labels, s, target_fn):
  """-log softmax(s cos with the target replaced by s target_fn(cos_y, i))_y."""
  out = []
  for i, (row, y) in enumerate(zip(np.asarray(cos, np.float64), labels)):
    logits = s * row
    logits[y] = s * target_fn(row[y], i)
    out.append(ref_cross_entropy(logits, y))
  return np.array(out)


def ref_combined(c, m1, m2, m3):
  theta = math.acos(min(max(c, -1.0), 1.0))
  if m1 * theta + m2 < math.pi:
    return math.cos(m1 * theta + m2) - m3
  return c - m2 * math.sin(m2) - m3


def ref_arcface(cos, labels, s=64.0, m1=1.0, m2=0.5, m3=0.0):
  return ref_target_softmax(
      cos, labels, s, lambda c, i: ref_combined(c, m1, m2, m3)
  )


def ref_adaface(cos, labels, norms, mean, std, s=64.0, m=0.4, h=0.333):
  z = np.clip(h * (np.clip(norms, 0.001, 100) - mean) / (std + 1e-3), -1, 1)

  def target(c, i):
    theta = np.clip(math.acos(c) - m * z[i], 1e-3, math.pi - 1e-3)
    return math.cos(theta) - m - m * z[i]

  return ref_target_softmax(cos, labels, s, target)


def ref_circle(cos, labels, m=0.25, gamma=256.0):
  out = []
  for row, y in zip(np.asarray(cos, np.float64), labels):
    s_p, s_n = row[y], np.delete(row, y)
    positive = gamma * max(1 + m - s_p, 0) * (s_p - 1 + m)
    negatives = gamma * np.maximum(s_n + m, 0) * (s_n - m)
    out.append(np.logaddexp(0, np.logaddexp.reduce(negatives) - positive))
  return np.array(out)


def ref_sphereface2(cos, labels, b, r=40.0, m=0.4, lam=0.7, t=3.0):
  g = 2 * ((np.asarray(cos, np.float64) + 1) / 2) ** t - 1
  out = []
  for row, y in zip(g, labels):
    positive = lam / r * np.logaddexp(0, -(r * (row[y] - m) + b))
    negatives = (1 - lam) / r * np.logaddexp(0, r * (np.delete(row, y) + m) + b)
    out.append(positive + negatives.sum())
  return np.array(out)


def ref_normalized_softmax(cos, labels, s=64.0):
  return ref_target_softmax(cos, labels, s, lambda c, i: c)


# ---------------------------------------------------------------------------
# Values.
# ---------------------------------------------------------------------------

ELASTIC_MARGINS = np.asarray(
    0.5 + 0.05 * jax.random.normal(KEY, (N,)), np.float64
)
CASES = {
    "normalized_softmax": (M.normalized_softmax, {}, ref_normalized_softmax),
    "normalized_softmax_s30": (
        M.normalized_softmax,
        {"s": 30.0},
        functools.partial(ref_normalized_softmax, s=30.0),
    ),
    "arcface": (M.arcface, {}, ref_arcface),
    "combined_margin": (
        M.arcface,
        {"m1": 1.2, "m2": 0.3, "m3": 0.1, "s": 32.0},
        functools.partial(ref_arcface, m1=1.2, m2=0.3, m3=0.1, s=32.0),
    ),
    "cosface": (M.cosface, {}, functools.partial(ref_arcface, m2=0.0, m3=0.35)),
    "elasticface": (
        M.elasticface,
        {"key": KEY},
        lambda cos, y: ref_target_softmax(
            cos,
            y,
            64.0,
            lambda c, i: ref_combined(c, 1.0, ELASTIC_MARGINS[i], 0.0),
        ),
    ),
    "adaface": (
        functools.partial(M.adaface, norms=NORMS),
        {"batch_mean": 20.0, "batch_std": 10.0},
        functools.partial(ref_adaface, norms=NORMS, mean=20.0, std=10.0),
    ),
    "circle_loss": (M.circle_loss, {}, ref_circle),
    "circle_loss_m04_g64": (
        M.circle_loss,
        {"m": 0.4, "gamma": 64.0},
        functools.partial(ref_circle, m=0.4, gamma=64.0),
    ),
    "sphereface2": (
        M.sphereface2,
        {"b": -5.0},
        functools.partial(ref_sphereface2, b=-5.0),
    ),
    "sphereface2_t1": (
        M.sphereface2,
        {"b": 1.0, "t": 1.0, "lam": 0.5},
        functools.partial(ref_sphereface2, b=1.0, t=1.0, lam=0.5),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_reference(name):
  fn, kwargs, ref = CASES[name]
  got = jax.jit(lambda cos, y: fn(cos, y, **kwargs))(COS, LABELS)
  assert got.shape == (N,) and got.dtype == jnp.float32
  np.testing.assert_allclose(got, ref(COS, LABELS), rtol=2e-5, atol=2e-5)


def test_arcface_fallback_branch_is_used_past_pi():
  # cos_y = -0.95: theta + 0.5 = 3.32 > pi, so the target is cos - 0.5 sin(0.5).
  cos = np.array([[-0.95, 0.2]], np.float32)
  want = ref_cross_entropy(64 * np.array([-0.95 - 0.5 * math.sin(0.5), 0.2]), 0)
  np.testing.assert_allclose(
      run(M.arcface, cos, np.array([0])), [want], rtol=1e-5
  )


@pytest.mark.parametrize(
    "fn",
    [
        functools.partial(M.arcface, m2=0.0),
        functools.partial(M.cosface, m=0.0),
        functools.partial(M.elasticface, key=KEY, m=0.0, sigma=0.0),
        functools.partial(
            M.adaface, norms=NORMS, batch_mean=20.0, batch_std=10.0, m=0.0
        ),
        lambda cos, y: M.subcenter_arcface(cos[:, :, None], y, m2=0.0),
    ],
    ids=["arcface", "cosface", "elasticface", "adaface", "subcenter_arcface"],
)
def test_zero_margin_is_normalized_softmax(fn):
  np.testing.assert_allclose(
      jax.jit(fn)(COS, LABELS),
      run(M.normalized_softmax, COS, LABELS),
      rtol=1e-5,
  )


def test_elasticface_with_zero_spread_is_arcface():
  np.testing.assert_allclose(
      run(M.elasticface, COS, LABELS, key=KEY, sigma=0.0),
      run(M.arcface, COS, LABELS),
      rtol=1e-6,
  )
  other = run(M.elasticface, COS, LABELS, key=jax.random.key(4))
  assert not np.allclose(other, run(M.elasticface, COS, LABELS, key=KEY))


def test_subcenter_arcface_uses_the_closest_subcenter():
  sub = RNG.uniform(-0.9, 0.9, (N, C, 3)).astype(np.float32)
  np.testing.assert_allclose(
      run(M.subcenter_arcface, sub, LABELS),
      ref_arcface(sub.max(axis=2), LABELS),
      rtol=2e-5,
  )


def test_cosine_logits():
  embeddings = RNG.standard_normal((4, 5))
  centers = RNG.standard_normal((3, 2, 5))
  unit = lambda z: z / np.linalg.norm(z, axis=-1, keepdims=True)
  want = np.einsum("nd,ckd->nck", unit(embeddings), unit(centers))
  np.testing.assert_allclose(
      run(M.cosine_logits, embeddings, centers), want, rtol=1e-5, atol=1e-6
  )
  np.testing.assert_allclose(
      run(M.cosine_logits, embeddings, centers[:, 0]),
      want[:, :, 0],
      rtol=1e-5,
      atol=1e-6,
  )


def test_adaface_norm_stats_is_the_papers_running_average():
  mean, std = M.adaface_norm_stats(NORMS, *M.ADAFACE_INITIAL_NORM_STATS)
  clipped = np.clip(NORMS.astype(np.float64), 0.001, 100)
  np.testing.assert_allclose(
      mean, 0.01 * clipped.mean() + 0.99 * 20.0, rtol=1e-6
  )
  np.testing.assert_allclose(
      std, 0.01 * clipped.std(ddof=1) + 0.99 * 100.0, rtol=1e-6
  )


def test_adaface_moves_from_arcface_to_cosface_with_the_norm():
  # z = -1 (low norm): ArcFace's angular margin m; z = 0 (norm at the mean): CosFace's m.
  cos, labels = COS[1:], LABELS[1:]  # no target angle near pi
  adaface = lambda norm: run(
      M.adaface,
      cos,
      labels,
      np.full(N - 1, norm),
      batch_mean=20.0,
      batch_std=10.0,
      h=1.0,
  )
  np.testing.assert_allclose(
      adaface(0.0), run(M.arcface, cos, labels, m2=0.4), rtol=1e-5
  )
  np.testing.assert_allclose(
      adaface(20.0), run(M.cosface, cos, labels, m=0.4), rtol=1e-5
  )


def test_sphereface2_bias_init_zeroes_the_bias_gradient_at_zero_cosines():
  for classes, hyper in [(10, {}), (1000, {"r": 40.0, "m": 0.2, "lam": 0.6})]:
    b0 = M.sphereface2_bias_init(classes, **hyper)
    cos = np.zeros((1, classes), np.float32)
    grad = jax.jit(
        jax.grad(lambda b: M.sphereface2(cos, np.array([0]), b=b, **hyper)[0])
    )(b0)
    assert abs(float(grad)) < 1e-5, (classes, float(grad))


def test_sphereface2_defaults_give_the_released_head_over_its_loss_weight():
  """NumPy float64 transcription of opensphere's SphereFace2C.forward (defaults alpha 0.7,
  r 40, m 0.4, t 3, lw 50): weighted BCE-with-logits averaged over all N x C terms, which is
  lw times the mean of sphereface2's per-example values with its defaults."""
  alpha, r, m, t, lw, b = 0.7, 40.0, 0.4, 3.0, 50.0, -5.0
  cos = np.asarray(COS, np.float64)
  one_hot = np.eye(C)[LABELS]
  logits = r * (2 * ((cos + 1) / 2) ** t - 1 - m * (2 * one_hot - 1)) + b
  weight = lw * C / r * (alpha * one_hot + (1 - alpha) * (1 - one_hot))
  bce = np.logaddexp(0, logits) - one_hot * logits
  released = np.mean(weight * bce)
  np.testing.assert_allclose(lw * np.mean(M.sphereface2(COS, LABELS, b=b)), released, rtol=1e-5)


def test_sphereface2_bias_module_starts_from_the_loss_defaults():
  """The bias module's r, m, lam, t default to sphereface2's, so its start fits the loss."""
  loss_defaults = {k: p.default for k, p in inspect.signature(M.sphereface2).parameters.items()
                   if k in ("r", "m", "lam", "t")}
  module_defaults = {f.name: f.default for f in dataclasses.fields(M.SphereFace2Bias)
                     if f.name in loss_defaults}
  assert module_defaults == loss_defaults


# ---------------------------------------------------------------------------
# Gradients.
# ---------------------------------------------------------------------------

GRAD_CASES = {
    "arcface": functools.partial(M.arcface, s=4.0),
    "combined_margin": functools.partial(
        M.arcface, s=4.0, m1=1.2, m2=0.3, m3=0.1
    ),
    "cosface": functools.partial(M.cosface, s=4.0),
    "elasticface": functools.partial(M.elasticface, s=4.0, key=KEY),
    "adaface": functools.partial(
        M.adaface, s=4.0, norms=NORMS, batch_mean=20.0, batch_std=10.0
    ),
    "circle_loss": functools.partial(M.circle_loss, gamma=4.0),
    "sphereface2": functools.partial(M.sphereface2, b=-1.0),
    "normalized_softmax": functools.partial(M.normalized_softmax, s=4.0),
}


@pytest.mark.parametrize("name", sorted(set(GRAD_CASES) - {"circle_loss"}))
def test_gradients_match_finite_differences_in_float64(name, x64):
  fn = GRAD_CASES[name]
  # Away from the kinks (theta + m2 = pi, relu of the circle weights).
  cos = jnp.asarray(RNG.uniform(-0.6, 0.6, (N, C)), jnp.float64)
  weights = jnp.asarray(RNG.random(N))
  check_grads(
      jax.jit(lambda c: jnp.sum(fn(c, LABELS) * weights)),
      (cos,),
      order=1,
      modes=("rev",),
      atol=1e-6,
      rtol=1e-6,
  )


def test_circle_loss_gradient_holds_the_weights_constant(x64):
  cos = RNG.uniform(-0.6, 0.6, (N, C))
  gamma, m = 4.0, 0.25
  weight_p = np.maximum(1 + m - cos, 0)  # a_p and a_n at this point, held fixed
  weight_n = np.maximum(cos + m, 0)

  def fixed(c):
    out = 0.0
    for i, y in enumerate(LABELS):
      positive = gamma * weight_p[i, y] * (c[i, y] - 1 + m)
      negatives = gamma * np.delete(weight_n[i] * (c[i] - m), y)
      out += np.logaddexp(0, np.logaddexp.reduce(negatives) - positive)
    return out

  numeric = np.zeros_like(cos)
  for index in np.ndindex(cos.shape):
    step = np.zeros_like(cos)
    step[index] = 1e-6
    numeric[index] = (fixed(cos + step) - fixed(cos - step)) / 2e-6
  got = jax.jit(
      jax.grad(lambda c: jnp.sum(M.circle_loss(c, LABELS, m=m, gamma=gamma)))
  )(cos)
  np.testing.assert_allclose(got, numeric, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", sorted(GRAD_CASES))
def test_finite_gradients_at_cosine_plus_and_minus_one(name):
  fn = GRAD_CASES[name]
  cos = np.array(
      [
          [1.0, -1.0, 0.3],
          [-1.0, 1.0, 0.0],
          [1.0, 1.0, -1.0],
          [0.5, -1.0, 1.0],
          [-1.0, -1.0, -1.0],
          [1.0, 1.0, 1.0],
      ],
      np.float32,
  )
  labels = np.array([0, 0, 2, 1, 0, 2])
  value, grad = jax.jit(jax.value_and_grad(lambda c: jnp.sum(fn(c, labels))))(
      cos
  )
  assert np.isfinite(value) and np.all(np.isfinite(grad))


# ---------------------------------------------------------------------------
# Partial FC, one device.
# ---------------------------------------------------------------------------

EMB = RNG.standard_normal((16, 4)).astype(np.float32)
EMB_LABELS = RNG.integers(0, 16, 16).astype(np.int32)
CENTERS = RNG.standard_normal((16, 4)).astype(np.float32)
SUBCENTERS = RNG.standard_normal((16, 3, 4)).astype(np.float32)

PFC_LOSSES = {
    "arcface": ("arcface", CENTERS),
    "sphereface2": (functools.partial(M.sphereface2, b=-5.0), CENTERS),
    "circle_loss": (M.circle_loss, CENTERS),
    "elasticface": (functools.partial(M.elasticface, key=KEY), CENTERS),
    "subcenter_arcface": ("subcenter_arcface", SUBCENTERS),
}


def full_loss(margin_loss, embeddings, labels, centers):
  fn = (
      softlab.losses.get(margin_loss)
      if isinstance(margin_loss, str)
      else margin_loss
  )
  return run(
      lambda e, y, c: fn(M.cosine_logits(e, c), y), embeddings, labels, centers
  )


@pytest.mark.parametrize("name", sorted(PFC_LOSSES))
def test_partial_fc_with_sample_rate_one_is_the_full_loss(name):
  margin_loss, centers = PFC_LOSSES[name]
  got = jax.jit(
      functools.partial(M.partial_fc, sample_rate=1.0, margin_loss=margin_loss)
  )(EMB, EMB_LABELS, centers, key=KEY)
  np.testing.assert_allclose(
      got, full_loss(margin_loss, EMB, EMB_LABELS, centers), rtol=1e-5
  )


def test_partial_fc_keeps_positives_and_remaps_labels():
  classes = 200
  centers = RNG.standard_normal((classes, 4)).astype(np.float32)
  labels = np.array([3, 3, 150, 7, 199, 0, 42, 150], np.int32)
  embeddings = RNG.standard_normal((8, 4)).astype(np.float32)
  seen = {}

  def target_cosine(cos, labels, axis_name=None):
    seen["shape"] = cos.shape
    return jnp.take_along_axis(cos, labels[:, None], axis=1)[:, 0]

  got = jax.jit(
      lambda e, c: M.partial_fc(
          e, labels, c, key=KEY, sample_rate=0.1, margin_loss=target_cosine
      )
  )(embeddings, centers)
  assert seen["shape"] == (8, 20)  # ceil(0.1 * 200) centers kept
  # Each remapped label still points at the example's own class center.
  full = M.cosine_logits(embeddings, centers)
  np.testing.assert_allclose(got, full[np.arange(8), labels], rtol=1e-6)
  # Only the kept centers get gradients, every positive among them.
  grad_fn = jax.jit(
      jax.grad(
          lambda c, key: jnp.sum(
              M.partial_fc(embeddings, labels, c, key=key, sample_rate=0.1)
          )
      )
  )
  grad = grad_fn(centers, KEY)
  touched = np.flatnonzero(np.abs(np.asarray(grad)).sum(1) > 0)
  assert len(touched) == 20 and set(labels) <= set(touched)
  other = grad_fn(centers, jax.random.key(9))
  assert set(np.flatnonzero(np.abs(np.asarray(other)).sum(1) > 0)) != set(
      touched
  )


def test_partial_fc_keeps_at_least_the_batch_size():
  seen = {}

  def recording_loss(cos, labels, axis_name=None):
    seen["shape"] = cos.shape
    return M.normalized_softmax(cos, labels)

  run(
      M.partial_fc,
      EMB,
      EMB_LABELS,
      np.ones((100, 4), np.float32),
      key=KEY,
      sample_rate=0.01,
      margin_loss=recording_loss,
  )
  assert seen["shape"] == (16, 16)


# ---------------------------------------------------------------------------
# Partial FC and class-sharded margin losses across 8 devices.
# ---------------------------------------------------------------------------

MESH = jax.make_mesh((8,), ("data",))


def put(x):
  return jax.device_put(x, NamedSharding(MESH, P("data")))


def pfc_value_and_grad(sample_rate, margin_loss, axis_name):
  def loss(embeddings, labels, centers):
    return M.partial_fc(
        embeddings,
        labels,
        centers,
        key=KEY,
        sample_rate=sample_rate,
        margin_loss=margin_loss,
        axis_name=axis_name,
    )

  if axis_name is not None:
    loss = jax.shard_map(
        loss, mesh=MESH, in_specs=(P("data"),) * 3, out_specs=P("data")
    )
  return jax.jit(
      jax.value_and_grad(
          lambda e, y, c: jnp.sum(loss(e, y, c) * jnp.arange(1.0, 17.0)), (0, 2)
      )
  )


# circle_loss shares arcface's sharded softmax path.
@pytest.mark.parametrize("name", sorted(set(PFC_LOSSES) - {"circle_loss"}))
def test_sharded_partial_fc_equals_single_device(name):
  margin_loss, centers = PFC_LOSSES[name]
  value, grads = pfc_value_and_grad(1.0, margin_loss, "data")(
      put(EMB), put(EMB_LABELS), put(centers)
  )
  want_value, want_grads = pfc_value_and_grad(1.0, margin_loss, None)(
      EMB, EMB_LABELS, centers
  )
  np.testing.assert_allclose(value, want_value, rtol=1e-5)
  for g, w in zip(grads, want_grads):
    # Relative to the largest gradient: s = 64 and gamma = 256 scale float32 rounding up.
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * np.abs(w).max())


def test_sharded_partial_fc_samples_each_shard():
  classes = 8 * 40
  centers = RNG.standard_normal((classes, 4)).astype(np.float32)
  labels = (np.arange(16) * 20).astype(np.int32)  # 2 positives per shard
  value, (_, d_centers) = pfc_value_and_grad(0.1, "arcface", "data")(
      put(EMB), put(labels), put(centers)
  )
  assert np.isfinite(value)
  touched = np.abs(np.asarray(d_centers)).sum(1) > 0
  # Each shard keeps max(ceil(0.1 * 40), 16 global examples) = 16 of its 40 centers.
  np.testing.assert_array_equal(touched.reshape(8, 40).sum(1), 16)
  assert touched[labels].all()


def test_partial_fc_under_pmap_equals_single_device():
  fn = lambda e, y, c: M.partial_fc(
      e, y, c, key=KEY, sample_rate=1.0, axis_name="data"
  )
  out = jax.pmap(fn, axis_name="data")(
      EMB.reshape(8, 2, -1), EMB_LABELS.reshape(8, 2), CENTERS.reshape(8, 2, -1)
  )
  np.testing.assert_allclose(
      out.reshape(-1),
      full_loss("arcface", EMB, EMB_LABELS, CENTERS),
      rtol=1e-5,
  )


# ---------------------------------------------------------------------------
# Properties, composition, registry, errors.
# ---------------------------------------------------------------------------

DEFAULTS = {
    "arcface": M.arcface,
    "cosface": M.cosface,
    "elasticface": functools.partial(M.elasticface, key=KEY),
    "adaface": functools.partial(
        M.adaface, norms=NORMS[:3], batch_mean=20.0, batch_std=100.0
    ),
    "circle_loss": M.circle_loss,
    "sphereface2": functools.partial(
        M.sphereface2, b=M.sphereface2_bias_init(5)
    ),
    "normalized_softmax": M.normalized_softmax,
    "subcenter_arcface": lambda c, y: M.subcenter_arcface(
        jnp.stack([c, -c], -1), y
    ),
}


@functools.cache
def jitted(name):
  return jax.jit(jax.value_and_grad(lambda c, y: jnp.sum(DEFAULTS[name](c, y))))


@given(
    cos=st.one_of(
        hnp.arrays(np.float32, (3, 5), elements=st.floats(-1e4, 1e4, width=32)),
        hnp.arrays(
            np.float32,
            (3, 5),
            elements=st.sampled_from([-1.0, -0.999, 0.0, 0.5, 1.0, 1.0001]),
        ),
    ),
    labels=hnp.arrays(np.int32, 3, elements=st.integers(0, 4)),
)
def test_property_finite_values_and_gradients(cos, labels):
  for name in DEFAULTS:
    value, grad = jitted(name)(cos, labels)
    assert np.isfinite(value), name
    assert np.all(np.isfinite(grad)), name


def test_jit_and_vmap_compose():
  cos, labels = COS[:4, :5], LABELS[:4] % 5
  for name, fn in DEFAULTS.items():
    if name in ("adaface", "elasticface"):
      continue  # norms and random margins of one batch
    batched = jax.jit(jax.vmap(fn))(cos.reshape(2, 2, 5), labels.reshape(2, 2))
    np.testing.assert_allclose(
        batched.reshape(-1), run(fn, cos, labels), rtol=1e-5, err_msg=name
    )


def test_registry():
  for name in [
      "normalized_softmax",
      "arcface",
      "cosface",
      "subcenter_arcface",
      "elasticface",
      "adaface",
      "sphereface2",
      "circle_loss",
      "partial_fc",
  ]:
    assert softlab.losses.get(name) is getattr(softlab.losses, name)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: M.arcface(COS[0], LABELS), r"cos must be \[N, C\]"),
        (lambda: M.arcface(COS, LABELS[:3]), "labels of shape"),
        (
            lambda: M.arcface(COS, LABELS.astype(np.float32)),
            "labels must be integer",
        ),
        (lambda: M.arcface(COS, LABELS + C), r"labels must lie in \[0, 10\)"),
        (lambda: M.subcenter_arcface(COS, LABELS), r"cos must be \[N, C, K\]"),
        (lambda: M.arcface(COS, LABELS, s=0.0), "s must be > 0"),
        (
            lambda: M.sphereface2(COS, LABELS, b=0.0, lam=1.0),
            r"lam must be in \(0, 1\)",
        ),
        (lambda: M.sphereface2(COS, LABELS, b=0.0, t=0.5), "t must be >= 1"),
        (lambda: M.sphereface2_bias_init(1), "num_classes must be >= 2"),
        (
            lambda: M.adaface(
                COS, LABELS, NORMS[:2], batch_mean=1.0, batch_std=1.0
            ),
            "norms must have shape",
        ),
        (lambda: M.cosine_logits(EMB, CENTERS[:, :3]), "must end in d = 4"),
        (lambda: M.cosine_logits(EMB[0], CENTERS), "embeddings must be"),
        (
            lambda: M.partial_fc(
                EMB, EMB_LABELS, CENTERS, key=KEY, sample_rate=0.0
            ),
            "sample_rate must be in",
        ),
        (
            lambda: M.partial_fc(
                EMB, EMB_LABELS, CENTERS, key=KEY, margin_loss="arcfase"
            ),
            "unknown loss 'arcfase'",
        ),
        (
            lambda: M.partial_fc(
                EMB, EMB_LABELS, CENTERS, key=KEY, margin_loss=3
            ),
            "margin_loss must be",
        ),
        (
            lambda: M.partial_fc(EMB, EMB_LABELS[:3], CENTERS, key=KEY),
            "labels of shape",
        ),
        (
            lambda: M.partial_fc(EMB, EMB_LABELS + 16, CENTERS, key=KEY),
            r"labels must lie in \[0, 16\)",
        ),
    ],
)
def test_bad_arguments_raise_one_line_errors(call, message):
  with pytest.raises(ValueError, match=message):
    call()
