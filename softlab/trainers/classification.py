"""Classification: inputs -> logits -> any classification or LDR loss.

ALDR-KL's per-example lambda lives in the train state (`extra["lam"]`,
indexed by training-example id), so it survives checkpoints like the weights.
Set inputs (batches with a "mask") go to the model as (inputs, mask).
`config.eval_model` (optional) overrides model fields at evaluation only, e.g.
adaptive-temperature softmax at test time. Evaluators (`config.evals`) read
`predict`: logits, labels, the per-example loss and sown values by name.
"""

import inspect

import jax.numpy as jnp

from softlab import losses, metrics
from softlab.trainers.base import (REGISTRY, ConfigError, Experiment, build_models, dtype_of,
                                   field, lookup, loss_options, sowing, sown_values)

ADAPTIVE_LOSSES = ("aldr_kl",)


@REGISTRY.register("classification")
def classification(config, dataset, mesh) -> Experiment:
  """An MLP / ViT-tiny classifier trained with `config.loss.name`."""
  model, eval_model = build_models(config, dataset.info)
  name = field(config, "loss.name")
  loss_fn = lookup(losses.get, name, "loss.name")
  loss_dtype = dtype_of(config, "loss.dtype")
  adaptive = name in ADAPTIVE_LOSSES
  train = dataset.train_arrays
  one_logit_row = (jnp.zeros((1, dataset.info["num_classes"])), jnp.zeros(1, jnp.int32))
  if adaptive:
    if train is None:
      raise ConfigError(f"config.loss.name: {name} keeps a lambda per training example, so it "
                        f"needs a dataset with a fixed training set, not {config.data.name!r}")
    hyper = loss_options(config, loss_fn, *one_logit_row, jnp.ones(1))
    lam0 = hyper.get("lam0", inspect.signature(loss_fn).parameters["lam0"].default)
  else:
    hyper = loss_options(config, loss_fn, *one_logit_row)
  example = model_inputs({k: v[:1] for k, v in dataset.train_batch(0).items()})

  def init_params(rng):
    return model.init(rng, *example)

  def init_extra(params):
    if not adaptive:
      return {}
    return {"lam": jnp.full(len(train["labels"]), lam0, loss_dtype)}

  def loss(params, extra, batch, rng):
    logits = model.apply(params, *model_inputs(batch)).astype(loss_dtype)
    if adaptive:
      values, lam = loss_fn(logits, batch["labels"], extra["lam"][batch["ids"]], **hyper)
      ids = jnp.where(batch["weight"] > 0, batch["ids"], len(train["labels"]))
      extra = {"lam": extra["lam"].at[ids].set(lam, mode="drop")}
    else:
      values = loss_fn(logits, batch["labels"], **hyper)
    weight = batch["weight"]
    mean = jnp.sum(weight * values) / jnp.sum(weight)
    return mean, (batch_metrics(logits, batch["labels"], values, weight > 0, loss_dtype), extra)

  def predict(params, extra, batch, *, sown=()):
    """Logits and the training loss (ALDR-KL at its initial lambda) on held-out data."""
    logits, state = sowing(eval_model, sown).apply(params, *model_inputs(batch),
                                                   mutable=["intermediates"])
    logits = logits.astype(loss_dtype)
    if adaptive:
      initial = jnp.full(batch["labels"].shape, lam0, loss_dtype)
      values, _ = loss_fn(logits, batch["labels"], initial, **hyper)
    else:
      values = loss_fn(logits, batch["labels"], **hyper)
    return {"logits": logits, "labels": batch["labels"], "loss": values,
            "sown": sown_values(state, sown)}

  def describe_extra(extra):
    noisy = jnp.asarray(train["is_noisy"])
    lam = extra["lam"]
    return {
        "lambda_noisy": jnp.sum(jnp.where(noisy, lam, 0)) / jnp.maximum(jnp.sum(noisy), 1),
        "lambda_clean": jnp.sum(jnp.where(noisy, 0, lam)) / jnp.maximum(jnp.sum(~noisy), 1),
    }

  return Experiment(
      init_params=init_params, init_extra=init_extra,
      loss=loss, predict=predict,
      describe_extra=describe_extra if adaptive and "is_noisy" in train else None,
  )


def batch_metrics(logits, labels, values, real, dtype):
  """Per-example loss and accuracy; collapse and zero-loss shares of the batch."""
  return {
      "loss": values,
      "accuracy": metrics.accuracy(logits, labels),
      "softmax_collapse": metrics.softmax_collapse_fraction(logits, dtype=dtype, where=real),
      "zero_loss": metrics.zero_loss_fraction(values, where=real),
  }


def model_inputs(batch) -> tuple:
  """The model's positional inputs: (inputs,) or (inputs, mask) for sets."""
  return (batch["inputs"], batch["mask"]) if "mask" in batch else (batch["inputs"],)
