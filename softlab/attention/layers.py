"""Flax: an `attention_fn` for Flax's attention modules and a linen layer."""

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from softlab import normalizers
from softlab.attention.core import dot_product_attention
from softlab.attention.dense import attention_weights, weighted_values
from softlab.attention.linear import (DEFAULT_CHUNK_SIZE, feature_map_spec, linear_attention,
                                      sliding_window_linear_attention)

# dot_product_attention keywords that make_attention_fn accepts.
_ATTENTION_OPTIONS = (
    "normalizer_kwargs",
    "scale",
    "is_causal",
    "implementation",
    "block_size",
)


def _flatten_batch(x, batch_dims: tuple[int, ...], tail: int):
  """[batch..., *tail dims] -> [prod(batch_dims), *tail dims] (batch broadcast)."""
  if x is None:
    return None
  x = jnp.asarray(x)
  x = x.reshape((1,) * max(len(batch_dims) + tail - x.ndim, 0) + x.shape)
  x = jnp.broadcast_to(x, batch_dims + x.shape[len(batch_dims) :])
  return x.reshape((-1,) + x.shape[len(batch_dims) :])


def make_attention_fn(
    normalizer: str = "softmax", **kwargs
) -> Callable[..., jax.Array]:
  """An `attention_fn` for Flax's (linen and nnx) multi-head attention modules.

  Usable as `attention_fn` of flax.linen.MultiHeadDotProductAttention and of
  flax.nnx.MultiHeadAttention.

  The returned function has the signature of flax's dot_product_attention
  (query, key, value, bias=None, mask=None, broadcast_dropout, dropout_rng,
  dropout_rate, deterministic, dtype, precision, module, is_causal) and
  computes softlab's dot_product_attention with the given normalizer. Inputs
  may have any number of leading batch dims ([batch..., T, N, H]); `dtype`
  casts the inputs; `precision` is ignored (scores are computed in float32
  or wider); attention dropout is not supported (dropout_rate > 0 with
  deterministic=False raises). When the module asks to sow the weights
  (`module` given), they are computed densely and sown as
  ("intermediates", "attention_weights") (nnx: nnx.Intermediate).

  Args:
    normalizer: a normalizer name (see dot_product_attention).
    **kwargs: normalizer_kwargs, scale, is_causal, implementation, block_size
      of dot_product_attention; is_causal=True here or in the call applies the
      causal mask.

  Returns:
    The attention function.
  """
  normalizers.attention_spec(normalizer)
  for name in kwargs:
    if name not in _ATTENTION_OPTIONS:
      raise ValueError(
          f"make_attention_fn got unknown option {name!r};"
          f" valid: {', '.join(_ATTENTION_OPTIONS)}"
      )
  causal_default = kwargs.pop("is_causal", False)
  weight_kwargs = {k: kwargs[k] for k in ("normalizer_kwargs", "scale") if k in kwargs}

  def attention_fn(
      query,
      key,
      value,
      bias=None,
      mask=None,
      broadcast_dropout: bool = True,
      dropout_rng=None,
      dropout_rate: float = 0.0,
      deterministic: bool = False,
      dtype=None,
      precision=None,
      module=None,
      is_causal: bool = False,
  ):
    del broadcast_dropout, dropout_rng, precision
    if dropout_rate > 0 and not deterministic:
      raise ValueError(
          f"dropout_rate={dropout_rate} with deterministic=False: softlab's"
          " attention_fn has no attention dropout; use dropout_rate=0"
      )
    if dtype is not None:
      query, key, value = (jnp.asarray(x, dtype) for x in (query, key, value))
    batch_dims = query.shape[:-3]
    q, k, v = (_flatten_batch(x, batch_dims, 3) for x in (query, key, value))
    bias, mask = (_flatten_batch(x, batch_dims, 3) for x in (bias, mask))
    causal = is_causal or causal_default
    out = dot_product_attention(
        q, k, v, bias, mask, normalizer=normalizer, is_causal=causal, **kwargs
    )
    if module is not None:
      weights = attention_weights(
          q, k, bias, mask, normalizer=normalizer, is_causal=causal, **weight_kwargs
      )
      weights = weights.reshape(batch_dims + weights.shape[1:])
      if isinstance(module, nnx.Module):
        module.sow(nnx.Intermediate, "attention_weights", weights)
      else:
        module.sow("intermediates", "attention_weights", weights)
    return out.reshape(batch_dims + out.shape[1:])

  return attention_fn


def _field_names(normalizer: str, param: normalizers.LayerParam) -> tuple[str, str | None]:
  """(value field, learnable-switch field or None) of a spec's LayerParam."""
  name = f"{normalizer}_{param.kwarg}"
  if param.always_learned:
    return f"{name}_init", None
  return name, f"{name}_learnable"


def normalizer_fields() -> dict[str, tuple[Any, Any, str]]:
  """field -> (annotation, default, doc) for the LayerParams of every registered spec."""
  fields = {}
  for normalizer in normalizers.attention_names():
    defaults = normalizers.keyword_defaults(normalizer)
    for param in normalizers.attention_spec(normalizer).layer_params:
      value_field, switch = _field_names(normalizer, param)
      if param.automatic is None:
        fields[value_field] = (float, defaults[param.kwarg], param.doc)
      else:
        fields[value_field] = (float | str, param.automatic, param.doc)
      if switch is not None:
        fields[switch] = (bool, False, f"learn {value_field} per head from its value")
  return fields


def layer_param_setting(
    normalizer: str,
    param: normalizers.LayerParam,
    field_value: Callable[[str], Any],
    kwargs: Mapping[str, Any],
) -> tuple[bool, Any]:
  """How a layer hands one of the spec's LayerParams to the normalizer.

  Shared by the linen and the NNX layers: reads the param's fields
  (`field_value(name)`) and returns (True, initial value) for a learned
  per-head parameter, (False, value) for a fixed one, or (False, None) when
  the attention's automatic default applies (e.g. sigmoid's b = -log n).

  Raises:
    ValueError: `kwargs` (normalizer_kwargs) also sets the parameter, or a
      field holds a bad value.
  """
  field, switch = _field_names(normalizer, param)
  if param.kwarg in kwargs:
    raise ValueError(f"normalizer_kwargs[{param.kwarg!r}] is set by the layer's {field} field")
  value = field_value(field)
  if param.always_learned:
    return True, value
  if isinstance(value, str) and value != param.automatic:
    valid = "a float" if param.automatic is None else f"{param.automatic!r} or a float"
    raise ValueError(f"{field} must be {valid}, got {value!r}")
  if field_value(switch):
    if isinstance(value, str):
      raise ValueError(f"{switch}=True needs a float {field} (its initial value), got {value!r}")
    return True, value
  return False, None if isinstance(value, str) else value


# What a layer's `attention` field selects: dot-product attention with the
# normalizer, linear attention with a feature map, or the causal sliding-window
# softmax + linear hybrid.
ATTENTION_KINDS = ("dot_product", "linear", "sliding_window")
# The sliding-window hybrid's learned logit w of gamma = sigmoid(w) starts at
# logit(0.1) = -2.197, as in LoLCATs' released configs (init_window_factor).
WINDOW_FACTOR_INIT = math.log(0.1 / 0.9)


def check_attention_kind(attention: str, *, sow_weights: bool, is_causal: bool) -> None:
  """One-line ValueErrors for an unknown `attention` or options it cannot honour."""
  if attention not in ATTENTION_KINDS:
    raise ValueError(f"unknown attention {attention!r}; valid: {', '.join(ATTENTION_KINDS)}")
  if attention != "dot_product" and sow_weights:
    raise ValueError(f"sow_weights needs attention='dot_product' (attention={attention!r} has no weights to sow)")
  if attention == "sliding_window" and not is_causal:
    raise ValueError("attention='sliding_window' is causal only; set is_causal=True")


def learned_feature_map_params(feature_map: str, feature_map_kwargs, head_dim: int,
                               num_kv_heads: int) -> dict[str, jax.Array]:
  """Initial values of the feature map's learned arguments (spec.learned), by argument name.

  Raises:
    ValueError: feature_map_kwargs also sets one of them.
  """
  kwargs = dict(feature_map_kwargs or {})
  values = {}
  for name, init in feature_map_spec(feature_map).learned.items():
    if name in kwargs:
      raise ValueError(f"feature_map_kwargs[{name!r}] is learned by the layer ({feature_map}_{name})")
    values[name] = init(head_dim, num_kv_heads, kwargs)
  return values


def attend(query, key, value, mask, *, attention: str, normalizer: str, normalizer_kwargs,
           is_causal: bool, implementation: str | None, block_size: int | None,
           feature_map: str, feature_map_kwargs, window: int,
           window_factor: jax.Array | None = None) -> jax.Array:
  """The attention output of a layer: q [B, T, N, D], k, v [B, S, K, D] -> [B, T, N, D].

  attention="dot_product": dot_product_attention with the normalizer (mask,
  implementation dense / chunked / None, block_size). "linear":
  linear_attention with the feature map (no mask; implementation parallel /
  recurrent / chunked, None = parallel; block_size = chunk size).
  "sliding_window": sliding_window_linear_attention (softmax on the last
  `window` keys weighted by `window_factor` [N], the feature map on older
  ones).
  """
  if attention == "dot_product":
    return dot_product_attention(query, key, value, mask=mask, normalizer=normalizer,
                                 normalizer_kwargs=normalizer_kwargs, is_causal=is_causal,
                                 implementation=implementation, block_size=block_size)
  if mask is not None:
    raise ValueError(f"attention={attention!r} takes no mask (only causal masking)")
  if attention == "linear":
    return linear_attention(query, key, value, feature_map=feature_map,
                            feature_map_kwargs=feature_map_kwargs, is_causal=is_causal,
                            implementation=implementation or "parallel",
                            chunk_size=block_size or DEFAULT_CHUNK_SIZE)
  return sliding_window_linear_attention(query, key, value, window=window, feature_map=feature_map,
                                         feature_map_kwargs=feature_map_kwargs,
                                         window_factor=window_factor)


def head_dim_of(num_heads: int, features: int, head_dim: int | None, qkv_features: int | None) -> int:
  """D: `head_dim`, else (qkv_features or the input features) // num_heads."""
  if head_dim is not None:
    return head_dim
  qkv_features = qkv_features or features
  if qkv_features % num_heads:
    raise ValueError(
        f"qkv_features ({qkv_features}) must be divisible by num_heads ({num_heads}); or set head_dim"
    )
  return qkv_features // num_heads


class _MultiHeadAttention(nn.Module):
  """Multi-head attention (linen) with the normalizer from config.

  inputs [B, T, F] -> q [B, T, N, D], k and v [B, S, K, D] (no projection
  biases) -> optional per-head QK-norm (LayerNorm over D without bias, scale
  per head and dim) -> optional `rotary(q, k)` -> dot_product_attention ->
  output projection to `out_features` -> optional LayerScale (a learnable
  per-feature gain initialized to `layer_scale_init`).

  Normalizer parameters come from the normalizer's spec
  (softlab.normalizers.LayerParam): for each, fields named after
  "<normalizer>_<kwarg>", listed under "Normalizer fields" below, and a
  learned per-head parameter of that name ([N]) when it is learned. E.g.
  ssmax's s is learned per head ("ssmax_s") from `ssmax_s_init`
  (s = 1 / log(n_train) makes SSMax equal softmax at the training length);
  sigmoid's bias is "-log n" (b = -log S, S the number of keys, fixed; the
  paper's recommendation) or a float, with `sigmoid_bias_learnable` the
  initial value of a learned per-head bias ("sigmoid_bias").
  QK-norm and LayerScale (init 1e-4) are the sigmoid attention paper's
  stabilizers of early training.

  `attention` picks the mechanism (ATTENTION_KINDS): "dot_product" (the
  normalizer), "linear" (softlab.attention.linear_attention with
  `feature_map`; a map's learned arguments, e.g. hedgehog's W [K, D, D], are
  parameters named "<feature_map>_<argument>") or "sliding_window" (softmax
  on the last `window` keys, linear attention on older ones; causal). The
  hybrid's softmax terms are weighted per query head by gamma = sigmoid(w),
  w the learned parameter "window_factor" [N] initialized to
  `window_factor_init` (LoLCATs' `window_factors`, logit(0.1) in its configs).

  Attributes:
    num_heads: N, query heads.
    num_kv_heads: K, key/value heads (N a multiple of K); default N.
    head_dim: D; default qkv_features // num_heads.
    qkv_features: used for D when head_dim is None; default the input features.
    out_features: output features; default the input features.
    normalizer: a normalizer name (see dot_product_attention).
    normalizer_kwargs: its fixed hyperparameters (not those the layer's
      normalizer fields set).
    qk_norm: apply per-head LayerNorm to q and k.
    layer_scale_init: None, or the initial LayerScale gain (e.g. 1e-4).
    is_causal: causal self-attention.
    implementation: "dense", "chunked" or None (see dot_product_attention);
      with attention="linear": "parallel" (None), "recurrent" or "chunked".
    block_size: chunked block size (see dot_product_attention); linear: the
      chunk size.
    attention: "dot_product", "linear" or "sliding_window".
    feature_map: a name in softlab.attention.FEATURE_MAPS (linear and
      sliding_window).
    feature_map_kwargs: its fixed keyword arguments, e.g. {"order": 2}.
    window: sliding_window: softmax reads the last `window` keys.
    window_factor_init: sliding_window: the initial logit w of the softmax
      terms' weight gamma = sigmoid(w); default logit(0.1) = -2.197.
    rotary: None, or a function (q, k) -> (q, k) applied after QK-norm, e.g.
      RoPE closed over the model's positions; q is [B, T, N, D], k [B, S, K, D].
    sow_weights: sow the (dense) weights [B, N, T, S] as
      ("intermediates", "attention_weights") for diagnostics.
    dtype: computation dtype of the projections (attention computes in f32).
    param_dtype: parameter dtype.

  References:
    Ramapuram et al., "Theory, Analysis, and Best Practices for Sigmoid
    Self-Attention", arXiv:2409.04431.
    Nakanishi, "Scalable-Softmax Is Superior for Attention", arXiv:2501.19399.
  """

  num_heads: int
  num_kv_heads: int | None = None
  head_dim: int | None = None
  qkv_features: int | None = None
  out_features: int | None = None
  normalizer: str = "softmax"
  normalizer_kwargs: Mapping[str, Any] | None = None
  qk_norm: bool = False
  layer_scale_init: float | None = None
  is_causal: bool = False
  implementation: str | None = None
  block_size: int | None = None
  attention: str = "dot_product"
  feature_map: str = "elu+1"
  feature_map_kwargs: Mapping[str, Any] | None = None
  window: int = 64
  window_factor_init: float = WINDOW_FACTOR_INIT
  rotary: Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]] | None = None
  sow_weights: bool = False
  dtype: Any = None
  param_dtype: Any = jnp.float32

  def _head_dim(self, features: int) -> int:
    return head_dim_of(self.num_heads, features, self.head_dim, self.qkv_features)

  def _per_head_param(self, name: str, init: float) -> jax.Array:
    return self.param(
        name, nn.initializers.constant(init), (self.num_heads,), self.param_dtype
    )

  def _normalizer_kwargs(self) -> dict[str, Any]:
    kwargs = dict(self.normalizer_kwargs or {})
    for param in normalizers.attention_spec(self.normalizer).layer_params:
      learned, value = layer_param_setting(self.normalizer, param, self._field, kwargs)
      if learned:
        kwargs[param.kwarg] = self._per_head_param(f"{self.normalizer}_{param.kwarg}", value)
      elif value is not None:
        kwargs[param.kwarg] = value
    return kwargs

  def _field(self, field: str):
    if not hasattr(self, field):
      raise ValueError(
          f"normalizer {self.normalizer!r} was registered after"
          f" softlab.attention was imported, so the layer has no {field} field"
      )
    return getattr(self, field)

  @nn.compact
  def __call__(self, inputs_q, inputs_kv=None, mask=None, *, shared_weights=None,
               return_weights=False):
    """Attention of inputs_q [B, T, F] over inputs_kv [B, S, F'] (default inputs_q).

    Args:
      inputs_q: queries' inputs.
      inputs_kv: keys' and values' inputs; None for self-attention.
      mask: boolean, broadcastable to [B, N, T, S]; True = attend.
      shared_weights: [B, N, T, S] attention weights computed elsewhere (UniAttn:
        the first block of a superblock); this layer then applies them to its
        own values and has no query / key projections (nor normalizer parameters).
      return_weights: also return the [B, N, T, S] weights (computed densely,
        and applied to the values densely).

    Returns:
      [B, T, out_features]; with return_weights, (that, the weights).
    """
    check_attention_kind(self.attention, sow_weights=self.sow_weights, is_causal=self.is_causal)
    if self.attention != "dot_product" and (return_weights or shared_weights is not None):
      raise ValueError("shared attention weights (UniAttn) need attention='dot_product', got "
                       f"attention={self.attention!r}")
    inputs_kv = inputs_q if inputs_kv is None else inputs_kv
    kv_heads = self.num_kv_heads or self.num_heads
    head_dim = self._head_dim(inputs_q.shape[-1])
    dense = functools.partial(
        nn.DenseGeneral,
        use_bias=False,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
    )
    value = dense((kv_heads, head_dim), name="value")(inputs_kv)
    if shared_weights is not None:
      weights = shared_weights
      if self.sow_weights:
        self.sow("intermediates", "attention_weights", weights)
      out = weighted_values(weights, value.astype(weights.dtype)).astype(value.dtype)
      return self._output(out, inputs_q.shape[-1], weights, return_weights)
    kwargs = self._normalizer_kwargs()
    query = dense((self.num_heads, head_dim), name="query")(inputs_q)
    key = dense((kv_heads, head_dim), name="key")(inputs_kv)
    if self.qk_norm:
      norm = functools.partial(
          nn.LayerNorm,
          use_bias=False,
          feature_axes=(-2, -1),
          dtype=self.dtype,
          param_dtype=self.param_dtype,
      )
      query, key = norm(name="query_norm")(query), norm(name="key_norm")(key)
    if self.rotary is not None:
      query, key = self.rotary(query, key)
    options = dict(
        normalizer=self.normalizer, normalizer_kwargs=kwargs, is_causal=self.is_causal
    )
    weights = None
    if self.sow_weights or return_weights:
      weights = attention_weights(query, key, mask=mask, **options)
    if self.sow_weights:
      self.sow("intermediates", "attention_weights", weights)
    if return_weights:
      out = weighted_values(weights, value.astype(weights.dtype)).astype(query.dtype)
    else:
      feature_map_kwargs = dict(self.feature_map_kwargs or {})
      if self.attention != "dot_product":
        for name, initial in learned_feature_map_params(
            self.feature_map, feature_map_kwargs, head_dim, kv_heads).items():
          feature_map_kwargs[name] = self.param(
              f"{self.feature_map}_{name}", lambda rng, v=initial: v.astype(self.param_dtype))
      window_factor = None
      if self.attention == "sliding_window":
        window_factor = jax.nn.sigmoid(self._per_head_param("window_factor", self.window_factor_init))
      out = attend(query, key, value, mask, attention=self.attention,
                   implementation=self.implementation, block_size=self.block_size,
                   feature_map=self.feature_map, feature_map_kwargs=feature_map_kwargs,
                   window=self.window, window_factor=window_factor, **options)
    return self._output(out, inputs_q.shape[-1], weights, return_weights)

  def _output(self, out, input_features, weights, return_weights):
    """The output projection (+ LayerScale) of the heads' outputs [B, T, N, Hv]."""
    features = self.out_features or input_features
    out = nn.DenseGeneral(features, axis=(-2, -1), use_bias=False, dtype=self.dtype,
                          param_dtype=self.param_dtype, name="out")(out)
    if self.layer_scale_init is not None:
      gain = self.param(
          "layer_scale",
          nn.initializers.constant(self.layer_scale_init),
          (features,),
          self.param_dtype,
      )
      out = out * gain
    return (out, weights) if return_weights else out


_FIELDS = normalizer_fields()
# MultiHeadAttention's (and the models' config) fields for normalizer
# parameters, derived from the specs registered when this module is imported.
# Linen fields must exist when the class is created, hence type(): the class is
# _MultiHeadAttention plus these fields.
NORMALIZER_FIELDS = tuple(_FIELDS)
MultiHeadAttention = type(
    "MultiHeadAttention",
    (_MultiHeadAttention,),
    {
        "__module__": __name__,
        "__qualname__": "MultiHeadAttention",
        "__doc__": _MultiHeadAttention.__doc__.rstrip() + "\n\n  Normalizer fields:\n" + "".join(
            f"    {field}: {doc} (default {default!r}).\n"
            for field, (_, default, doc) in _FIELDS.items()
        ),
        "__annotations__": {field: kind for field, (kind, _, _) in _FIELDS.items()},
        **{field: default for field, (_, default, _) in _FIELDS.items()},
    },
)
