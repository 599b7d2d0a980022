"""Multi-layer perceptrons on flattened inputs."""

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from softlab.models.base import REGISTRY, reject_unknown

ACTIVATIONS = {"relu": nn.relu, "tanh": jnp.tanh, "gelu": nn.gelu}


class MLP(nn.Module):
  """Dense layers with an activation between them; the last layer gives logits."""

  hidden: Sequence[int]
  num_outputs: int
  activation: str = "relu"
  use_bias: bool = True
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = x.reshape(x.shape[0], -1).astype(self.dtype)
    for width in self.hidden:
      x = ACTIVATIONS[self.activation](
          nn.Dense(width, use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.dtype)(x))
    return nn.Dense(self.num_outputs, use_bias=self.use_bias, dtype=self.dtype,
                    param_dtype=self.dtype)(x)


@REGISTRY.register("mlp")
def mlp(options, info, *, dtype):
  """An MLP with `hidden` widths; outputs = info["num_classes"] unless set."""
  hidden = tuple(options.pop("hidden", (200, 200)))
  activation = options.pop("activation", "relu")
  use_bias = options.pop("use_bias", True)
  num_outputs = options.pop("num_outputs", info.get("num_classes"))
  reject_unknown(options, "mlp")
  if activation not in ACTIVATIONS:
    raise ValueError(f"activation {activation!r}; valid: {', '.join(ACTIVATIONS)}")
  return MLP(hidden=hidden, num_outputs=num_outputs, activation=activation,
             use_bias=use_bias, dtype=dtype)
