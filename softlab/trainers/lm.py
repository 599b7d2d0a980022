"""Language modelling: a decoder transformer, next-token cross-entropy, and
validation at several sequence lengths in one run (length extrapolation).

`config.eval_model` (optional) overrides model fields at evaluation only, e.g.
LSSAR sharpening applied at inference to a model trained with LSSA.
"""

import jax.numpy as jnp

from softlab import losses, metrics
from softlab.trainers.base import (REGISTRY, ConfigError, Experiment, build_models, dtype_of,
                                   field, options)

LOSSES = ("softmax_cross_entropy", "linear_cross_entropy")


@REGISTRY.register("lm")
def lm(config, dataset, mesh) -> Experiment:
  """Next-token prediction on token windows [B, T + 1] (`batch["tokens"]`)."""
  model, eval_model = build_models(config, dataset.info)
  name = field(config, "loss.name")
  if name not in LOSSES:
    raise ConfigError(f"config.loss.name: {name!r} is not a language-model loss; valid: "
                      f"{', '.join(LOSSES)}")
  hyper = options(config, "loss", drop=("name", "dtype"))
  loss_dtype = dtype_of(config, "loss.dtype")
  example = dataset.train_batch(0)["tokens"][:1, :-1]

  def per_example(values):
    return jnp.mean(values, axis=-1)

  def loss(params, extra, batch, rng):
    inputs, targets = batch["tokens"][:, :-1], batch["tokens"][:, 1:]
    if name == "linear_cross_entropy":
      hidden, weight = model.apply(params, inputs, head=False)
      values = losses.linear_cross_entropy(
          hidden.reshape(-1, hidden.shape[-1]).astype(loss_dtype), weight.astype(loss_dtype),
          targets.reshape(-1), **hyper).reshape(targets.shape)
      step_metrics = {}
    else:
      logits = model.apply(params, inputs).astype(loss_dtype)
      values = losses.softmax_cross_entropy(logits, targets, **hyper)
      step_metrics = {"accuracy": per_example(metrics.accuracy(logits, targets))}
    values = per_example(values)
    weight = batch["weight"]
    return jnp.sum(weight * values) / jnp.sum(weight), ({"loss": values, **step_metrics}, extra)

  def evaluate(params, extra, batch):
    inputs, targets = batch["tokens"][:, :-1], batch["tokens"][:, 1:]
    logits = eval_model.apply(params, inputs).astype(loss_dtype)
    return {"loss": per_example(losses.softmax_cross_entropy(logits, targets)),
            "accuracy": per_example(metrics.accuracy(logits, targets))}

  return Experiment(model=model, dataset=dataset, init_params=lambda rng: model.init(rng, example),
                    init_extra=lambda params: {}, loss=loss, evaluate=evaluate)
