"""linear_cross_entropy against dense float64 NumPy and dense autodiff, on 1 and 8 devices."""

import functools

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
from softlab.losses import linear_cross_entropy

RNG = np.random.default_rng(0)


def ref_loss(hidden, weight, labels, where=None, z_loss=0.0, cap=None):
  """Dense float64 NumPy: lse - logit_y + z_loss lse^2, 0 where masked."""
  logits = np.asarray(hidden, np.float64) @ np.asarray(weight, np.float64)
  if cap is not None:
    logits = cap * np.tanh(logits / cap)
  top = logits.max(-1, keepdims=True)
  lse = (top + np.log(np.exp(logits - top).sum(-1, keepdims=True)))[..., 0]
  safe = np.where((labels >= 0) & (labels < logits.shape[-1]), labels, 0)
  target = np.take_along_axis(logits, safe[..., None], -1)[..., 0]
  loss = lse - target + z_loss * lse**2
  return loss if where is None else np.where(where, loss, 0.0)


def dense_loss(hidden, weight, labels, where=None, z_loss=0.0, cap=None):
  """The dense computation in JAX (for gradients): N x V logits."""
  logits = hidden @ weight
  if cap is not None:
    logits = cap * jnp.tanh(logits / cap)
  lse = jax.nn.logsumexp(logits, axis=-1)
  safe = jnp.where((labels >= 0) & (labels < logits.shape[-1]), labels, 0)
  target = jnp.take_along_axis(logits, safe[..., None], -1)[..., 0]
  loss = lse - target + z_loss * lse**2
  return loss if where is None else jnp.where(where, loss, 0.0)


def problem(tokens=24, dim=8, vocab=77, seed=0):
  rng = np.random.default_rng(seed)
  hidden = rng.standard_normal((tokens, dim)).astype(np.float32)
  weight = (rng.standard_normal((dim, vocab)) / np.sqrt(dim) * 3).astype(
      np.float32
  )
  labels = rng.integers(0, vocab, tokens).astype(np.int32)
  return hidden, weight, labels


def masked_problem(tokens=24, dim=8, vocab=77):
  hidden, weight, labels = problem(tokens, dim, vocab)
  where = RNG.random(tokens) > 0.3
  labels = np.where(where, labels, -100)  # ignored tokens carry any label
  return hidden, weight, labels, where


def grads(fn, hidden, weight, cotangent):
  return jax.grad(lambda h, w: jnp.sum(fn(h, w) * cotangent), (0, 1))(
      hidden, weight
  )


def assert_matches_dense(fn, args, hidden, weight, labels, where, case):
  """jit(fn)(*args) and its gradients equal the dense loss (1e-5 / 1e-4)."""
  got = jax.jit(fn)(*args)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(
      got, ref_loss(hidden, weight, labels, where, **case), rtol=1e-5, atol=1e-5
  )
  cotangent = RNG.standard_normal(labels.shape).astype(np.float32)
  dense = lambda h, w: dense_loss(h, w, labels, where, **case)
  want = grads(dense, hidden, weight, cotangent)
  got = jax.jit(lambda h, w: grads(fn, h, w, cotangent))(*args)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


CASES = {
    "blocks_divide_vocab": dict(vocab=64, block_size=16),
    "ragged_last_block": dict(vocab=77, block_size=16),
    "block_larger_than_vocab": dict(vocab=77, block_size=128),
    "default_block": dict(vocab=77, block_size=None),
    "z_loss": dict(vocab=77, block_size=16, z_loss=1e-2),
    "soft_cap": dict(vocab=77, block_size=16, cap=2.0),
    "everything": dict(vocab=77, block_size=8, z_loss=1e-2, cap=2.0),
    "masked": dict(vocab=77, block_size=16, masked=True),
    "everything_masked": dict(
        vocab=77, block_size=8, z_loss=1e-2, cap=2.0, masked=True
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_dense_values_and_gradients(name):
  case = dict(CASES[name])
  vocab, block_size = case.pop("vocab"), case.pop("block_size")
  if case.pop("masked", False):
    hidden, weight, labels, where = masked_problem(vocab=vocab)
  else:
    (hidden, weight, labels), where = problem(vocab=vocab), None
  fn = lambda h, w: linear_cross_entropy(
      h,
      w,
      labels,
      block_size=block_size,
      where=where,
      z_loss=case.get("z_loss", 0.0),
      logit_soft_cap=case.get("cap"),
  )
  assert_matches_dense(
      fn, (hidden, weight), hidden, weight, labels, where, case
  )


def test_masked_tokens_give_zero_and_zero_gradient():
  hidden, weight, labels, where = masked_problem()
  fn = lambda h, w, where: linear_cross_entropy(
      h, w, labels, block_size=16, where=where
  )
  value_and_grads = jax.jit(
      lambda h, w, where: (
          fn(h, w, where),
          grads(lambda h, w: fn(h, w, where), h, w, 1.0),
      )
  )
  out, (d_hidden, _) = value_and_grads(hidden, weight, where)
  assert np.all(out[~where] == 0) and np.all(out[where] > 0)
  assert np.all(d_hidden[~where] == 0)
  out, gradients = value_and_grads(hidden, weight, np.zeros_like(where))
  assert np.all(out == 0)
  for g in gradients:
    assert np.all(g == 0)


def test_leading_batch_dimensions_and_vmap():
  hidden, weight, labels = problem(tokens=24)
  fn = jax.jit(functools.partial(linear_cross_entropy, block_size=16))
  flat = fn(hidden, weight, labels)
  batched = fn(hidden.reshape(2, 3, 4, -1), weight, labels.reshape(2, 3, 4))
  assert batched.shape == (2, 3, 4)
  np.testing.assert_allclose(batched.reshape(-1), flat, rtol=1e-6)
  vmapped = jax.jit(jax.vmap(fn, in_axes=(0, None, 0)))(
      hidden.reshape(4, 6, -1), weight, labels.reshape(4, 6)
  )
  np.testing.assert_allclose(vmapped.reshape(-1), flat, rtol=1e-6)
  grad = jax.grad(lambda h: jnp.sum(fn(h, weight, labels)))
  stacked = jnp.stack([hidden, 2 * hidden])
  np.testing.assert_allclose(
      jax.jit(jax.vmap(grad))(stacked),
      jnp.stack([grad(hidden), grad(2 * hidden)]),
      rtol=1e-5,
      atol=1e-6,
  )


def test_gradients_match_finite_differences_in_float64(x64):
  hidden, weight, labels, where = masked_problem(tokens=6, dim=4, vocab=13)
  fn = lambda h, w: linear_cross_entropy(
      h, w, labels, block_size=4, where=where, z_loss=0.1, logit_soft_cap=3.0
  )
  args = (jnp.asarray(hidden, jnp.float64), jnp.asarray(weight, jnp.float64))
  assert fn(*args).dtype == jnp.float64
  check_grads(jax.jit(fn), args, order=1, modes=("rev",), atol=1e-6, rtol=1e-6)


def test_float64_compute_dtype_from_float32_inputs(x64):
  hidden, weight, labels = problem()
  got = jax.jit(
      functools.partial(linear_cross_entropy, block_size=16, dtype=jnp.float64)
  )(hidden, weight, labels)
  assert got.dtype == jnp.float64
  np.testing.assert_allclose(got, ref_loss(hidden, weight, labels), rtol=1e-12)


def test_bfloat16_inputs():
  hidden, weight, labels = problem()
  h16, w16 = jnp.asarray(hidden, jnp.bfloat16), jnp.asarray(
      weight, jnp.bfloat16
  )
  fn = lambda h, w: linear_cross_entropy(h, w, labels, block_size=16)
  got, (d_hidden, d_weight) = jax.jit(
      lambda h, w: (fn(h, w), grads(fn, h, w, 1.0))
  )(h16, w16)
  assert got.dtype == jnp.float32
  want = ref_loss(
      np.asarray(h16.astype(jnp.float32)),
      np.asarray(w16.astype(jnp.float32)),
      labels,
  )
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  assert d_hidden.dtype == jnp.bfloat16 and d_weight.dtype == jnp.bfloat16
  assert np.all(np.isfinite(np.asarray(d_weight, np.float32)))


def test_logits_never_materialize():
  tokens, dim, vocab = 1024, 64, 32768
  spec = lambda *shape, dtype=jnp.float32: jax.ShapeDtypeStruct(shape, dtype)
  args = (spec(tokens, dim), spec(dim, vocab), spec(tokens, dtype=jnp.int32))

  def temp_bytes(loss):
    step = jax.jit(
        jax.value_and_grad(lambda h, w, y: jnp.mean(loss(h, w, y)), (0, 1))
    )
    return step.lower(*args).compile().memory_analysis().temp_size_in_bytes

  fused = temp_bytes(functools.partial(linear_cross_entropy, block_size=256))
  dense = temp_bytes(dense_loss)
  print(
      f"temp memory: fused {fused / 2**20:.1f} MiB, dense {dense / 2**20:.1f} MiB"
  )
  assert fused < tokens * vocab * 4 / 16 < dense


# ---------------------------------------------------------------------------
# Across devices.
# ---------------------------------------------------------------------------

MESH = jax.make_mesh((8,), ("data",))


def put(x, *spec):
  return jax.device_put(x, NamedSharding(MESH, P(*spec)))


@pytest.mark.parametrize("hyper", [{}, {"z_loss": 1e-2, "logit_soft_cap": 2.0}])
def test_vocabulary_sharded_equals_dense(hyper):
  hidden, weight, labels, where = masked_problem(tokens=16, vocab=8 * 13)
  fn = lambda h, w: linear_cross_entropy(
      h, w, labels, block_size=8, where=where, axis_name="data", **hyper
  )
  sharded = jax.shard_map(
      fn, mesh=MESH, in_specs=(P(), P(None, "data")), out_specs=P()
  )
  case = {
      "z_loss": hyper.get("z_loss", 0.0),
      "cap": hyper.get("logit_soft_cap"),
  }
  args = (put(hidden), put(weight, None, "data"))
  assert_matches_dense(sharded, args, hidden, weight, labels, where, case)


def test_tokens_sharded_with_replicated_weight_equals_dense():
  # Data parallel: no axis_name; the weight gradient is summed over devices.
  hidden, weight, labels = problem(tokens=16)
  fn = lambda h, w, y: linear_cross_entropy(h, w, y, block_size=16, z_loss=1e-2)
  sharded = jax.shard_map(
      fn, mesh=MESH, in_specs=(P("data"), P(), P("data")), out_specs=P("data")
  )
  cotangent = RNG.standard_normal(labels.shape).astype(np.float32)
  y = put(labels, "data")
  got = jax.jit(
      lambda h, w: grads(
          lambda h, w: sharded(h, w, y), h, w, put(cotangent, "data")
      )
  )(put(hidden, "data"), put(weight))
  want = grads(
      lambda h, w: dense_loss(h, w, labels, z_loss=1e-2),
      hidden,
      weight,
      cotangent,
  )
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def test_vocabulary_sharded_under_pmap():
  hidden, weight, labels = problem(tokens=16, vocab=8 * 13)
  shards = weight.reshape(weight.shape[0], 8, -1).transpose(1, 0, 2)
  fn = lambda h, w: linear_cross_entropy(
      h, w, labels, block_size=8, axis_name="data"
  )
  value_and_grad = jax.value_and_grad(
      lambda h, w: jnp.sum(fn(h, w) * np.arange(16))
  )
  out = jax.pmap(fn, axis_name="data", in_axes=(None, 0))(hidden, shards)
  want = ref_loss(hidden, weight, labels)
  np.testing.assert_allclose(
      out, np.broadcast_to(want, out.shape), rtol=1e-5, atol=1e-5
  )
  _, d_hidden = jax.pmap(value_and_grad, axis_name="data", in_axes=(None, 0))(
      hidden, shards
  )
  want_d_hidden = jax.grad(
      lambda h: jnp.sum(dense_loss(h, weight, labels) * np.arange(16))
  )(hidden)
  np.testing.assert_allclose(
      d_hidden,
      np.broadcast_to(want_d_hidden, d_hidden.shape),
      rtol=1e-4,
      atol=1e-4,
  )


# ---------------------------------------------------------------------------
# Properties, registry, errors.
# ---------------------------------------------------------------------------


@functools.cache
def value_and_grad(z_loss, cap):
  fn = lambda h, w, y, where: jnp.sum(
      linear_cross_entropy(
          h, w, y, block_size=4, where=where, z_loss=z_loss, logit_soft_cap=cap
      )
  )
  return jax.jit(jax.value_and_grad(fn, (0, 1)))


@given(
    hidden=hnp.arrays(
        np.float32, (5, 3), elements=st.floats(-1e4, 1e4, width=32)
    ),
    weight=hnp.arrays(
        np.float32, (3, 10), elements=st.floats(-1e4, 1e4, width=32)
    ),
    labels=hnp.arrays(np.int32, 5, elements=st.integers(0, 9)),
    where=hnp.arrays(np.bool_, 5),
)
def test_property_finite_values_and_gradients(hidden, weight, labels, where):
  for z_loss, cap in [(0.0, None), (1e-4, 30.0)]:
    value, (d_hidden, d_weight) = value_and_grad(z_loss, cap)(
        hidden, weight, labels, where
    )
    assert np.isfinite(value) and value >= 0
    assert np.all(np.isfinite(d_hidden)) and np.all(np.isfinite(d_weight))


def test_masked_tokens_may_carry_any_label():
  hidden = np.ones((4, 3), np.float32)
  labels = np.array([0, -100, 1, 2], np.int32)
  where = labels >= 0
  loss = linear_cross_entropy(hidden, np.ones((3, 7), np.float32), labels, where=where)
  np.testing.assert_allclose(loss, np.where(where, np.log(7), 0), rtol=1e-6)


def test_registry():
  assert softlab.losses.get("linear_cross_entropy") is linear_cross_entropy


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(weight=np.ones((5, 7))), "hidden of shape"),
        (dict(weight=np.ones(7)), r"weight must be \[d, V\]"),
        (dict(labels=np.zeros(4, np.float32)), "labels must be integers"),
        (
            dict(labels=np.zeros(3, np.int32)),
            "labels must be integers of shape",
        ),
        (dict(where=np.ones(4)), "where must be a boolean array"),
        (dict(block_size=0), "block_size must be a positive int"),
        (dict(z_loss=-1.0), "z_loss must be >= 0"),
        (dict(logit_soft_cap=0.0), "logit_soft_cap must be > 0"),
        (dict(labels=np.array([0, 7, 1, 2], np.int32)), r"labels must lie in \[0, 7\)"),
        (dict(labels=np.array([0, -1, 1, 2], np.int32)), r"labels must lie in \[0, 7\)"),
    ],
)
def test_bad_arguments_raise_one_line_errors(kwargs, message):
  args = dict(
      hidden=np.ones((4, 3), np.float32),
      weight=np.ones((3, 7), np.float32),
      labels=np.zeros(4, np.int32),
  )
  args.update(kwargs)
  with pytest.raises(ValueError, match=message):
    linear_cross_entropy(
        args.pop("hidden"), args.pop("weight"), args.pop("labels"), **args
    )


def test_filter_eps_skips_low_probability_blocks_and_keeps_the_loss():
  # Labels in the first block and logits peaked there: the later blocks carry
  # almost no probability, so with filter_eps they skip their gradient matmuls.
  hidden, weight, _ = problem(tokens=16, dim=8, vocab=64)
  weight[:, 16:] *= 0.05
  hidden = 4 * hidden
  labels = np.argmax(hidden @ weight[:, :16], axis=-1).astype(np.int32)
  eps = 1e-3
  cotangent = RNG.standard_normal(labels.shape).astype(np.float32)

  @jax.jit
  def run(h, w):
    values = [linear_cross_entropy(h, w, labels, block_size=16, filter_eps=e) for e in (None, eps)]
    grad = [grads(lambda h, w, e=e: linear_cross_entropy(h, w, labels, block_size=16, filter_eps=e),
                  h, w, cotangent) for e in (None, eps)]
    return values, grad

  (plain, filtered), (plain_grad, filtered_grad) = run(hidden, weight)
  np.testing.assert_array_equal(filtered, plain)
  # Reference: d loss / d logits = g (p - e_y) with the p of skipped blocks dropped.
  logits = np.asarray(hidden, np.float64) @ np.asarray(weight, np.float64)
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  blocks = p.reshape(16, 4, 16).max(axis=(0, 2))
  skipped = blocks < eps
  assert skipped.any() and not skipped.all()
  kept_p = np.where(np.repeat(skipped, 16)[None, :], 0, p)
  d_logits = cotangent[:, None] * (kept_p - np.eye(64)[labels])
  np.testing.assert_allclose(filtered_grad[0], d_logits @ weight.T, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(filtered_grad[1], hidden.T @ d_logits, rtol=1e-4, atol=1e-5)
  # Every dropped d loss / d logit is below eps |g|.
  dropped = np.abs(cotangent[:, None] * (p - kept_p))
  assert np.all(dropped <= eps * np.abs(cotangent)[:, None])
  assert np.abs(np.asarray(filtered_grad[0]) - np.asarray(plain_grad[0])).max() > 0
  with pytest.raises(ValueError, match=r"filter_eps must be in \(0, 1\) or None"):
    linear_cross_entropy(hidden, weight, labels, filter_eps=1.0)
