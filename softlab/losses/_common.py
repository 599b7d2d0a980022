"""Helpers shared by the loss modules."""

import jax.numpy as jnp


def compute_dtype(*arrays, dtype=None):
  """The dtype a loss computes in: `dtype` if given, else float32 or wider input."""
  if dtype is not None:
    return jnp.dtype(dtype)
  result = jnp.float32
  for array in arrays:
    if jnp.issubdtype(jnp.asarray(array).dtype, jnp.floating):
      result = jnp.promote_types(result, jnp.asarray(array).dtype)
  return jnp.dtype(result)
