"""SOFT: softmax-free attention, a Gaussian kernel approximated through pooled landmarks.

SOFT replaces softmax(q.k / sqrt(d)) by the unnormalized Gaussian kernel
  S(q, k) = exp(-|q - k|^2 / (2 sqrt d))
(scale = 1 / sqrt(d) here; S = exp(-scale |q - k|^2 / 2)) and never forms the
[T, S] matrix: with L landmarks q~ (k~), the means of L consecutive segments of
the queries (keys), the Nystrom approximation
  S ~ S(Q, K~) S(Q~, K~)^+ S(Q~, K)
costs O((T + S) L) memory, and S(Q~, K~)^+ comes from Newton-Raphson
iterations (`newton_pinv`). Symmetric normalization scales the inverse by
D^{-1/2} on both sides, D the row sums of S(Q~, K~) (the released code's
"SoftmaxFreeNormAttentionKernel"). SOFT's self-attention shares one projection
for q and k (call with key = query); the approximation is exact for L = T = S
(A A^+ A = A), up to the iteration's convergence.

The papers' equations could not be read here (only abstracts were reachable),
so no equation numbers are cited; the formulas were checked against the
released code (github.com/fudan-zvg/SOFT at d3febc3:
models/softmax_free_transformer.py, SOFT/kernel/inverse.py):
  - kernel: it divides Q by d^{1/4} and takes exp(-|q - k|^2 / 2), i.e.
    exp(-|q - k|^2 / (2 sqrt d)): the default scale here. Matches.
  - approximation: kernel_1 newton_inverse(kernel_2) (kernel_1^T V), with
    K = Q (shared projection). Matches (call with key = query).
  - symmetric normalization (`SoftmaxFreeNormAttentionKernel`): D_sym =
    rowsum(kernel_2)^{-1/2}, D_sym * inverse * D_sym^T. Matches.
  - backward of the inverse: -V^T dV V^T (`_NewtonInverseKernel.backward`).
    Matches.
  - Newton-Raphson: same step V <- 2 V - V P V and 20 iterations, but other
    starts: the plain model's `newton_inv` iterates on P = A + 0.01 I from
    V_0 = 0.9 * 2 / max_i(rowsum_i A)^2 * P, so it approximates the
    regularized inverse (A + 0.01 I)^{-1}, not A^+; the normalized model's
    `newton_inv` starts from V_0 = alpha A, alpha = 2 / max(rowsum)^2 halved
    (up to 10 times) until |I - A V_0|_1 <= 1.01. Here V_0 = A^T / (|A|_1
    |A|_inf) (Ben-Israel & Cohen; for the symmetric nonnegative landmark
    kernel that is A / max(rowsum)^2) on A itself, so the limit is A^+
    (tested against jnp.linalg.pinv); the 0.01 I regularization is not
    applied.
  - landmarks: segment means here (the paper's average-pooling option); the
    released models pool with a learned strided convolution + LayerNorm +
    GELU, which a layer can apply before calling this.

References:
  Lu et al., "SOFT: Softmax-free Transformer with Linear Complexity",
  arXiv:2110.11945; Lu et al., "Softmax-free Linear Transformers",
  arXiv:2207.03341 (symmetric normalization).
"""

import functools
import math

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from softlab import validation


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _newton_pinv(matrix, iterations):
  transposed = jnp.swapaxes(matrix, -1, -2)
  norm_1 = jnp.max(jnp.sum(jnp.abs(matrix), axis=-2), axis=-1)
  norm_inf = jnp.max(jnp.sum(jnp.abs(matrix), axis=-1), axis=-1)
  scale = 1 / jnp.where(norm_1 * norm_inf > 0, norm_1 * norm_inf, 1)
  inverse = scale[..., None, None] * transposed

  def step(_, inverse):
    return 2 * inverse - inverse @ matrix @ inverse

  return jax.lax.fori_loop(0, iterations, step, inverse)


def _newton_pinv_forward(matrix, iterations):
  inverse = _newton_pinv(matrix, iterations)
  return inverse, inverse


def _newton_pinv_backward(iterations, inverse, cotangent):
  del iterations
  transposed = jnp.swapaxes(inverse, -1, -2)
  return (-(transposed @ cotangent @ transposed),)


_newton_pinv.defvjp(_newton_pinv_forward, _newton_pinv_backward)


def newton_pinv(matrix: ArrayLike, *, iterations: int = 20) -> jax.Array:
  """Moore-Penrose pseudo-inverse of square matrices [..., L, L] by Newton-Raphson iterations.

  V_0 = A^T / (|A|_1 |A|_inf), V_{k+1} = 2 V_k - V_k A V_k. Since
  sigma_max(A)^2 <= |A|_1 |A|_inf, V_0 lies in the convergence region
  0 < alpha < 2 / sigma_max^2 and V_k -> A^+ quadratically (Ben-Israel & Cohen,
  1966); the iteration count needed grows with log(cond(A)^2). In finite
  precision a rank-deficient A's rounding-level singular values (~1e-16 |A|
  in float64) are inverted too, their components doubling each step once the
  rest has converged, so keep `iterations` near what convergence needs
  (20 gives pinv to 1e-12 on a rank-3 6 x 6 matrix in float64; 60 does not).
  The backward pass uses the gradient of the inverse once,
  dA = -V^T dV V^T, SOFT's "theoretical gradient" instead of differentiating
  through the iterations (as the released code's _NewtonInverseKernel does);
  it is exact for invertible A once V has converged.

  Args:
    matrix: [..., L, L] floating.
    iterations: Newton-Raphson steps (SOFT's default 20).

  Returns:
    The approximate pseudo-inverse, [..., L, L].

  References:
    Lu et al., "SOFT: Softmax-free Transformer with Linear Complexity",
    arXiv:2110.11945.
  """
  matrix = jnp.asarray(matrix)
  if matrix.ndim < 2 or matrix.shape[-1] != matrix.shape[-2]:
    raise ValueError(f"matrix must be [..., L, L] (square), got shape {matrix.shape}")
  if not isinstance(iterations, int) or iterations < 0:
    raise ValueError(f"iterations must be an int >= 0, got {iterations!r}")
  return _newton_pinv(matrix, iterations)


def gaussian_kernel(x: jax.Array, y: jax.Array, scale: float) -> jax.Array:
  """exp(-scale |x_i - y_j|^2 / 2) for x [..., I, H], y [..., J, H] -> [..., I, J]."""
  square = (jnp.sum(x * x, axis=-1)[..., :, None] + jnp.sum(y * y, axis=-1)[..., None, :]
            - 2 * x @ jnp.swapaxes(y, -1, -2))
  return jnp.exp(-0.5 * scale * jnp.maximum(square, 0))


def _landmarks(x: jax.Array, num_landmarks: int, name: str) -> jax.Array:
  """Means of num_landmarks consecutive segments of x [B, N, T, H] -> [B, N, L, H]."""
  b, n, t, h = x.shape
  if t % num_landmarks:
    raise ValueError(
        f"{name} length {t} must be a multiple of num_landmarks ({num_landmarks})")
  return jnp.mean(x.reshape(b, n, num_landmarks, t // num_landmarks, h), axis=3)


def _heads_first(query, key, value):
  """[B, T, N, H] layouts -> [B, N, T, H], key/value heads repeated for GQA."""
  n, k = query.shape[2], key.shape[2]
  if n % k:
    raise ValueError(f"the number of query heads ({n}) must be a multiple of the number of"
                     f" key/value heads ({k})")
  move = lambda x: None if x is None else jnp.swapaxes(jnp.repeat(x, n // k, axis=2), 1, 2)
  return jnp.swapaxes(query, 1, 2), move(key), move(value)


def _factors(query, key, *, num_landmarks, iterations, symmetric_normalization, scale):
  """(S(Q, K~), the landmark inverse, S(Q~, K~)) of [B, N, T, H] queries and keys."""
  if not isinstance(num_landmarks, int) or num_landmarks < 1:
    raise ValueError(f"num_landmarks must be an int >= 1, got {num_landmarks!r}")
  scale = 1 / math.sqrt(query.shape[-1]) if scale is None else scale
  validation.check_positive(scale, "scale")
  query_marks = _landmarks(query, num_landmarks, "query")
  key_marks = _landmarks(key, num_landmarks, "key")
  middle = gaussian_kernel(query_marks, key_marks, scale)
  inverse = newton_pinv(middle, iterations=iterations)
  if symmetric_normalization:
    d = jax.lax.rsqrt(jnp.sum(middle, axis=-1))
    inverse = d[..., :, None] * inverse * d[..., None, :]
  return gaussian_kernel(query, key_marks, scale), inverse, gaussian_kernel(query_marks, key, scale)


def _floats(*arrays):
  dtype = jnp.promote_types(jnp.result_type(*arrays), jnp.float32)
  for array in arrays:
    if array.ndim != 4 or not jnp.issubdtype(array.dtype, jnp.floating):
      raise ValueError(f"query, key and value must be 4-D floating arrays, got {array.shape}"
                       f" {array.dtype}")
  return [array.astype(dtype) for array in arrays]


def soft_kernel(
    query: ArrayLike,
    key: ArrayLike,
    *,
    num_landmarks: int,
    iterations: int = 20,
    symmetric_normalization: bool = False,
    scale: float | None = None,
) -> jax.Array:
  """SOFT's approximate kernel S(Q, K~) S(Q~, K~)^+ S(Q~, K) as [B, N, T, S] (for checks).

  Args:
    query: [B, T, N, H].
    key: [B, S, K, H], N a multiple of K.
    num_landmarks: L, dividing T and S.
    iterations: Newton-Raphson steps of the landmark pseudo-inverse.
    symmetric_normalization: D^{-1/2} (.)^+ D^{-1/2}, D the landmark kernel's row sums.
    scale: the kernel is exp(-scale |q - k|^2 / 2); default 1 / sqrt(H).

  Returns:
    [B, N, T, S] in the compute dtype (float32 at least).

  References:
    Lu et al., "SOFT: Softmax-free Transformer with Linear Complexity",
    arXiv:2110.11945.
  """
  query, key = _floats(jnp.asarray(query), jnp.asarray(key))
  query, key, _ = _heads_first(query, key, None)
  left, inverse, right = _factors(query, key, num_landmarks=num_landmarks, iterations=iterations,
                                  symmetric_normalization=symmetric_normalization, scale=scale)
  return left @ inverse @ right


def soft_attention(
    query: ArrayLike,
    key: ArrayLike,
    value: ArrayLike,
    *,
    num_landmarks: int,
    iterations: int = 20,
    symmetric_normalization: bool = False,
    scale: float | None = None,
) -> jax.Array:
  """SOFT attention S(Q, K~) (S(Q~, K~)^+ (S(Q~, K~) V)) in O((T + S) L) memory.

  No normalization over the keys (SOFT is softmax-free) and no masks: every
  query attends every key (SOFT is bidirectional).

  Args:
    query: [B, T, N, H].
    key: [B, S, K, H], N a multiple of K (SOFT: key = query).
    value: [B, S, K, Hv].
    num_landmarks: L, dividing T and S.
    iterations: Newton-Raphson steps of the landmark pseudo-inverse.
    symmetric_normalization: D^{-1/2} (.)^+ D^{-1/2}, D the landmark kernel's row sums.
    scale: the kernel is exp(-scale |q - k|^2 / 2); default 1 / sqrt(H).

  Returns:
    [B, T, N, Hv] in the dtype of query.

  References:
    Lu et al., "SOFT: Softmax-free Transformer with Linear Complexity",
    arXiv:2110.11945.
  """
  out_dtype = jnp.asarray(query).dtype
  query, key, value = _floats(jnp.asarray(query), jnp.asarray(key), jnp.asarray(value))
  if value.shape[:3] != key.shape[:3]:
    raise ValueError(f"value of shape {value.shape} must be [B, S, K, Hv] as key {key.shape}")
  query, key, value = _heads_first(query, key, value)
  left, inverse, right = _factors(query, key, num_landmarks=num_landmarks, iterations=iterations,
                                  symmetric_normalization=symmetric_normalization, scale=scale)
  out = left @ (inverse @ (right @ value))
  return jnp.swapaxes(out, 1, 2).astype(out_dtype)
