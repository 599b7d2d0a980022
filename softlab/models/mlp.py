"""Multi-layer perceptrons on flattened inputs."""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from softlab.models.base import REGISTRY, check_widths, reject_unknown
from softlab.validation import check_integer

ACTIVATIONS = {"relu": nn.relu, "tanh": jnp.tanh, "gelu": nn.gelu}
# Weight initializers: Flax's default, and PyTorch's `xavier_normal_` (untruncated
# N(0, 2 / (fan_in + fan_out))), which the LDR paper's released MLP uses.
KERNEL_INITS = {
    "lecun_normal": nn.linear.default_kernel_init,
    "xavier_normal": nn.initializers.variance_scaling(1.0, "fan_avg", "normal"),
}
BIAS_INITS = ("zeros", "fan_in_uniform")


def bias_initializer(name: str, fan_in: int):
  """"zeros" (Flax's default) or "fan_in_uniform": U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
  PyTorch's default for nn.Linear biases."""
  if name == "zeros":
    return nn.initializers.zeros
  bound = fan_in**-0.5
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


class MLP(nn.Module):
  """Dense layers with an activation between them; the last layer gives logits."""

  hidden: Sequence[int]
  num_outputs: int
  activation: str = "relu"
  use_bias: bool = True
  kernel_init: str = "lecun_normal"
  bias_init: str = "zeros"
  dtype: jnp.dtype = jnp.float32

  def dense(self, width, x):
    return nn.Dense(width, use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.dtype,
                    kernel_init=KERNEL_INITS[self.kernel_init],
                    bias_init=bias_initializer(self.bias_init, x.shape[-1]))(x)

  @nn.compact
  def __call__(self, x):
    x = x.reshape(x.shape[0], -1).astype(self.dtype)
    for width in self.hidden:
      x = ACTIVATIONS[self.activation](self.dense(width, x))
    return self.dense(self.num_outputs, x)


@REGISTRY.register("mlp")
def mlp(options, info, *, dtype):
  """An MLP with `hidden` widths; outputs = info["num_classes"] unless set;
  `kernel_init` (lecun_normal | xavier_normal) and `bias_init` (zeros |
  fan_in_uniform) choose the initialization."""
  hidden = check_widths(options.pop("hidden", (200, 200)), "hidden")
  activation = options.pop("activation", "relu")
  use_bias = options.pop("use_bias", True)
  kernel_init = options.pop("kernel_init", "lecun_normal")
  bias_init = options.pop("bias_init", "zeros")
  num_outputs = options.pop("num_outputs", info.get("num_classes"))
  reject_unknown(options, "mlp")
  check_integer(num_outputs, "num_outputs")
  for name, value, valid in (("activation", activation, ACTIVATIONS),
                             ("kernel_init", kernel_init, KERNEL_INITS),
                             ("bias_init", bias_init, BIAS_INITS)):
    if value not in valid:
      raise ValueError(f"{name} {value!r}; valid: {', '.join(valid)}")
  return MLP(hidden=hidden, num_outputs=num_outputs, activation=activation, use_bias=use_bias,
             kernel_init=kernel_init, bias_init=bias_init, dtype=dtype)
