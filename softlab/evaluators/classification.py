"""Classification metrics: loss, accuracy, collapse, top-k, NLL, ECE, MSP AUROC / AUPR."""

import jax
import jax.numpy as jnp

from softlab import metrics, normalizers
from softlab.evaluators.common import REGISTRY, Evaluator, gather


@REGISTRY.register("classification")
class Classification(Evaluator):
  """Per split: the trainer's evaluation loss, accuracy, softmax-collapse and zero-loss shares.

  Options:
    top_k: k values for `top{k}_accuracy`.
    nll: also report `nll`, the softmax negative log-likelihood of the label.
    ece_bins: also report `ece` with this many bins (softlab.metrics).
    ood_split: a split of out-of-distribution inputs: it gets no metrics of its
      own, and every other split reports `msp_auroc` and `msp_aupr` of its
      examples (positives) against it, scored by the max softmax probability.
  """

  def __init__(self, experiment, splits, mesh, *, every, top_k=(), nll=False, ece_bins=None,
               ood_split=None):
    if ood_split is not None and ood_split not in splits:
      raise ValueError(f"ood_split: no split {ood_split!r}; valid: {', '.join(splits)}")
    self.ood = splits[ood_split] if ood_split is not None else None
    splits = {k: v for k, v in splits.items() if k != ood_split}
    super().__init__(experiment, splits, mesh, every=every)
    self.top_k, self.nll, self.ece_bins = tuple(top_k), nll, ece_bins
    if ece_bins is not None or self.ood is not None:
      self._outputs = jax.jit(lambda params, extra, batch: {
          k: experiment.predict(params, extra, batch)[k] for k in ("logits", "labels")})

  def batch_metrics(self, params, predict, batch):
    out = predict(params)
    logits, labels, values = out["logits"], out["labels"], out["loss"]
    real = batch["weight"] > 0
    results = {
        "loss": values,
        "accuracy": metrics.accuracy(logits, labels),
        "softmax_collapse": metrics.softmax_collapse_fraction(logits, dtype=logits.dtype,
                                                              where=real),
        "zero_loss": metrics.zero_loss_fraction(values, where=real),
    }
    for k in self.top_k:
      results[f"top{k}_accuracy"] = metrics.topk_accuracy(logits, labels, k=k)
    if self.nll:
      log_p = normalizers.log_softmax(logits.astype(jnp.float32))
      results["nll"] = -jnp.take_along_axis(log_p, labels[..., None], axis=-1)[..., 0]
    return results

  def run(self, params, extra):
    results = super().run(params, extra)
    if self.ece_bins is None and self.ood is None:
      return results
    ood = gather(self._outputs, params, extra, self.ood, self.mesh) if self.ood else None
    for split, batches in self.splits.items():
      outputs = gather(self._outputs, params, extra, batches, self.mesh)
      if self.ece_bins is not None:
        results[f"{split}/ece"] = float(metrics.expected_calibration_error(
            outputs["logits"], outputs["labels"], num_bins=self.ece_bins))
      if ood is not None:
        results[f"{split}/msp_auroc"] = float(metrics.msp_auroc(outputs["logits"], ood["logits"]))
        results[f"{split}/msp_aupr"] = float(metrics.msp_aupr(outputs["logits"], ood["logits"]))
    return results
