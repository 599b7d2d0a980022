"""Language-model metrics per validation split (one split per sequence length)."""

import jax.numpy as jnp

from softlab import metrics
from softlab.evaluators.common import REGISTRY, Evaluator


@REGISTRY.register("lm")
class LanguageModel(Evaluator):
  """Per split: next-token `loss` (nats per token) and `accuracy`, averaged per window.

  Options:
    top_k: k values for `top{k}_accuracy`, the share of next tokens among the
      model's k highest logits (softlab.metrics.topk_accuracy).
  """

  def __init__(self, experiment, splits, mesh, *, every, top_k=()):
    super().__init__(experiment, splits, mesh, every=every)
    self.top_k = tuple(top_k)

  def batch_metrics(self, params, predict, batch):
    out = predict(params)
    logits, targets = out["logits"], out["targets"]
    results = {"loss": out["loss"],
               "accuracy": jnp.mean(metrics.accuracy(logits, targets), axis=-1)}
    for k in self.top_k:
      results[f"top{k}_accuracy"] = jnp.mean(metrics.topk_accuracy(logits, targets, k=k), axis=-1)
    return results
