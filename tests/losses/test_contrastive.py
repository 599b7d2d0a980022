"""SigLIP and CLIP against float64 NumPy formulas, and sharded over 8 devices."""

import functools
import importlib.util
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from jax.test_util import check_grads

import softlab.losses
import softlab.losses.nnx
from softlab.losses import CLIPLogitScale, SigLIPLogitParams, clip_loss, siglip_loss

RNG = np.random.default_rng(0)
BATCH, DIM = 32, 8  # 4 pairs per device on 8 devices


def unit(z):
  z = np.asarray(z, np.float64)
  return z / np.linalg.norm(z, axis=1, keepdims=True)


def ref_siglip(zimg, ztxt, t, b, normalize=True):
  """l_i = -sum_j log sigmoid(z_ij (t x_i.y_j + b)), z = 2 I - 1 (float64)."""
  x, y = (
      (unit(zimg), unit(ztxt))
      if normalize
      else (np.float64(zimg), np.float64(ztxt))
  )
  z = 2 * np.eye(len(x)) - 1
  return np.sum(np.logaddexp(0.0, -z * (t * x @ y.T + b)), axis=1)


def ref_clip(zimg, ztxt, t, normalize=True):
  """l_i = -(log softmax_j(t x_i.y_j)_i + log softmax_j(t x_j.y_i)_i) / 2 (float64)."""
  x, y = (
      (unit(zimg), unit(ztxt))
      if normalize
      else (np.float64(zimg), np.float64(ztxt))
  )
  logits = t * x @ y.T

  def log_softmax_diagonal(a):
    top = a.max(1, keepdims=True)
    return np.diag(a - top - np.log(np.exp(a - top).sum(1, keepdims=True)))

  return -(log_softmax_diagonal(logits) + log_softmax_diagonal(logits.T)) / 2


def pairs(batch=BATCH, dim=DIM, seed=0):
  rng = np.random.default_rng(seed)
  zimg = rng.standard_normal((batch, dim)).astype(np.float32)
  # Texts correlated with their images, so positives and negatives differ.
  ztxt = (zimg + 0.8 * rng.standard_normal((batch, dim))).astype(np.float32)
  return zimg, ztxt


@pytest.mark.parametrize("t, b", [(10.0, -10.0), (1.0, 0.0), (50.0, -3.0)])
@pytest.mark.parametrize("normalize", [True, False])
def test_siglip_matches_paper_formula(t, b, normalize):
  zimg, ztxt = pairs()
  if not normalize:
    zimg, ztxt = unit(zimg).astype(np.float32), unit(ztxt).astype(np.float32)
  got = jax.jit(functools.partial(siglip_loss, normalize=normalize))(
      zimg, ztxt, t=t, b=b
  )
  assert got.shape == (BATCH,) and got.dtype == jnp.float32
  np.testing.assert_allclose(
      got, ref_siglip(zimg, ztxt, t, b), rtol=1e-5, atol=1e-5
  )


def test_siglip_mean_is_sum_over_all_pairs_divided_by_batch():
  zimg, ztxt = pairs()
  x, y = unit(zimg), unit(ztxt)
  total = sum(
      -math.log(
          1 / (1 + math.exp(-(1 if i == j else -1) * (10 * x[i] @ y[j] - 10)))
      )
      for i in range(BATCH)
      for j in range(BATCH)
  )
  np.testing.assert_allclose(
      jnp.mean(jax.jit(siglip_loss)(zimg, ztxt, t=10.0, b=-10.0)),
      total / BATCH,
      rtol=1e-5,
  )


@pytest.mark.parametrize("t", [1.0, 1 / 0.07, 100.0])
@pytest.mark.parametrize("normalize", [True, False])
def test_clip_matches_paper_formula(t, normalize):
  zimg, ztxt = pairs()
  if not normalize:
    zimg, ztxt = unit(zimg).astype(np.float32), unit(ztxt).astype(np.float32)
  got = jax.jit(functools.partial(clip_loss, normalize=normalize))(
      zimg, ztxt, t=t
  )
  assert got.shape == (BATCH,) and got.dtype == jnp.float32
  # Logits of size t carry float32 rounding of about t * 6e-8.
  np.testing.assert_allclose(
      got, ref_clip(zimg, ztxt, t), rtol=1e-5, atol=1e-5 * max(1, t / 10)
  )


def test_gradients_match_finite_differences_in_float64(x64):
  zimg, ztxt = (jnp.asarray(z, jnp.float64) for z in pairs(batch=6, dim=4))
  weights = jnp.asarray(RNG.random(6))
  siglip = lambda x, y, t, b: jnp.sum(siglip_loss(x, y, t=t, b=b) * weights)
  clip = lambda x, y, t: jnp.sum(clip_loss(x, y, t=t) * weights)
  check_grads(
      jax.jit(siglip), (zimg, ztxt, 3.0, -2.0), order=1, modes=("fwd", "rev")
  )
  check_grads(jax.jit(clip), (zimg, ztxt, 3.0), order=1, modes=("fwd", "rev"))


def test_zero_embeddings_and_low_precision_inputs():
  zimg, ztxt = pairs(batch=4)
  zimg[0] = 0.0
  for loss in (functools.partial(siglip_loss, b=-10.0), clip_loss):
    loss = jax.jit(functools.partial(loss, t=10.0))
    assert np.all(
        np.isfinite(
            jax.jit(jax.grad(lambda x, y: jnp.sum(loss(x, y)), (0, 1)))(
                zimg, ztxt
            )
        )
    )
    low = loss(jnp.asarray(zimg, jnp.bfloat16), jnp.asarray(ztxt, jnp.bfloat16))
    assert low.dtype == jnp.float32
    np.testing.assert_allclose(low, loss(zimg, ztxt), rtol=2e-2, atol=2e-2)


def test_jit_and_vmap_compose():
  zimg, ztxt = pairs()
  stacked = (zimg.reshape(4, 8, DIM), ztxt.reshape(4, 8, DIM))
  for loss in (
      functools.partial(siglip_loss, t=10.0, b=-10.0),
      functools.partial(clip_loss, t=10.0),
  ):
    vmapped = jax.jit(jax.vmap(loss))(*stacked)
    np.testing.assert_allclose(
        vmapped,
        np.stack([jax.jit(loss)(x, y) for x, y in zip(*stacked)]),
        rtol=1e-5,
        atol=1e-6,
    )


# ---------------------------------------------------------------------------
# Across 8 devices.
# ---------------------------------------------------------------------------

MESH = jax.make_mesh((8,), ("data",))
BATCH_SPEC = NamedSharding(MESH, P("data"))


def sharded(loss, *scalars):
  """jit(value_and_grad(mean loss)) of `loss` inside shard_map over "data"."""
  inner = jax.shard_map(
      lambda x, y, *s: loss(x, y, *s, axis_name="data"),
      mesh=MESH,
      in_specs=(P("data"), P("data")) + (P(),) * len(scalars),
      out_specs=P("data"),
  )
  argnums = tuple(range(2 + len(scalars)))
  return jax.jit(jax.value_and_grad(lambda *a: jnp.mean(inner(*a)), argnums))


def dense(loss, *scalars):
  argnums = tuple(range(2 + len(scalars)))
  return jax.jit(jax.value_and_grad(lambda *a: jnp.mean(loss(*a)), argnums))


def assert_same(got, want):
  (value, grads), (want_value, want_grads) = got, want
  np.testing.assert_allclose(value, want_value, rtol=1e-5, atol=1e-5)
  for g, w in zip(grads, want_grads):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def siglip(x, y, t, b, axis_name=None):
  return siglip_loss(x, y, t=t, b=b, axis_name=axis_name)


def clip(x, y, t, axis_name=None):
  return clip_loss(x, y, t=t, axis_name=axis_name)


def test_sharded_siglip_equals_dense_loss_and_gradients():
  zimg, ztxt = pairs()
  args = (
      jax.device_put(zimg, BATCH_SPEC),
      jax.device_put(ztxt, BATCH_SPEC),
      10.0,
      -10.0,
  )
  assert_same(
      sharded(siglip, "t", "b")(*args),
      dense(siglip, "t", "b")(zimg, ztxt, 10.0, -10.0),
  )
  # Per-example values: device k returns the values of its own pairs.
  values = jax.jit(
      jax.shard_map(
          lambda x, y: siglip_loss(x, y, t=10.0, b=-10.0, axis_name="data"),
          mesh=MESH,
          in_specs=(P("data"), P("data")),
          out_specs=P("data"),
      )
  )(*args[:2])
  np.testing.assert_allclose(
      values, ref_siglip(zimg, ztxt, 10.0, -10.0), rtol=1e-5, atol=1e-5
  )


def test_sharded_clip_equals_dense_loss_and_gradients():
  zimg, ztxt = pairs()
  args = (
      jax.device_put(zimg, BATCH_SPEC),
      jax.device_put(ztxt, BATCH_SPEC),
      10.0,
  )
  assert_same(sharded(clip, "t")(*args), dense(clip, "t")(zimg, ztxt, 10.0))


def test_siglip_under_pmap_equals_dense():
  zimg, ztxt = pairs()
  per_device = lambda x, y: jnp.sum(
      siglip_loss(x, y, t=10.0, b=-10.0, axis_name="data")
  )
  values, grads = jax.pmap(
      jax.value_and_grad(per_device, (0, 1)), axis_name="data"
  )(zimg.reshape(8, -1, DIM), ztxt.reshape(8, -1, DIM))
  want_value, want_grads = jax.jit(jax.value_and_grad(
      lambda x, y: jnp.sum(siglip_loss(x, y, t=10.0, b=-10.0)), (0, 1)
  ))(zimg, ztxt)
  np.testing.assert_allclose(jnp.sum(values), want_value, rtol=1e-5)
  # Each device's sum is seeded with 1 and the cotangents travel back around the
  # ring, so each device gets the gradient of the global sum for its own pairs.
  for g, w in zip(grads, want_grads):
    np.testing.assert_allclose(g.reshape(BATCH, DIM), w, rtol=1e-5, atol=1e-5)


def load_benchmarks():
  """benchmarks/losses.py, whose all-gather SigLIP is the peer of the memory test."""
  path = pathlib.Path(__file__).parents[2] / "benchmarks" / "losses.py"
  spec = importlib.util.spec_from_file_location("softlab_loss_benchmarks", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_sharded_siglip_memory_is_a_quarter_of_all_gather():
  """Per-device temp memory, forward + backward, global batch 16384, dim 256 (compile only)."""
  benchmarks = load_benchmarks()
  ring = benchmarks.siglip_temp_bytes(benchmarks.ring_siglip) / 2**20
  gathered = benchmarks.siglip_temp_bytes(benchmarks.all_gather_siglip) / 2**20
  print(
      f"per-device temp memory: ppermute ring {ring:.1f} MiB, all-gather {gathered:.1f} MiB"
  )
  assert ring <= gathered / 4


# ---------------------------------------------------------------------------
# Learnable temperature and bias, properties, registry, errors.
# ---------------------------------------------------------------------------


def test_logit_params_start_at_the_papers_values():
  params = SigLIPLogitParams().init(jax.random.key(0))
  t, b = SigLIPLogitParams().apply(params)
  np.testing.assert_allclose((t, b), (10.0, -10.0), rtol=1e-6)
  scale = CLIPLogitScale()
  np.testing.assert_allclose(
      scale.apply(scale.init(jax.random.key(0))), 1 / 0.07, rtol=1e-6
  )
  # CLIP caps t at 100: no gradient pushes t' further.
  big = {"params": {"t_prime": jnp.float32(5.0)}}
  assert float(scale.apply(big)) == 100.0
  assert (
      float(jax.grad(lambda p: scale.apply(p))(big)["params"]["t_prime"]) == 0.0
  )


@pytest.mark.parametrize("linen_cls, nnx_cls, options", [
    (SigLIPLogitParams, softlab.losses.nnx.SigLIPLogitParams, {}),
    (SigLIPLogitParams, softlab.losses.nnx.SigLIPLogitParams, {"bias_init": None}),
    (CLIPLogitScale, softlab.losses.nnx.CLIPLogitScale, {"t_prime_init": 5.0}),
])
def test_nnx_logit_params_equal_linen(linen_cls, nnx_cls, options):
  linen_module, module = linen_cls(**options), nnx_cls(**options)
  params = linen_module.init(jax.random.key(0))
  assert jax.tree.map(float, params["params"]) == jax.tree.map(
      float, nnx.to_pure_dict(nnx.state(module, nnx.Param)))
  trained = jax.tree.map(lambda p: p + 0.5, params)
  nnx.update(module, trained["params"])
  want = linen_module.apply(trained, method="loss_arguments")
  got = module.loss_arguments()
  assert set(got) == set(want)
  for key in want:
    np.testing.assert_allclose(got[key], want[key], rtol=1e-6)
  graphdef, state = nnx.split(module)
  grads = jax.grad(lambda s: sum(nnx.merge(graphdef, s).loss_arguments().values()))(state)
  want_grads = jax.grad(lambda p: sum(linen_module.apply(p, method="loss_arguments").values()))(
      trained)
  assert jax.tree.map(float, nnx.to_pure_dict(grads)) == pytest.approx(
      jax.tree.map(float, want_grads["params"]))


def test_end_to_end_training_step_with_learned_temperature():
  zimg, ztxt = pairs()
  model = SigLIPLogitParams()
  params = model.init(jax.random.key(0))

  def objective(params):
    t, b = model.apply(params)
    return jnp.mean(siglip_loss(zimg, ztxt, t=t, b=b))

  grads = jax.grad(objective)(params)["params"]
  # With b = -10 almost every pair looks negative: the bias gradient pulls b up.
  assert float(grads["bias"]) < 0 and np.isfinite(float(grads["t_prime"]))
  updated = jax.tree.map(lambda p, g: p - 0.01 * g, params, {"params": grads})
  assert float(objective(updated)) < float(objective(params))


FINITE = hnp.arrays(np.float32, (4, 3), elements=st.floats(-1e4, 1e4, width=32))


@functools.cache
def jitted_grads():
  siglip_g = jax.jit(
      jax.value_and_grad(
          lambda x, y, t, b: jnp.sum(siglip_loss(x, y, t=t, b=b)), (0, 1, 2, 3)
      )
  )
  clip_g = jax.jit(
      jax.value_and_grad(
          lambda x, y, t: jnp.sum(clip_loss(x, y, t=t)), (0, 1, 2)
      )
  )
  return siglip_g, clip_g


@given(
    zimg=FINITE, ztxt=FINITE, t=st.floats(0.01, 100.0), b=st.floats(-20.0, 20.0)
)
def test_property_finite_values_and_gradients(zimg, ztxt, t, b):
  siglip_g, clip_g = jitted_grads()
  for value, grads in (siglip_g(zimg, ztxt, t, b), clip_g(zimg, ztxt, t)):
    assert np.isfinite(value) and value >= 0
    assert all(np.all(np.isfinite(g)) for g in grads)


def test_registry():
  assert softlab.losses.get("siglip_loss") is siglip_loss
  assert softlab.losses.get("clip_loss") is clip_loss


def test_bad_shapes_raise_one_line_errors():
  with pytest.raises(ValueError, match="zimg and ztxt must be"):
    siglip_loss(np.ones((4, 3)), np.ones((4, 2)), t=1.0, b=0.0)
  with pytest.raises(ValueError, match="zimg and ztxt must be"):
    clip_loss(np.ones(4), np.ones(4), t=1.0)
