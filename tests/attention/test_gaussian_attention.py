"""Gaussian-kernel attention (normalizer "gaussian"): the kernel, its translation
invariance, and the chunked path against the dense one."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from fast_jit import jit
from softlab.attention import attention_weights, dot_product_attention

RNG = np.random.default_rng(0)
B, T, N, K, H = 2, 9, 4, 2, 5
QUERY = RNG.standard_normal((B, T, N, H))
KEY = RNG.standard_normal((B, T, K, H))
VALUE = RNG.standard_normal((B, T, K, 3))
MASK = RNG.random((B, 1, T, T)) > 0.2


def kernel_weights(query, key, mask, sigma2):
  """float64 NumPy: exp(-|q_i - k_j|^2 / (2 sigma^2)) over the causal, unmasked keys, normalized."""
  key = np.repeat(key, N // K, axis=2)
  distance = np.sum((query[:, :, None, :, :] - key[:, None, :, :, :]) ** 2, axis=-1)  # [B, T, S, N]
  kernel = np.exp(-distance.transpose(0, 3, 1, 2) / (2 * sigma2))
  keep = mask & np.tril(np.ones((T, T), bool))
  kernel = np.where(keep, kernel, 0)
  total = kernel.sum(-1, keepdims=True)
  return np.divide(kernel, total, out=np.zeros_like(kernel), where=total > 0)


def test_weights_are_the_normalized_gaussian_kernel_in_float64(x64):
  weights = functools.partial(attention_weights, mask=MASK, normalizer="gaussian", is_causal=True)
  default, narrow = jit(lambda q, k: (weights(q, k), weights(q, k, scale=1 / 0.7)))(QUERY, KEY)
  np.testing.assert_allclose(default, kernel_weights(QUERY, KEY, MASK, np.sqrt(H)), rtol=1e-12,
                             atol=1e-14)
  np.testing.assert_allclose(narrow, kernel_weights(QUERY, KEY, MASK, 0.7), rtol=1e-12, atol=1e-14)


def test_translating_queries_and_keys_together_keeps_the_weights():
  shift = 3.0 * RNG.standard_normal(H).astype(np.float32)
  query, key = QUERY.astype(np.float32), KEY.astype(np.float32)

  @jit
  def both(query, key):
    weights = lambda q, k, name: attention_weights(q, k, mask=MASK, normalizer=name, is_causal=True)
    return [weights(query, key, name) - weights(query + shift, key + shift, name)
            for name in ("gaussian", "softmax")]

  gaussian_change, softmax_change = both(query, key)
  np.testing.assert_allclose(gaussian_change, 0, atol=2e-6)
  assert np.abs(softmax_change).max() > 0.1  # softmax's q.k is not translation invariant


def test_chunked_equals_dense_values_and_gradients():
  cotangent = RNG.standard_normal((B, T, N, 3)).astype(np.float32)
  inputs = tuple(x.astype(np.float32) for x in (QUERY, KEY, VALUE))

  @jit
  def outputs_and_grads(query, key, value):
    def run(implementation):
      attend = lambda q, k, v: jnp.sum(cotangent * dot_product_attention(
          q, k, v, mask=MASK, normalizer="gaussian", is_causal=True,
          implementation=implementation, block_size=4))
      return jax.value_and_grad(attend, argnums=(0, 1, 2))(query, key, value)
    return run("dense"), run("chunked")

  (dense_value, dense_grads), (chunked_value, chunked_grads) = outputs_and_grads(*inputs)
  np.testing.assert_allclose(chunked_value, dense_value, rtol=1e-5)
  for chunked, dense in zip(chunked_grads, dense_grads):
    np.testing.assert_allclose(chunked, dense, atol=1e-5)
