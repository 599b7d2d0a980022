"""Classification: inputs -> logits -> any classification or multilabel loss.

Multilabel losses get the labels as a one-hot label matrix. A loss that
registers `inputs` (Noisy Softmax: "key", "step") gets them by keyword: the
loop's per-step PRNG key and the training step, which the trainer counts in
`extra["loss_step"]`; evaluation uses a fixed key. A stateful loss
(ALDR-KL's per-example lambda) keeps its state in the train state
(`extra["loss_state"]`, indexed by training-example id), so it survives
checkpoints like the weights; each per-example state entry is logged averaged
over the noisy and the clean training examples (`train/lambda_noisy`, ...).
Set inputs (batches with a "mask") go to the model as (inputs, mask).
`config.eval_model` (optional) overrides model fields at evaluation only, e.g.
adaptive-temperature softmax at test time. Evaluators (`config.evals`) read
`predict`: logits, labels, the per-example loss and sown values by name.
"""

import jax
import jax.numpy as jnp

from softlab import metrics
from softlab.experiment import ConfigError, Experiment
from softlab.trainers.base import (REGISTRY, build_models, dtype_of, loss_options, sowing,
                                   sown_values)
from softlab.trainers.kinds import choose_loss, feeds, stateful_dry_run

# Loss kind -> (integer labels, number of classes) -> the loss's second input.
TARGETS = {
    "classification": lambda labels, num_classes: labels,
    "multilabel": lambda labels, num_classes: jax.nn.one_hot(labels, num_classes),
}
# Loss inputs beyond (logits, targets) this trainer supplies (losses.CLASSIFICATION_INPUTS): the
# loop's per-step key, and the step, counted in extra["loss_step"] (checkpointed with the state).
INPUTS = ("key", "step")
feeds("classification", TARGETS, stateful=True, inputs=INPUTS)


@REGISTRY.register("classification")
def classification(config, dataset, mesh) -> Experiment:
  """An MLP / ViT-tiny classifier trained with `config.loss.name`."""
  model, eval_model = build_models(config, dataset.info)
  loss_fn, info = choose_loss(config, "classification")
  loss_dtype = dtype_of(config, "loss.dtype")
  train = dataset.train_arrays
  num_classes = dataset.info["num_classes"]

  def targets(labels):
    return TARGETS[info.kind](labels, num_classes)

  one_logit_row = (jnp.zeros((1, num_classes)), targets(jnp.zeros(1, jnp.int32)))
  takes_step = "step" in info.inputs

  def loss_inputs(key, step):
    """The inputs the loss registered, by keyword."""
    return {name: value for name, value in (("key", key), ("step", step)) if name in info.inputs}

  if info.stateful is None:
    dry_inputs = loss_inputs(jax.random.key(0), 0)
    hyper = loss_options(config, loss_fn, *one_logit_row, supplied=info.inputs,
                         call=lambda *example, **h: loss_fn(*example, **dry_inputs, **h))
    stateful = None
  else:
    if train is None:
      state = ", ".join(info.stateful().init(0))
      raise ConfigError(f"config.loss.name: {config.loss.name} keeps a {state} per training "
                        "example, so it needs a dataset with a fixed training set, not "
                        f"{config.data.name!r}")
    hyper = loss_options(config, info.stateful, *one_logit_row,
                         call=stateful_dry_run(info.stateful))
    stateful = info.stateful(**hyper)
  example = model_inputs({k: v[:1] for k, v in dataset.train_batch(0).items()})

  def init_params(rng):
    return model.init(rng, *example)

  def init_extra(params):
    extra = {"loss_step": jnp.zeros((), jnp.int32)} if takes_step else {}
    if stateful is not None:
      extra["loss_state"] = stateful.init(len(train["labels"]), loss_dtype)
    return extra

  def loss(params, extra, batch, rng):
    logits = model.apply(params, *model_inputs(batch)).astype(loss_dtype)
    if stateful is None:
      values = loss_fn(logits, targets(batch["labels"]), **hyper,
                       **loss_inputs(rng, extra.get("loss_step")))
    else:
      ids = jnp.where(batch["weight"] > 0, batch["ids"], len(train["labels"]))
      values, state = stateful.apply(logits, targets(batch["labels"]), extra["loss_state"], ids)
      extra = {**extra, "loss_state": state}
    if takes_step:
      extra = {**extra, "loss_step": extra["loss_step"] + 1}
    weight = batch["weight"]
    mean = jnp.sum(weight * values) / jnp.sum(weight)
    return mean, (batch_metrics(logits, batch["labels"], values, weight > 0, loss_dtype), extra)

  def predict(params, extra, batch, *, sown=()):
    """Logits and the training loss (a stateful one from a fresh state) on held-out data."""
    logits, state = sowing(eval_model, sown).apply(params, *model_inputs(batch),
                                                   mutable=["intermediates"])
    logits = logits.astype(loss_dtype)
    return {"logits": logits, "labels": batch["labels"],
            "loss": fresh_loss(logits, batch["labels"], extra.get("loss_step")),
            "sown": sown_values(state, sown)}

  def fresh_loss(logits, labels, step):
    """Per-example loss values (a fixed key); a stateful loss's from its initial state."""
    if stateful is None:
      return loss_fn(logits, targets(labels), **hyper, **loss_inputs(jax.random.key(0), step))
    count = labels.shape[0]
    values, _ = stateful.apply(logits, targets(labels), stateful.init(count, loss_dtype),
                               jnp.arange(count))
    return values

  def describe_extra(extra):
    """Each per-example state entry averaged over the noisy and the clean examples."""
    noisy = jnp.asarray(train["is_noisy"])
    return {f"{key}_{group}": jnp.sum(jnp.where(chosen, leaf, 0)) / jnp.maximum(jnp.sum(chosen), 1)
            for key, leaf in extra["loss_state"].items()
            for group, chosen in (("noisy", noisy), ("clean", ~noisy))}

  return Experiment(
      init_params=init_params, init_extra=init_extra,
      loss=loss, predict=predict,
      describe_extra=describe_extra if stateful is not None and "is_noisy" in train else None,
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
