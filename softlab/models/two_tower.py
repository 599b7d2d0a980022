"""Two towers (image, text) mapping paired inputs to one embedding space."""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from softlab.models.base import REGISTRY, check_widths, reject_unknown
from softlab.models.mlp import MLP
from softlab.validation import check_integer


class TextTower(nn.Module):
  """Token embeddings, mean over the non-padding tokens (id 0 is padding), MLP."""

  vocab_size: int
  width: int
  embed_dim: int
  dtype: Any

  @nn.compact
  def __call__(self, tokens):
    x = nn.Embed(self.vocab_size, self.width, dtype=self.dtype, param_dtype=self.dtype)(tokens)
    present = (tokens != 0)[..., None].astype(x.dtype)
    pooled = jnp.sum(x * present, axis=1) / jnp.maximum(jnp.sum(present, axis=1), 1)
    return MLP(hidden=(self.width,), num_outputs=self.embed_dim, dtype=self.dtype)(pooled)


class TwoTower(nn.Module):
  """(images, tokens) -> (image embeddings, text embeddings), both [B, embed_dim].

  `encode_images` / `encode_texts` embed one side alone (zero-shot evaluation).
  """

  image_hidden: Sequence[int]
  text_width: int
  vocab_size: int
  embed_dim: int
  dtype: Any

  def setup(self):
    self.image_tower = MLP(hidden=self.image_hidden, num_outputs=self.embed_dim, dtype=self.dtype)
    self.text_tower = TextTower(self.vocab_size, self.text_width, self.embed_dim, self.dtype)

  def encode_images(self, images):
    return self.image_tower(images)

  def encode_texts(self, tokens):
    return self.text_tower(tokens)

  def __call__(self, images, tokens):
    return self.encode_images(images), self.encode_texts(tokens)


@REGISTRY.register("two_tower")
def two_tower(options, info, *, dtype):
  """An MLP image tower and a bag-of-tokens text tower."""
  model = TwoTower(
      image_hidden=check_widths(options.pop("image_hidden", (128,)), "image_hidden"),
      text_width=options.pop("text_width", 64),
      vocab_size=options.pop("vocab_size", info.get("vocab_size")),
      embed_dim=options.pop("embed_dim", 32), dtype=dtype)
  reject_unknown(options, "two_tower")
  for name in ("text_width", "vocab_size", "embed_dim"):
    check_integer(getattr(model, name), name)
  return model
