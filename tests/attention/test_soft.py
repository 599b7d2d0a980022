"""SOFT (softlab.attention.soft): the Newton-Raphson pseudo-inverse, the Nystrom kernel at
L = n, and gradients against autodiff of an explicit-inverse reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fast_jit import jit
from softlab.attention import soft

RNG = np.random.default_rng(0)


def reference_kernel(x, y, scale):
  """float64 NumPy exp(-scale |x_i - y_j|^2 / 2), [..., I, J]."""
  return np.exp(-0.5 * scale * np.sum((x[..., :, None, :] - y[..., None, :, :]) ** 2, axis=-1))


def test_newton_iteration_matches_pinv():
  points = RNG.standard_normal((3, 6, 4)).astype(np.float32)
  full_rank = reference_kernel(points, points, 0.5).astype(np.float32)
  got, want = jit(lambda a: (soft.newton_pinv(a), jnp.linalg.pinv(a)))(full_rank)
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_newton_iteration_matches_pinv_of_a_rank_deficient_matrix(x64):
  factor = RNG.standard_normal((6, 3))
  rank_3 = factor @ factor.T
  got, want = jit(lambda a: (soft.newton_pinv(a), jnp.linalg.pinv(a)))(rank_3)
  np.testing.assert_allclose(got, want, atol=1e-9)
  np.testing.assert_allclose(rank_3 @ got @ rank_3, rank_3, atol=1e-9)


def test_all_landmarks_reproduce_the_full_kernel(x64):
  b, t, n, h = 2, 8, 2, 4
  query = RNG.standard_normal((b, t, n, h))
  key = RNG.standard_normal((b, t, n, h))
  kernel = jit(lambda q, k: [soft.soft_kernel(q, k, num_landmarks=t, iterations=40),
                             soft.soft_kernel(q, q, num_landmarks=t, iterations=40)])
  cross, self_kernel = kernel(query, key)
  heads_first = lambda x: x.transpose(0, 2, 1, 3)
  want = reference_kernel(heads_first(query), heads_first(key), 1 / np.sqrt(h))
  np.testing.assert_allclose(cross, want, atol=1e-8)
  want = reference_kernel(heads_first(query), heads_first(query), 1 / np.sqrt(h))
  np.testing.assert_allclose(self_kernel, want, atol=1e-8)


def reference_attention(query, key, value, num_landmarks, scale, symmetric):
  """Independent JAX reference with an explicit inverse: [B, N, T, *] layout."""
  b, n, t, h = query.shape
  pool = lambda x: x.reshape(b, n, num_landmarks, -1, h).mean(axis=3)
  kernel = lambda x, y: jnp.exp(-0.5 * scale * jnp.sum((x[..., :, None, :] - y[..., None, :, :])
                                                       ** 2, axis=-1))
  middle = kernel(pool(query), pool(key))
  inverse = jnp.linalg.inv(middle)
  if symmetric:
    d = 1 / jnp.sqrt(middle.sum(-1))
    inverse = d[..., :, None] * inverse * d[..., None, :]
  return kernel(query, pool(key)) @ inverse @ kernel(pool(query), key) @ value


def test_values_and_gradients_match_autodiff_of_an_explicit_inverse(x64):
  b, t, n, h, landmarks = 1, 12, 2, 4, 3
  query, key, value = (RNG.standard_normal((b, t, n, h)) for _ in range(3))
  cotangent = RNG.standard_normal((b, t, n, h))
  heads_first = lambda x: x.transpose(0, 2, 1, 3)

  def ours(q, k, v, symmetric):
    out = soft.soft_attention(q, k, v, num_landmarks=landmarks, iterations=40,
                              symmetric_normalization=symmetric)
    return jnp.sum(out * cotangent)

  def theirs(q, k, v, symmetric):
    out = reference_attention(*map(heads_first, (q, k, v)), landmarks, 1 / np.sqrt(h), symmetric)
    return jnp.sum(heads_first(out) * cotangent)

  both = jit(lambda *args: [[jax.value_and_grad(f, argnums=(0, 1, 2))(*args, symmetric)
                             for f in (ours, theirs)] for symmetric in (False, True)])
  for (value_ours, grads_ours), (value_ref, grads_ref) in both(query, key, value):
    np.testing.assert_allclose(value_ours, value_ref, rtol=1e-9)
    for got, want in zip(grads_ours, grads_ref):
      np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9)


def test_bad_arguments_name_themselves():
  x = jnp.zeros((1, 6, 1, 2))
  with pytest.raises(ValueError, match="multiple of num_landmarks"):
    soft.soft_attention(x, x, x, num_landmarks=4)
  with pytest.raises(ValueError, match="square"):
    soft.newton_pinv(jnp.zeros((2, 3)))
