"""Language-model metrics per validation split (one split per sequence length)."""

import jax.numpy as jnp

from softlab import metrics
from softlab.evaluators.common import REGISTRY, Evaluator


@REGISTRY.register("lm")
class LanguageModel(Evaluator):
  """Per split: next-token `loss` (nats per token) and `accuracy`, averaged per window."""

  def __init__(self, experiment, splits, mesh, *, every):
    super().__init__(experiment, splits, mesh, every=every)

  def batch_metrics(self, params, predict, batch):
    out = predict(params)
    return {"loss": out["loss"],
            "accuracy": jnp.mean(metrics.accuracy(out["logits"], out["targets"]), axis=-1)}
