"""Attention diagnostics from the values the model sows, looked up by name.

"attention_weights" are the sown [B, N, T, S] weights of each attention layer,
"hidden" the residual stream after each block, both in layer order.
"""

import jax.numpy as jnp

from softlab.attention import diagnostics
from softlab.evaluators.common import REGISTRY, Evaluator


@REGISTRY.register("attention_diagnostics")
class AttentionDiagnostics(Evaluator):
  """Per split, over real examples: `sink_rate` (share of (layer, head) pairs whose
  batch-mean weight on the first key exceeds the threshold), `sparsity` (share of
  causal weights <= 1e-5) and `kurtosis` of the hidden states
  (softlab.attention.diagnostics; "Softpick", arXiv:2504.20966). For causal models."""

  def __init__(self, experiment, splits, mesh, *, every):
    super().__init__(experiment, splits, mesh, every=every)

  def batch_metrics(self, params, predict, batch):
    sown = predict(params, sown=("attention_weights", "hidden"))["sown"]
    weights = jnp.stack(sown["attention_weights"])  # [layers, B, N, T, T]
    weight = batch["weight"]
    real = weight > 0
    causal = jnp.tril(jnp.ones(weights.shape[-2:], bool)) & real[:, None, None, None]
    return {
        "sink_rate": diagnostics.sink_rate(
            jnp.einsum("lbnts,b->lnts", weights, weight / jnp.sum(weight))),
        "sparsity": diagnostics.sparsity(weights, causal),
        "kurtosis": diagnostics.hidden_state_kurtosis(jnp.stack(sown["hidden"]),
                                                      where=real[:, None, None]),
    }


@REGISTRY.register("attention_on_target")
class AttentionOnTarget(Evaluator):
  """Per split: `attention_on_target`, the weight the first query of the last attention
  layer puts on the item named by the batch's "target" (mean over heads), and
  `attention_max`, its largest weight ("softmax is not enough", arXiv:2410.01104)."""

  def __init__(self, experiment, splits, mesh, *, every):
    super().__init__(experiment, splits, mesh, every=every)

  def batch_metrics(self, params, predict, batch):
    weights = predict(params, sown=("attention_weights",))["sown"]["attention_weights"][-1]
    first_query = weights[..., 0, :].mean(axis=1)  # [B, L]
    on_target = jnp.take_along_axis(first_query, batch["target"][:, None], axis=1)[:, 0]
    return {"attention_on_target": on_target, "attention_max": first_query.max(axis=1)}
