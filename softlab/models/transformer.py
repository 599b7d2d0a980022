"""Pre-norm transformers whose attention comes from softlab.attention: a decoder
LM (RoPE or no positions), a ViT-tiny for small images, and a set-attention
classifier (one learned query over a set of items)."""

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from softlab import attention, normalizers
from softlab.models.base import REGISTRY, reject_unknown
from softlab.validation import FieldError, check_integer, check_number

POSITIONS = ("rope", "none")
# Model config fields passed to softlab.attention.MultiHeadAttention as they are;
# the normalizer parameters' fields come from the normalizers' specs.
ATTENTION_FIELDS = ("normalizer", "normalizer_kwargs", *attention.NORMALIZER_FIELDS, "qk_norm",
                    "layer_scale_init", "implementation", "block_size", "sow_weights",
                    "attention", "feature_map", "feature_map_kwargs", "window",
                    "window_factor_init")


def rope(x: jax.Array, positions: jax.Array, *, base: float = 10000.0) -> jax.Array:
  """Rotary position embedding of x [B, T, N, D] at integer positions [T].

  Pairs (x_i, x_{i + D/2}) are rotated by positions * base^(-2i/D).

  References:
    Su et al., "RoFormer: Enhanced Transformer with Rotary Position
    Embedding", arXiv:2104.09864.
  """
  half = x.shape[-1] // 2
  frequencies = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angles = positions.astype(jnp.float32)[:, None] * frequencies[None, :]
  cos, sin = jnp.cos(angles)[:, None, :], jnp.sin(angles)[:, None, :]
  first, second = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
  rotated = jnp.concatenate([first * cos - second * sin, first * sin + second * cos], axis=-1)
  return rotated.astype(x.dtype)


def rope_both(query, key):
  """RoPE on q and k, each at positions 0..length-1 (self-attention)."""
  return (rope(query, jnp.arange(query.shape[1])), rope(key, jnp.arange(key.shape[1])))


class Block(nn.Module):
  """x + attention(LayerNorm(x)), then x + MLP(LayerNorm(x)).

  Sows ("intermediates") the mean square of the attention output per example
  ("attention_mean_square", [B]) and the block's output ("hidden"), for
  stability and activation diagnostics.

  UniAttn superblocks (`DecoderLM.superblock_size`): the first block of a
  superblock has `returns_weights` and returns (x, its attention weights
  [B, N, T, S]); a later one is called with `shared_weights`, applies them to
  its own values (no query / key projections), and with `compensation` adds
  LayerNorm(x) W_c to the attention output, W_c [d, d] initialized to 0.
  """

  num_heads: int
  mlp_ratio: int
  attention_options: Mapping[str, Any]
  is_causal: bool
  positions: str
  dtype: Any
  returns_weights: bool = False
  compensation: bool = False

  @nn.compact
  def __call__(self, x, mask=None, shared_weights=None):
    h = nn.LayerNorm(dtype=self.dtype, param_dtype=self.dtype)(x)
    attended = attention.MultiHeadAttention(
        num_heads=self.num_heads, is_causal=self.is_causal,
        rotary=rope_both if self.positions == "rope" else None,
        dtype=self.dtype, param_dtype=self.dtype, name="attention",
        **self.attention_options)(h, mask=mask, shared_weights=shared_weights,
                                  return_weights=self.returns_weights)
    if self.returns_weights:
      attended, weights = attended
    if shared_weights is not None and self.compensation:
      attended = attended + nn.Dense(x.shape[-1], use_bias=False, kernel_init=nn.initializers.zeros,
                                     dtype=self.dtype, param_dtype=self.dtype,
                                     name="compensation")(h)
    self.sow("intermediates", "attention_mean_square",
             jnp.mean(jnp.square(attended.astype(jnp.float32)), axis=(1, 2)))
    x = x + attended
    h = nn.LayerNorm(dtype=self.dtype, param_dtype=self.dtype)(x)
    h = nn.Dense(self.mlp_ratio * x.shape[-1], dtype=self.dtype, param_dtype=self.dtype)(h)
    h = nn.Dense(x.shape[-1], dtype=self.dtype, param_dtype=self.dtype)(nn.gelu(h))
    x = x + h
    self.sow("intermediates", "hidden", x)
    return (x, weights) if self.returns_weights else x


class DecoderLM(nn.Module):
  """Causal language model: tokens [B, T] -> logits [B, T, V].

  With `head=False` it returns (hidden [B, T, d], head weight [d, V]) so the
  loss can be computed without materializing the logits (linear_cross_entropy).

  UniAttn (Softmax Unification): with superblock_size G > 1, blocks i with
  i % G == 0 compute their attention weights (densely) and the next G - 1
  blocks reuse them on their own values, so only one block in G computes
  q.k and the normalizer; `uniattn_compensation` adds to each reusing block
  the linear compensation LayerNorm(x) W_c, initialized at 0 so a model
  post-trained from a baseline (`config.train.init_from`) starts as pure
  reuse. The paper computes W_c's initial value in closed form from
  calibration data; that initialization is not implemented. G = 1 is the
  baseline (the same parameters and computation).

  Checked against the released code (github.com/Bostoncake/UniAttn,
  model_file/modeling_llama_softmax_layer_init.py and the mistral / gemma2
  files, `scaled_dot_product_attention(..., residual_attention_weight)`):
  a reusing layer applies the computing layer's post-softmax weights to its
  own v_proj values, and its `v2_proj` (a hidden x hidden Linear on the
  normed input) is added to the attention output after o_proj: as here.
  Differences: the released models group only layers
  grouping_begin_idx <= i < grouping_end_idx (the README's runs: G = 4,
  begin 16, end 33: layers 16..31 of 32, the lower half untouched), the first of each group
  being (i - grouping_begin_idx) % G == 0 (llama; mistral uses i % G == 0,
  gemma2 (i - 1) % G == 0), where here every layer is grouped from layer 0;
  its reusing layers keep (and compute, unused) q_proj and k_proj, which
  here have no parameters; v2_proj is initialized from calibration
  statistics (scripts/train_deepspeed-init_calc.sh) and has a bias when the
  model's attention has one. The paper's equation numbers could not be
  checked (its text was not reachable here).

  References:
    Xiong et al., "UniAttn: Reducing Inference Costs via Softmax Unification
    for Post-Training LLMs", arXiv:2502.00439.
  """

  vocab_size: int
  d_model: int
  num_layers: int
  num_heads: int
  mlp_ratio: int
  positions: str
  tie_embeddings: bool
  attention_options: Mapping[str, Any]
  dtype: Any
  superblock_size: int = 1
  uniattn_compensation: bool = False

  @nn.compact
  def __call__(self, tokens, *, head: bool = True):
    embed = nn.Embed(self.vocab_size, self.d_model, dtype=self.dtype, param_dtype=self.dtype)
    x = embed(tokens)
    shared = None
    for i in range(self.num_layers):
      first = i % self.superblock_size == 0
      block = Block(self.num_heads, self.mlp_ratio, self.attention_options, True, self.positions,
                    self.dtype, returns_weights=first and self.superblock_size > 1,
                    compensation=self.uniattn_compensation, name=f"block{i}")
      if self.superblock_size == 1:
        x = block(x)
      elif first:
        x, shared = block(x)
      else:
        x = block(x, shared_weights=shared)
    x = nn.LayerNorm(dtype=self.dtype, param_dtype=self.dtype)(x)
    if self.tie_embeddings:
      weight = embed.embedding.T
    else:
      weight = self.param("head", nn.initializers.lecun_normal(), (self.d_model, self.vocab_size),
                          self.dtype)
    if not head:
      return x, weight
    return x @ weight.astype(x.dtype)


class ViT(nn.Module):
  """Vision transformer: non-overlapping patches, learned positions, mean pooling."""

  num_classes: int
  patch: int
  d_model: int
  num_layers: int
  num_heads: int
  mlp_ratio: int
  attention_options: Mapping[str, Any]
  dtype: Any

  @nn.compact
  def __call__(self, images):
    x = nn.Conv(self.d_model, (self.patch, self.patch), strides=(self.patch, self.patch),
                dtype=self.dtype, param_dtype=self.dtype, name="patches")(images.astype(self.dtype))
    x = x.reshape(x.shape[0], -1, self.d_model)
    x = x + self.param("positions", nn.initializers.normal(0.02), x.shape[1:], self.dtype)
    for i in range(self.num_layers):
      x = Block(self.num_heads, self.mlp_ratio, self.attention_options, False, "none", self.dtype,
                name=f"block{i}")(x)
    x = nn.LayerNorm(dtype=self.dtype, param_dtype=self.dtype)(x).mean(axis=1)
    return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.dtype)(x)


class SetAttention(nn.Module):
  """One attention layer: a learned query reads a set of items [B, L, F] -> logits.

  Items are embedded by a 2-layer MLP; the query attends over the unmasked
  items (the attention weights are sown for diagnostics); an MLP maps the read
  vector to class logits. The max-retrieval setup of "softmax is not enough"
  (arXiv:2410.01104). `query_init_std` is the learned query's initial standard
  deviation: the attention scores at initialization scale with it, so a large
  value starts the attention saturated (the regime where Song et al.,
  arXiv:2411.07538, find softmax attention can stall under gradient descent).
  """

  num_classes: int
  d_model: int
  num_heads: int
  attention_options: Mapping[str, Any]
  dtype: Any
  query_init_std: float = 1.0

  @nn.compact
  def __call__(self, items, mask=None):
    dense = lambda n, name: nn.Dense(n, dtype=self.dtype, param_dtype=self.dtype, name=name)
    x = dense(self.d_model, "embed_out")(nn.gelu(dense(self.d_model, "embed_in")(items)))
    query = self.param("query", nn.initializers.normal(self.query_init_std), (1, 1, self.d_model), self.dtype)
    query = jnp.broadcast_to(query, (x.shape[0], 1, self.d_model))
    attend = None if mask is None else mask[:, None, None, :]
    read = attention.MultiHeadAttention(
        num_heads=self.num_heads, dtype=self.dtype, param_dtype=self.dtype, name="attention",
        **{**self.attention_options, "sow_weights": True})(query, x, mask=attend)[:, 0]
    return dense(self.num_classes, "head")(nn.gelu(dense(self.d_model, "hidden")(read)))


def attention_options(options: dict) -> dict:
  """Pops the attention fields of a model config (defaults: the layer's own).

  An unknown `normalizer` is a FieldError listing the valid ones here, at
  build time, rather than a traceback from inside the first initialization.
  """
  chosen = {k: options.pop(k) for k in ATTENTION_FIELDS if k in options}
  if "normalizer" in chosen:
    try:
      normalizers.attention_spec(chosen["normalizer"])
    except ValueError as error:
      raise FieldError("normalizer", f": {error}") from None
  return chosen


def check_sizes(model: nn.Module, *names: str, minimum: int = 1) -> None:
  """Each field `names` of `model` is an integer >= minimum (FieldError naming it);
  num_heads must divide d_model, the width every head's dimension comes from."""
  for name in names:
    check_integer(getattr(model, name), name, minimum=minimum)
  if "num_heads" in names and model.d_model % model.num_heads:
    raise FieldError("num_heads", f"={model.num_heads} must divide d_model={model.d_model}")


@REGISTRY.register("transformer")
def transformer(options, info, *, dtype):
  """A decoder LM sized by d_model, num_layers, num_heads, mlp_ratio; UniAttn by
  superblock_size and uniattn_compensation (see DecoderLM)."""
  model = DecoderLM(
      vocab_size=options.pop("vocab_size", info.get("vocab_size")),
      d_model=options.pop("d_model", 128), num_layers=options.pop("num_layers", 2),
      num_heads=options.pop("num_heads", 4), mlp_ratio=options.pop("mlp_ratio", 4),
      positions=options.pop("positions", "rope"),
      tie_embeddings=options.pop("tie_embeddings", True),
      attention_options=attention_options(options), dtype=dtype,
      superblock_size=options.pop("superblock_size", 1),
      uniattn_compensation=options.pop("uniattn_compensation", False))
  reject_unknown(options, "transformer")
  check_sizes(model, "vocab_size", "d_model", "num_heads", "mlp_ratio")
  check_sizes(model, "num_layers", minimum=0)
  if model.positions not in POSITIONS:
    raise ValueError(f"positions {model.positions!r}; valid: {', '.join(POSITIONS)}")
  if not isinstance(model.superblock_size, int) or model.superblock_size < 1:
    raise ValueError(f"superblock_size must be an int >= 1, got {model.superblock_size!r}")
  if not isinstance(model.uniattn_compensation, bool):
    raise ValueError(f"uniattn_compensation must be True or False, got"
                     f" {model.uniattn_compensation!r}")
  return model


@REGISTRY.register("vit_tiny")
def vit_tiny(options, info, *, dtype):
  """A small ViT for 8x8-to-32x32 images (patch 2 by default)."""
  model = ViT(
      num_classes=options.pop("num_classes", info.get("num_classes")),
      patch=options.pop("patch", 2), d_model=options.pop("d_model", 64),
      num_layers=options.pop("num_layers", 2), num_heads=options.pop("num_heads", 4),
      mlp_ratio=options.pop("mlp_ratio", 2), attention_options=attention_options(options),
      dtype=dtype)
  reject_unknown(options, "vit_tiny")
  check_sizes(model, "num_classes", "patch", "d_model", "num_heads", "mlp_ratio")
  check_sizes(model, "num_layers", minimum=0)
  return model


@REGISTRY.register("set_attention")
def set_attention(options, info, *, dtype):
  """The one-layer set classifier of the max-retrieval task (query_init_std: the
  learned query's initial standard deviation, default 1)."""
  query_init_std = options.pop("query_init_std", 1.0)
  check_number(query_init_std, "model.query_init_std", lambda v: v > 0, "> 0", required=True)
  model = SetAttention(
      num_classes=options.pop("num_classes", info.get("num_classes")),
      d_model=options.pop("d_model", 64), num_heads=options.pop("num_heads", 1),
      attention_options=attention_options(options), dtype=dtype, query_init_std=query_init_std)
  reject_unknown(options, "set_attention")
  check_sizes(model, "num_classes", "d_model", "num_heads")
  return model
