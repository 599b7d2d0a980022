"""Attention diagnostics from the values the model sows, looked up by name.

"attention_weights" are the sown [B, N, T, S] weights of each attention layer,
"hidden" the residual stream after each block, both in layer order.
"""

import jax
import jax.numpy as jnp

from softlab.attention import diagnostics
from softlab.evaluators.common import REGISTRY, Evaluator


@REGISTRY.register("attention_diagnostics")
class AttentionDiagnostics(Evaluator):
  """Per split, averaged over real examples (windows), from the sown weights and hidden states:

  - `sink_rate`: share of (layer, head) pairs whose weight on the first key, averaged over the
    queries, exceeds 0.3, per example (Gu et al.'s Sink_1^0.3, thresholded per sequence and
    then averaged over sequences, as their evaluation code does);
  - `sparsity`: share of causal weights <= 1e-5;
  - `kurtosis`: of the hidden states (all layers, positions and channels pooled);
  - `max_activation_l{i}`: the largest |activation| of block i's output (the residual stream)
    in the window, and `max_activation` the largest over all blocks;
  - `max_to_median`: max_activation over the median |activation| of the window's hidden
    states, the scale-free part of the massive-activation criterion (Sun et al.: magnitudes
    about 1000x the median).

  For causal models. References: Gu et al., "When Attention Sink Emerges in Language Models",
  arXiv:2410.10781; Sun et al., "Massive Activations in Large Language Models",
  arXiv:2402.17762; Zuhri et al., "Softpick", arXiv:2504.20966."""

  def __init__(self, experiment, splits, mesh, *, every):
    super().__init__(experiment, splits, mesh, every=every)

  def batch_metrics(self, params, predict, batch):
    sown = predict(params, sown=("attention_weights", "hidden"))["sown"]
    weights = jnp.stack(sown["attention_weights"])  # [layers, B, N, T, T]
    hidden = jnp.stack(sown["hidden"])  # [layers, B, T, D]
    real = batch["weight"] > 0
    causal = jnp.tril(jnp.ones(weights.shape[-2:], bool)) & real[:, None, None, None]
    magnitude = jnp.abs(hidden.astype(jnp.float32))
    per_layer_max = jnp.max(magnitude, axis=(2, 3))  # [layers, B]
    largest = jnp.max(per_layer_max, axis=0)
    median = jnp.median(jnp.moveaxis(magnitude, 1, 0).reshape(magnitude.shape[1], -1), axis=1)
    return {
        "sink_rate": jax.vmap(diagnostics.sink_rate, in_axes=1)(weights),
        "sparsity": diagnostics.sparsity(weights, causal),
        "kurtosis": diagnostics.hidden_state_kurtosis(hidden, where=real[:, None, None]),
        "max_activation": largest,
        **{f"max_activation_l{i}": layer_max for i, layer_max in enumerate(per_layer_max)},
        "max_to_median": largest / jnp.where(median > 0, median, 1),
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
