"""Flax NNX: multi-head attention with the normalizer as an argument.

`MultiHeadAttention` is constructed as `flax.nnx.MultiHeadAttention` is
(num_heads, in_features, qkv_features, out_features, num_kv_heads,
in_kv_features, ..., rngs) plus the options of softlab's linen layer
(softlab.attention.MultiHeadAttention): `normalizer=`, the normalizer's
learned or fixed parameters from its spec (`softlab.normalizers.LayerParam`),
QK-norm, LayerScale, a rotary hook and sown weights. Its parameters have the
linen layer's names and shapes, so `nnx.update(layer, linen_params)` loads a
linen layer's weights.
"""

import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from softlab import normalizers
from softlab.attention.dense import attention_weights
from softlab.attention.layers import (
  WINDOW_FACTOR_INIT,
  attend,
  check_attention_kind,
  head_dim_of,
  layer_param_setting,
  learned_feature_map_params,
  normalizer_fields,
)

Rotary = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]
# The linen layer's (nn.DenseGeneral's) kernel initializer.
LECUN_NORMAL = nnx.initializers.lecun_normal()


def _head_layer_norm(num_heads: int, head_dim: int, *, dtype, param_dtype, rngs) -> nnx.LayerNorm:
  """LayerNorm over D without bias, its scale per head and dim ([N, D], as linen's)."""
  norm = nnx.LayerNorm(num_heads * head_dim, use_bias=False, feature_axes=(-2, -1),
                       dtype=dtype, param_dtype=param_dtype, rngs=rngs)
  norm.scale = nnx.Param(jnp.ones((num_heads, head_dim), param_dtype))
  return norm


class MultiHeadAttention(nnx.Module):
  """Multi-head attention (NNX) with the normalizer from config.

  inputs_q [B, T, F] -> q [B, T, N, D], k and v [B, S, K, D] from inputs_k
  and inputs_v (no projection biases) -> optional per-head QK-norm ->
  optional `rotary(q, k)` -> softlab's dot_product_attention -> output
  projection to `out_features` -> optional LayerScale (a per-feature gain
  initialized to `layer_scale_init`). The linen layer's docstring
  (softlab.attention.MultiHeadAttention) describes the normalizer fields.

  Args:
    num_heads: N, query heads.
    in_features: F, features of inputs_q.
    qkv_features: N * D when head_dim is None; default in_features.
    out_features: output features; default in_features.
    num_kv_heads: K, key/value heads (N a multiple of K); default N.
    in_kv_features: features of inputs_k and inputs_v; default in_features.
    normalizer: a normalizer name (see dot_product_attention).
    normalizer_kwargs: its fixed hyperparameters (not those the normalizer
      fields set).
    head_dim: D; default qkv_features // num_heads.
    qk_norm: per-head LayerNorm on q and k.
    layer_scale_init: None, or the initial LayerScale gain (e.g. 1e-4).
    is_causal: causal self-attention.
    implementation: "dense", "chunked" or None (see dot_product_attention).
    block_size: chunked block size (linear: chunk size).
    attention, feature_map, feature_map_kwargs, window, window_factor_init: as
      in the linen layer ("dot_product", "linear" or "sliding_window"; a
      feature map's learned arguments are nnx.Params named
      "<feature_map>_<argument>", the hybrid's logits w of its softmax terms'
      weights sigmoid(w) the nnx.Param "window_factor" [N]).
    rotary: None, or (q, k) -> (q, k) applied after QK-norm (e.g. RoPE).
    sow_weights: sow the (dense) weights [B, N, T, S] as the nnx.Intermediate
      "attention_weights"; run the model under `nnx.capture(model,
      nnx.Intermediate)` to get them (an attribute: set it on a built layer to
      start or stop sowing).
    dtype: computation dtype of the projections (attention computes in f32).
    param_dtype: parameter dtype.
    kernel_init: initializer of the projection kernels.
    rngs: the parameters' random keys.
    **normalizer_fields: the normalizer parameters' fields of the specs
      registered now (`softlab.attention.layers.normalizer_fields()`), e.g.
      ssmax_s_init, sigmoid_bias, sigmoid_bias_learnable.
  """

  def __init__(
      self,
      num_heads: int,
      in_features: int,
      qkv_features: int | None = None,
      out_features: int | None = None,
      num_kv_heads: int | None = None,
      in_kv_features: int | None = None,
      *,
      normalizer: str = "softmax",
      normalizer_kwargs: Mapping[str, Any] | None = None,
      head_dim: int | None = None,
      qk_norm: bool = False,
      layer_scale_init: float | None = None,
      is_causal: bool = False,
      implementation: str | None = None,
      block_size: int | None = None,
      attention: str = "dot_product",
      feature_map: str = "elu+1",
      feature_map_kwargs: Mapping[str, Any] | None = None,
      window: int = 64,
      window_factor_init: float = WINDOW_FACTOR_INIT,
      rotary: Rotary | None = None,
      sow_weights: bool = False,
      dtype: Any = None,
      param_dtype: Any = jnp.float32,
      kernel_init: nnx.Initializer = LECUN_NORMAL,
      rngs: nnx.Rngs,
      **normalizer_fields: Any,
  ):
    check_attention_kind(attention, sow_weights=sow_weights, is_causal=is_causal)
    spec = normalizers.attention_spec(normalizer)
    fields = normalizer_fields_with_defaults(normalizer_fields)
    self.num_heads, self.normalizer, self.is_causal = num_heads, normalizer, is_causal
    self.implementation, self.block_size = implementation, block_size
    self.rotary, self.sow_weights = rotary, sow_weights
    kv_heads = num_kv_heads or num_heads
    dim = head_dim_of(num_heads, in_features, head_dim, qkv_features)
    out_features = out_features or in_features
    in_kv_features = in_kv_features or in_features
    linear = functools.partial(nnx.LinearGeneral, use_bias=False, dtype=dtype,
                               param_dtype=param_dtype, kernel_init=kernel_init, rngs=rngs)
    self.query = linear(in_features, (num_heads, dim))
    self.key = linear(in_kv_features, (kv_heads, dim))
    self.value = linear(in_kv_features, (kv_heads, dim))
    self.out = linear((num_heads, dim), out_features, axis=(-2, -1))
    if qk_norm:
      norm = functools.partial(_head_layer_norm, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
      self.query_norm, self.key_norm = norm(num_heads, dim), norm(kv_heads, dim)
    else:
      self.query_norm = self.key_norm = None
    self.layer_scale = (None if layer_scale_init is None else
                        nnx.Param(jnp.full((out_features,), layer_scale_init, param_dtype)))
    fixed = dict(normalizer_kwargs or {})
    learned = []  # (normalizer kwarg, attribute holding its per-head parameter)
    for param in spec.layer_params:
      is_learned, value = layer_param_setting(normalizer, param, fields.__getitem__, fixed)
      if is_learned:
        name = f"{normalizer}_{param.kwarg}"
        setattr(self, name, nnx.Param(jnp.full((num_heads,), value, param_dtype)))
        learned.append((param.kwarg, name))
      elif value is not None:
        fixed[param.kwarg] = value
    self.learned, self.fixed_kwargs = tuple(learned), fixed
    self.attention, self.feature_map, self.window = attention, feature_map, window
    self.fixed_feature_map_kwargs = dict(feature_map_kwargs or {})
    learned_maps = []  # (feature map argument, attribute holding its parameter)
    if attention != "dot_product":
      for name, value in learned_feature_map_params(feature_map, feature_map_kwargs, dim,
                                                    kv_heads).items():
        setattr(self, f"{feature_map}_{name}", nnx.Param(value.astype(param_dtype)))
        learned_maps.append((name, f"{feature_map}_{name}"))
    self.learned_feature_map = tuple(learned_maps)
    self.window_factor = (nnx.Param(jnp.full((num_heads,), window_factor_init, param_dtype))
                          if attention == "sliding_window" else None)

  def normalizer_kwargs(self) -> dict[str, Any]:
    """The normalizer's keyword arguments: fixed ones and the learned per-head values."""
    return {**self.fixed_kwargs,
            **{kwarg: getattr(self, name)[...] for kwarg, name in self.learned}}

  def __call__(self, inputs_q, inputs_k=None, inputs_v=None, *, mask=None) -> jax.Array:
    """Attention of inputs_q [B, T, F] over keys from inputs_k and values from inputs_v.

    Args:
      inputs_q: queries' inputs.
      inputs_k: keys' inputs [B, S, F']; None = inputs_q (self-attention).
      inputs_v: values' inputs; None = inputs_k.
      mask: boolean, broadcastable to [B, N, T, S]; True = attend.

    Returns:
      [B, T, out_features].
    """
    inputs_k = inputs_q if inputs_k is None else inputs_k
    inputs_v = inputs_k if inputs_v is None else inputs_v
    query, key, value = self.query(inputs_q), self.key(inputs_k), self.value(inputs_v)
    if self.query_norm is not None:
      query, key = self.query_norm(query), self.key_norm(key)
    if self.rotary is not None:
      query, key = self.rotary(query, key)
    options = dict(normalizer=self.normalizer, normalizer_kwargs=self.normalizer_kwargs(),
                   is_causal=self.is_causal)
    feature_map_kwargs = {**self.fixed_feature_map_kwargs,
                          **{name: getattr(self, attr)[...] for name, attr in self.learned_feature_map}}
    window_factor = (None if self.window_factor is None
                     else jax.nn.sigmoid(self.window_factor[...]))
    out = attend(query, key, value, mask, attention=self.attention,
                 implementation=self.implementation, block_size=self.block_size,
                 feature_map=self.feature_map, feature_map_kwargs=feature_map_kwargs,
                 window=self.window, window_factor=window_factor, **options)
    if self.sow_weights:
      self.sow(nnx.Intermediate, "attention_weights",
               attention_weights(query, key, mask=mask, **options))
    out = self.out(out)
    if self.layer_scale is not None:
      out = out * self.layer_scale[...]
    return out


def normalizer_fields_with_defaults(given: Mapping[str, Any]) -> dict[str, Any]:
  """The normalizer fields of the registered specs: `given` over their defaults.

  Raises:
    ValueError: a field no registered spec has, naming the valid ones.
  """
  fields = {name: default for name, (_, default, _) in normalizer_fields().items()}
  unknown = sorted(set(given) - set(fields))
  if unknown:
    raise ValueError(f"MultiHeadAttention got unknown option(s) {', '.join(unknown)}; normalizer "
                     f"fields: {', '.join(fields)}")
  return {**fields, **given}
