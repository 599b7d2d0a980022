"""Flax NNX versions of the contrastive losses' learnable logit parameters.

Same constructor options, parameter names and outputs as the linen modules in
softlab.losses.contrastive (`SigLIPLogitParams`, `CLIPLogitScale`), so
`nnx.update(module, linen_params)` loads a linen module's parameters.
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["CLIPLogitScale", "SigLIPLogitParams"]


def _scalar(value: float) -> nnx.Param:
  return nnx.Param(jnp.asarray(value, jnp.float32))


class SigLIPLogitParams(nnx.Module):
  """The learnable SigLIP temperature and bias: returns (t, b), t = exp(t').

  Args:
    t_prime_init: initial t' (paper: log 10, so t starts at 10).
    bias_init: initial b (paper: -10, so that the many negatives start with a
      small loss); None for the paper's no-bias ablation (b = 0, not learned).

  References:
    Zhai et al., "Sigmoid Loss for Language Image Pre-Training",
    arXiv:2303.15343.
  """

  def __init__(self, t_prime_init: float = math.log(10.0), bias_init: float | None = -10.0):
    self.t_prime = _scalar(t_prime_init)
    self.bias = None if bias_init is None else _scalar(bias_init)

  def __call__(self) -> tuple[jax.Array, jax.Array]:
    bias = jnp.zeros((), jnp.float32) if self.bias is None else self.bias[...]
    return jnp.exp(self.t_prime[...]), bias

  def loss_arguments(self) -> dict[str, jax.Array]:
    """The keyword arguments of `siglip_loss`: {"t": t, "b": b}."""
    t, b = self()
    return {"t": t, "b": b}


class CLIPLogitScale(nnx.Module):
  """The learnable CLIP temperature: returns t = min(exp(t'), max_scale).

  Args:
    t_prime_init: initial t' (CLIP: log(1 / 0.07)).
    max_scale: the largest t (CLIP: 100); zero gradient above it, the effect
      of CLIP's clamping of t' after every step.

  References:
    Radford et al., "Learning Transferable Visual Models From Natural Language
    Supervision", arXiv:2103.00020.
  """

  def __init__(self, t_prime_init: float = math.log(1 / 0.07), max_scale: float = 100.0):
    self.t_prime = _scalar(t_prime_init)
    self.max_scale = max_scale

  def __call__(self) -> jax.Array:
    return jnp.minimum(jnp.exp(self.t_prime[...]), self.max_scale)

  def loss_arguments(self) -> dict[str, jax.Array]:
    """The keyword arguments of `clip_loss`: {"t": t}."""
    return {"t": self()}
