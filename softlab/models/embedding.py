"""Embedding classifiers for metric learning: a backbone, class centers, cosines."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from softlab.losses import cosine_logits
from softlab.models.base import REGISTRY, build, reject_unknown
from softlab.validation import FieldError, check_integer


class EmbeddingClassifier(nn.Module):
  """backbone(x) = e -> cosines of e to the class centers, |e|, and a quality score.

  Returns a dict: "embeddings" [N, d] (before L2 normalization, so their norms
  can carry quality, as AdaFace assumes), "norms" [N], "centers" [C, d] (or
  [C, K, d] with K sub-centers), "cos" [N, C] (or [N, C, K]) and, with a
  quality head, "quality" [N] (a linear regression on e, CR-FIQA's head).
  """

  backbone: nn.Module
  num_classes: int
  embedding_dim: int
  subcenters: int = 1
  quality_head: bool = False
  dtype: Any = jnp.float32

  def setup(self):
    shape = (self.num_classes, self.embedding_dim)
    if self.subcenters > 1:
      shape = (self.num_classes, self.subcenters, self.embedding_dim)
    self.centers = self.param("centers", nn.initializers.normal(1.0), shape, jnp.float32)
    if self.quality_head:
      self.quality = nn.Dense(1, dtype=self.dtype, param_dtype=self.dtype)

  def embed(self, inputs):
    """The backbone's embeddings [N, d], not normalized."""
    return self.backbone(inputs).astype(jnp.float32)

  def __call__(self, inputs):
    embeddings = self.embed(inputs)
    out = {"embeddings": embeddings, "norms": jnp.linalg.norm(embeddings, axis=-1),
           "centers": self.centers, "cos": cosine_logits(embeddings, self.centers)}
    if self.quality_head:
      out["quality"] = self.quality(embeddings)[:, 0].astype(jnp.float32)
    return out


@REGISTRY.register("embedding_classifier")
def embedding_classifier(options, info, *, dtype):
  """A backbone (`backbone`: a model config, default an MLP with one hidden layer
  of 128; any registered model whose output width follows info["num_classes"],
  e.g. vit_tiny on images) giving `embedding_dim` features, `subcenters` K
  centers per class (1: [C, d]), and optionally a `quality_head`."""
  backbone = dict(options.pop("backbone", {"name": "mlp", "hidden": (128,)}))
  embedding_dim = options.pop("embedding_dim", 64)
  subcenters = options.pop("subcenters", 1)
  quality_head = options.pop("quality_head", False)
  num_classes = options.pop("num_classes", info.get("num_classes"))
  reject_unknown(options, "embedding_classifier")
  for name, value in (("embedding_dim", embedding_dim), ("subcenters", subcenters),
                      ("num_classes", num_classes)):
    check_integer(value, name)
  if backbone.get("name") == "embedding_classifier":
    raise ValueError("backbone: an embedding_classifier cannot be its own backbone")
  try:
    backbone_model = build(backbone, {**info, "num_classes": embedding_dim}, dtype=dtype)
  except FieldError as error:
    raise error.within("backbone") from None
  return EmbeddingClassifier(
      backbone=backbone_model, num_classes=num_classes, embedding_dim=embedding_dim,
      subcenters=subcenters, quality_head=bool(quality_head), dtype=dtype)
