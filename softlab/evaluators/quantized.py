"""The evaluation loss with the weights quantized to a few bits (round to nearest)."""

from softlab import models
from softlab.evaluators.common import REGISTRY, Evaluator


@REGISTRY.register("quantized")
class Quantized(Evaluator):
  """Per split and bit width k in `bits`: `loss_int{k}`, the trainer's evaluation loss with
  every weight tensor quantized to k bits (softlab.models.quantize_weights: symmetric,
  one absmax scale per tensor)."""

  def __init__(self, experiment, splits, mesh, *, every, bits=(8,)):
    if not (isinstance(bits, (tuple, list)) and bits
            and all(isinstance(b, int) and not isinstance(b, bool) and b >= 2 for b in bits)):
      raise ValueError(f"bits must be a non-empty tuple of integer bit widths >= 2, got {bits!r}")
    super().__init__(experiment, splits, mesh, every=every)
    self.bits = tuple(bits)

  def batch_metrics(self, params, predict, batch):
    return {f"loss_int{width}": predict(models.quantize_weights(params, bits=width))["loss"]
            for width in self.bits}
