"""Two-tower evaluation: zero-shot classification by class prompts, retrieval recall@k."""

import jax
import jax.numpy as jnp
import numpy as np

from softlab import losses
from softlab.evaluators.common import REGISTRY, Evaluator, gather


@REGISTRY.register("zero_shot")
class ZeroShot(Evaluator):
  """Per split: `zero_shot_accuracy`, each image classified by its most similar class
  prompt (cosine similarity of the embeddings; CLIP, arXiv:2103.00020)."""

  def __init__(self, experiment, splits, mesh, *, every):
    super().__init__(experiment, splits, mesh, every=every)

  def batch_metrics(self, params, predict, batch):
    out = predict(params)
    similarity = losses.cosine_logits(out["image_embeddings"], out["class_embeddings"])
    return {"zero_shot_accuracy": (jnp.argmax(similarity, axis=-1) == batch["labels"])
            .astype(jnp.float32)}


@REGISTRY.register("retrieval")
class Retrieval(Evaluator):
  """Per split of paired images and captions: `image_to_text_r@k` (share of images whose
  own caption is among the k most similar captions of the split) and `text_to_image_r@k`."""

  def __init__(self, experiment, splits, mesh, *, every, ks=(1, 5)):
    if not ks or not all(isinstance(k, int) and k >= 1 for k in ks):
      raise ValueError(f"ks must be a non-empty tuple of integers >= 1, got {ks!r}")
    super().__init__(experiment, splits, mesh, every=every)
    self.ks = tuple(ks)
    self._embed = jax.jit(lambda params, extra, batch: {
        k: experiment.predict(params, extra, batch)[k]
        for k in ("image_embeddings", "text_embeddings")})

  def run(self, params, extra):
    results = {}
    for split, batches in self.splits.items():
      out = gather(self._embed, params, extra, batches, self.mesh)
      images, texts = (x / np.linalg.norm(x, axis=-1, keepdims=True)
                       for x in (out["image_embeddings"].astype(np.float64),
                                 out["text_embeddings"].astype(np.float64)))
      similarity = images @ texts.T
      for direction, scores in (("image_to_text", similarity), ("text_to_image", similarity.T)):
        # rank of the true pair = number of candidates scoring strictly higher
        rank = np.sum(scores > np.diag(scores)[:, None], axis=1)
        for k in self.ks:
          results[f"{split}/{direction}_r@{k}"] = float(np.mean(rank < k))
    return results
