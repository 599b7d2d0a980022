"""Round-to-nearest weight quantization, to measure how a model survives low precision."""

import jax
import jax.numpy as jnp


def quantize_weights(params, *, bits: int):
  """Params with every weight matrix (ndim >= 2) fake-quantized to `bits` bits.

  Symmetric, per tensor: w -> round(w / s) * s with s = max|w| / (2^(bits-1) - 1).
  Vectors (biases, norm scales, per-head scalars) stay as they are, as in
  weight-only quantization of LLMs. The result has the original dtypes.
  """
  if not isinstance(bits, int) or bits < 2:
    raise ValueError(f"bits must be an integer >= 2, got {bits!r}")
  levels = 2 ** (bits - 1) - 1

  def quantize(w):
    if jnp.ndim(w) < 2:
      return w
    step = jnp.max(jnp.abs(w)) / levels
    step = jnp.where(step > 0, step, 1)
    return (jnp.clip(jnp.round(w / step), -levels, levels) * step).astype(w.dtype)

  return jax.tree.map(quantize, params)
