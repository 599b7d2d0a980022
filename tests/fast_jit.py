"""jax.jit for tests: CPU test time is compilation, so LLVM's optimizations are off.

Only the backend's code optimization is skipped: XLA's fusion, buffer
assignment and numerics are the same as under plain jax.jit. Top-level jits
only (a function handed to `check_grads` must stay a plain jit).
"""

import jax

FAST_COMPILE = {"xla_backend_optimization_level": 0}


def jit(fn, **kwargs):
  """jax.jit with FAST_COMPILE."""
  return jax.jit(fn, compiler_options=FAST_COMPILE, **kwargs)
