"""Flax NNX versions of the models, and `Functional`: an NNX model driven like a linen one.

`config.model.api = "nnx"` builds the NNX version of a model (`models.build`):
the config is read once, by the model's builder, into its linen module, whose
fields then construct the NNX version (`nnx_version_of(name)` registers the
constructor in `softlab.models.base.NNX_VERSIONS`). `Functional` gives that NNX model the linen calling convention
the trainers use (`init(rng, *inputs)` -> variables, `apply(variables, *inputs,
mutable=["intermediates"])`), by `nnx.split` / `nnx.merge` of its parameters,
so every trainer trains either API unchanged.
"""

import itertools
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from softlab.attention import nnx as attention_nnx
from softlab.models import mlp, transformer
from softlab.models.base import NNX_VERSIONS

Constructor = Callable[[nn.Module, Any, nnx.Rngs], nnx.Module]


def nnx_version_of(name: str):
  """Registers `constructor(linen module, info, rngs) -> NNX model` as model `name`'s NNX version."""
  def register(constructor: Constructor) -> Constructor:
    NNX_VERSIONS[name] = lambda spec, info: Functional(spec, info, constructor)
    return constructor
  return register


class MLP(nnx.Module):
  """Dense layers with an activation between them on flattened inputs; the last gives logits.

  The NNX version of softlab.models.mlp.MLP (same options and initializers).
  """

  def __init__(self, in_features: int, hidden, num_outputs: int, *, activation: str = "relu",
               use_bias: bool = True, kernel_init: str = "lecun_normal",
               bias_init: str = "zeros", dtype=jnp.float32, rngs: nnx.Rngs):
    widths = (in_features, *hidden, num_outputs)
    self.layers = nnx.List([
        nnx.Linear(fan_in, width, use_bias=use_bias, dtype=dtype, param_dtype=dtype,
                   kernel_init=mlp.KERNEL_INITS[kernel_init],
                   bias_init=mlp.bias_initializer(bias_init, fan_in), rngs=rngs)
        for fan_in, width in itertools.pairwise(widths)])
    self.activation, self.dtype = activation, dtype

  def __call__(self, x):
    x = x.reshape(x.shape[0], -1).astype(self.dtype)
    for layer in self.layers[:-1]:
      x = mlp.ACTIVATIONS[self.activation](layer(x))
    return self.layers[-1](x)


@nnx_version_of("mlp")
def _mlp(module: mlp.MLP, info, rngs: nnx.Rngs) -> MLP:
  return MLP(math.prod(info["input_shape"]), module.hidden, module.num_outputs,
             activation=module.activation, use_bias=module.use_bias,
             kernel_init=module.kernel_init, bias_init=module.bias_init, dtype=module.dtype,
             rngs=rngs)


class Block(nnx.Module):
  """x + attention(LayerNorm(x)), then x + MLP(LayerNorm(x)) (softlab.models.transformer.Block).

  Sows (nnx.Intermediate) the mean square of the attention output per example
  ("attention_mean_square", [B]) and the block's output ("hidden").
  """

  def __init__(self, d_model: int, num_heads: int, mlp_ratio: int, attention_options,
               is_causal: bool, positions: str, dtype, *, rngs: nnx.Rngs):
    norm = lambda: nnx.LayerNorm(d_model, dtype=dtype, param_dtype=dtype, rngs=rngs)
    linear = lambda n_in, n_out: nnx.Linear(n_in, n_out, dtype=dtype, param_dtype=dtype, rngs=rngs)
    self.attention_norm, self.mlp_norm = norm(), norm()
    self.attention = attention_nnx.MultiHeadAttention(
        num_heads, d_model, is_causal=is_causal,
        rotary=transformer.rope_both if positions == "rope" else None,
        dtype=dtype, param_dtype=dtype, rngs=rngs, **attention_options)
    self.mlp_in, self.mlp_out = linear(d_model, mlp_ratio * d_model), linear(mlp_ratio * d_model, d_model)

  def __call__(self, x, mask=None):
    attended = self.attention(self.attention_norm(x), mask=mask)
    self.sow(nnx.Intermediate, "attention_mean_square",
             jnp.mean(jnp.square(attended.astype(jnp.float32)), axis=(1, 2)))
    x = x + attended
    x = x + self.mlp_out(nnx.gelu(self.mlp_in(self.mlp_norm(x))))
    self.sow(nnx.Intermediate, "hidden", x)
    return x


class DecoderLM(nnx.Module):
  """Causal language model: tokens [B, T] -> logits [B, T, V] (softlab.models.transformer.DecoderLM).

  With `head=False` it returns (hidden [B, T, d], head weight [d, V]).
  """

  def __init__(self, vocab_size: int, d_model: int, num_layers: int, num_heads: int,
               mlp_ratio: int, positions: str, tie_embeddings: bool, attention_options,
               dtype, *, rngs: nnx.Rngs):
    self.embed = nnx.Embed(vocab_size, d_model, dtype=dtype, param_dtype=dtype, rngs=rngs)
    self.blocks = nnx.List([
        Block(d_model, num_heads, mlp_ratio, attention_options, True, positions, dtype, rngs=rngs)
        for _ in range(num_layers)])
    self.final_norm = nnx.LayerNorm(d_model, dtype=dtype, param_dtype=dtype, rngs=rngs)
    self.head = None if tie_embeddings else nnx.Param(
        nnx.initializers.lecun_normal()(rngs.params(), (d_model, vocab_size), dtype))

  def __call__(self, tokens, *, head: bool = True):
    x = self.embed(tokens)
    for block in self.blocks:
      x = block(x)
    x = self.final_norm(x)
    weight = self.embed.embedding[...].T if self.head is None else self.head[...]
    if not head:
      return x, weight
    return x @ weight.astype(x.dtype)


@nnx_version_of("transformer")
def _decoder_lm(module: transformer.DecoderLM, info, rngs: nnx.Rngs) -> DecoderLM:
  del info
  if module.superblock_size != 1:
    raise ValueError(f"superblock_size={module.superblock_size}: UniAttn superblocks exist in the"
                     " linen transformer only (model.api='linen')")
  return DecoderLM(module.vocab_size, module.d_model, module.num_layers, module.num_heads,
                   module.mlp_ratio, module.positions, module.tie_embeddings,
                   dict(module.attention_options), module.dtype, rngs=rngs)


class Functional:
  """An NNX model with the linen calling convention the trainers use.

  `init(rng, *inputs)` -> {"params": the NNX parameters as a nested dict};
  `apply(variables, *inputs, mutable=(), **kwargs)` merges them into the
  model and calls it; with `mutable` naming "intermediates" it returns
  (outputs, {"intermediates": what the model sowed}). The linen module the
  model was built from stays its spec: `clone(**fields)` rebuilds with other
  fields and its fields read as attributes (e.g. `attention_options`).

  Args:
    spec: the linen module whose fields construct the NNX version.
    info: the dataset's description (e.g. input_shape).
    construct: (spec, info, rngs) -> the NNX model.
  """

  def __init__(self, spec: nn.Module, info, construct: Constructor):
    self.spec, self.info, self._construct = spec, info, construct
    self._graphdef, self._abstract = nnx.split(nnx.eval_shape(lambda: self.build(nnx.Rngs(0))))

  def build(self, rngs: nnx.Rngs) -> nnx.Module:
    """A fresh NNX model with new parameters from `rngs`."""
    return self._construct(self.spec, self.info, rngs)

  def __getattr__(self, name: str):
    if name.startswith("_") or name in ("spec", "info"):  # not yet set (copying, pickling)
      raise AttributeError(name)
    return getattr(self.spec, name)

  def clone(self, **fields) -> "Functional":
    return Functional(self.spec.clone(**fields), self.info, self._construct)

  def init(self, rng: jax.Array, *inputs, **kwargs) -> dict:
    del inputs, kwargs  # NNX models know their shapes from the config
    return {"params": nnx.to_pure_dict(nnx.state(self.build(nnx.Rngs(params=rng)), nnx.Param))}

  def merge(self, variables) -> nnx.Module:
    """The NNX model holding `variables["params"]`."""
    state = jax.tree.map(lambda leaf: leaf, self._abstract)
    nnx.replace_by_pure_dict(state, variables["params"])
    return nnx.merge(self._graphdef, state)

  def apply(self, variables, *inputs, mutable=(), **kwargs):
    outputs, sown = nnx.capture(self.merge(variables), nnx.Intermediate)(*inputs, **kwargs)
    if "intermediates" not in mutable:
      return outputs
    return outputs, {"intermediates": nnx.to_pure_dict(sown)}
