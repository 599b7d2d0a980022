"""softlab's dot_product_attention against jax.nn.dot_product_attention.

With normalizer="softmax" softlab's function is a drop-in for jax's: each case
calls both with the same arguments and compares the outputs and the gradients
with respect to query, key, value and bias (tolerances as jax's own tests:
1e-2 for bfloat16). Cases follow jax's testDotProductAttention* in spirit:
grouped heads, bias, boolean and float masks, causal with T != S, sequence
lengths, local windows, unbatched inputs and the residual.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fast_jit import jit

from softlab import normalizers
from softlab.attention import chunked
from softlab.attention import dot_product_attention

B, T, S, N, H = 2, 5, 7, 4, 8
TOLERANCE = {jnp.float32: 1e-5, jnp.bfloat16: 2e-2}


def _inputs(dtype, num_kv_heads=N, seed=0, num_queries=T, num_keys=S):
  keys = jax.random.split(jax.random.key(seed), 4)
  query = jax.random.normal(keys[0], (B, num_queries, N, H), dtype)
  key = jax.random.normal(keys[1], (B, num_keys, num_kv_heads, H), dtype)
  value = jax.random.normal(keys[2], (B, num_keys, num_kv_heads, H), dtype)
  cotangent = jax.random.normal(keys[3], (B, num_queries, N, H), dtype)
  return query, key, value, cotangent


def _output_and_grads(attention, query, key, value, bias, cotangent, kwargs):
  """attention(...) and the gradients of <output, cotangent> in q, k, v, bias."""

  def loss(q, k, v, b):
    out = attention(q, k, v, b, **kwargs)
    return jnp.sum(out.astype(jnp.float32) * cotangent.astype(jnp.float32)), out

  argnums = (0, 1, 2) if bias is None else (0, 1, 2, 3)
  grads, out = jax.grad(loss, argnums, has_aux=True)(query, key, value, bias)
  return out, grads


def _check(query, key, value, cotangent, bias=None, tolerance=1e-5, **kwargs):
  """Both functions, one jit: equal outputs and gradients within `tolerance`."""

  @jit
  def both(query, key, value, bias, cotangent):
    ours = _output_and_grads(
        dot_product_attention, query, key, value, bias, cotangent, kwargs
    )
    theirs = _output_and_grads(
        jax.nn.dot_product_attention, query, key, value, bias, cotangent,
        _jax_kwargs(kwargs),
    )
    return ours, theirs

  ours, theirs = both(query, key, value, bias, cotangent)
  assert ours[0].shape == theirs[0].shape and ours[0].dtype == theirs[0].dtype
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
    np.testing.assert_allclose(
        np.asarray(a, np.float32), np.asarray(b, np.float32),
        atol=tolerance, rtol=tolerance,
    )


def _jax_kwargs(kwargs):
  """jax takes only boolean masks; softlab also takes numeric ones."""
  mask = kwargs.get("mask")
  if mask is None or mask.dtype == bool:
    return kwargs
  return {**kwargs, "mask": mask != 0}


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("num_kv_heads", [N, 2, 1])  # MHA, GQA, MQA
def test_heads_and_dtypes(dtype, num_kv_heads):
  query, key, value, cotangent = _inputs(dtype, num_kv_heads)
  _check(query, key, value, cotangent, tolerance=TOLERANCE[dtype])


@pytest.mark.parametrize("implementation", [None, "xla"])
def test_implementations_none_and_xla(implementation):
  query, key, value, cotangent = _inputs(jnp.float32, 2)
  _check(query, key, value, cotangent, is_causal=True, implementation=implementation)


@pytest.mark.parametrize("bias_shape", [(1, N, T, S), (B, 1, T, S), (T, S)])
def test_bias(bias_shape):
  query, key, value, cotangent = _inputs(jnp.float32, 2)
  bias = jax.random.normal(jax.random.key(7), bias_shape)
  _check(query, key, value, cotangent, bias=bias)


def _padding_mask():
  """[B, 1, T, S]: example b attends its first 3 + b keys (every row keeps one)."""
  keep = np.arange(S)[None, :] < np.array([3, 4])[:, None]
  return jnp.asarray(np.broadcast_to(keep[:, None, None, :], (B, 1, T, S)))


@pytest.mark.parametrize("dtype", [bool, jnp.float32, jnp.int32])
def test_masks_boolean_and_numeric(dtype):
  query, key, value, cotangent = _inputs(jnp.float32)
  mask = _padding_mask().astype(dtype)
  bias = jax.random.normal(jax.random.key(7), (1, N, T, S))
  _check(query, key, value, cotangent, bias=bias, mask=mask, is_causal=True)


def test_flax_mask_helpers():
  """flax's float32 masks work unconverted (and mean what jax's booleans do)."""
  query, key, value, cotangent = _inputs(jnp.float32, num_keys=T)
  tokens = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
  mask = nn.combine_masks(
      nn.make_attention_mask(tokens > 0, tokens > 0), nn.make_causal_mask(tokens)
  )
  assert mask.dtype == jnp.float32
  ours = dot_product_attention(query, key, value, mask=mask)
  theirs = jax.nn.dot_product_attention(query, key, value, mask=mask != 0)
  kept = np.asarray(tokens > 0)
  np.testing.assert_allclose(ours[kept], theirs[kept], atol=1e-6)


@pytest.mark.parametrize("num_queries, num_keys", [(5, 7), (7, 5)])
def test_causal_is_top_left_when_lengths_differ(num_queries, num_keys):
  query, key, value, cotangent = _inputs(
      jnp.float32, 2, num_queries=num_queries, num_keys=num_keys
  )
  _check(query, key, value, cotangent, is_causal=True)


@pytest.mark.parametrize("is_causal", [False, True])
def test_sequence_lengths(is_causal):
  query, key, value, cotangent = _inputs(jnp.float32, 2)
  _check(
      query, key, value, cotangent,
      is_causal=is_causal,
      query_seq_lengths=jnp.array([T - 2, T], jnp.int32),
      key_value_seq_lengths=jnp.array([S, 3], jnp.int32),
  )


@pytest.mark.parametrize(
    "window, is_causal", [(1, False), ((3, 0), False), ((2, 1), True), ((0, 2), False)]
)
def test_local_window(window, is_causal):
  query, key, value, cotangent = _inputs(jnp.float32)
  _check(query, key, value, cotangent, local_window_size=window, is_causal=is_causal)


def test_window_sizes_change_the_output():
  query, key, value, _ = _inputs(jnp.float32, num_keys=T)
  wide = dot_product_attention(query, key, value, local_window_size=(4, 4))
  narrow = dot_product_attention(query, key, value, local_window_size=(1, 1))
  assert not np.allclose(wide, narrow)


def test_unbatched_inputs():
  query, key, value, cotangent = _inputs(jnp.float32, 2)
  bias = jax.random.normal(jax.random.key(7), (N, T, S))
  _check(query[0], key[0], value[0], cotangent[0], bias=bias, is_causal=True)


def test_residual():
  query, key, value, _ = _inputs(jnp.float32, 2)
  kwargs = dict(is_causal=True, key_value_seq_lengths=jnp.array([S, 3], jnp.int32))

  @jit
  def both(query, key, value):
    ours = dot_product_attention(query, key, value, return_residual=True, **kwargs)
    theirs = jax.nn.dot_product_attention(
        query, key, value, return_residual=True, **kwargs
    )
    return ours, theirs

  (out, residual), (jax_out, jax_residual) = both(query, key, value)
  assert residual.shape == jax_residual.shape == (B, T, N)
  np.testing.assert_allclose(out, jax_out, atol=1e-5)
  np.testing.assert_allclose(residual, jax_residual, atol=1e-5)


def test_vmap_over_unbatched_calls():
  query, key, value, _ = _inputs(jnp.float32, 2)
  mapped = jax.vmap(lambda q, k, v: dot_product_attention(q, k, v, is_causal=True))
  want = jax.nn.dot_product_attention(query, key, value, is_causal=True)
  np.testing.assert_allclose(mapped(query, key, value), want, atol=1e-5)


def test_strict_rank_promotion_and_debug_infs():
  """No implicit rank promotion and no infinite intermediate, even unjitted."""
  query, key, value, cotangent = _inputs(jnp.float32, 2)
  mask = jnp.arange(S) <= S // 2
  with jax.numpy_rank_promotion("raise"), jax.debug_infs(True):
    ours = dot_product_attention(
        query, key, value, mask=mask, is_causal=True,
        query_seq_lengths=jnp.array([T - 1, T], jnp.int32), local_window_size=(2, 1),
    )
    grads = jax.grad(
        lambda q: jnp.sum(dot_product_attention(q, key, value, mask=mask) * cotangent)
    )(query)
  theirs = jax.nn.dot_product_attention(
      query, key, value, mask=mask[None, None, None], is_causal=True,
      query_seq_lengths=jnp.array([T - 1, T], jnp.int32), local_window_size=(2, 1),
  )
  np.testing.assert_allclose(ours, theirs, atol=1e-5)
  assert np.isfinite(grads).all()


def test_cudnn_off_gpu_is_a_one_line_error():
  if jax.default_backend() == "gpu":
    pytest.skip("cuDNN is available here")
  query, key, value, _ = _inputs(jnp.bfloat16)
  with pytest.raises(ValueError, match=r"^implementation='cudnn' needs a GPU backend[^\n]*$"):
    dot_product_attention(query, key, value, implementation="cudnn")


def test_every_normalizer_traces_under_strict_rank_promotion():
  """Rank promotion is checked while tracing, so eval_shape is enough."""
  query, key, value, _ = _inputs(jnp.float32, 2)
  bias = jnp.zeros((1, N, T, S))
  per_head = jnp.ones(N)
  implementations = {"dense": normalizers.attention_names(), "chunked": chunked.supported()}
  for implementation, names in implementations.items():
    for name in names:
      per_head_kwargs = {k: per_head for k in normalizers.attention_spec(name).per_head}
      # Chunked per-head hyperparameters still rely on rank promotion.
      for kwargs in ({}, per_head_kwargs) if implementation == "dense" else ({},):

        def loss(q, kwargs=kwargs, name=name, implementation=implementation):
          return jnp.sum(dot_product_attention(
              q, key, value, bias, mask=jnp.arange(S) < 5, is_causal=True,
              local_window_size=2, query_seq_lengths=jnp.array([3, T]),
              normalizer=name, normalizer_kwargs=kwargs,
              implementation=implementation, block_size=2,
          ))

        with jax.numpy_rank_promotion("raise"):
          jax.eval_shape(jax.grad(loss), query)
