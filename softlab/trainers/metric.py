"""Metric learning: an embedding classifier trained with any margin loss.

The model (`embedding_classifier`) gives embeddings, their norms, class
centers, cosines to the centers and, with a quality head, quality scores. A
margin loss names what it takes (LossInfo.inputs, softlab.losses.
MARGIN_INPUTS) and gets exactly that, by keyword: cosines, labels, embeddings,
feature norms, a PRNG key drawn fresh every step (ElasticFace's margins,
Partial FC's sampling), the real-example mask, quality predictions; a loss
that runs another (Partial FC's margin_loss) also gets that loss's inputs
(`losses.margin_inputs`). No code here looks at a loss's name.

- A loss that takes `centers` (Partial FC, Unicom) runs inside shard_map over
  the mesh's "data" axis: each device gets its slice of the batch and its
  C / D rows of the centers, and the loss combines its sums over classes
  with `axis_name="data"` (data and model parallel, as in Partial FC). The
  centers and their optimizer state are stored split the same way
  (`param_specs`), so a device holds C / D rows, never all C.
- A stateful loss (AdaFace's running norm statistics) keeps its state in
  `extra["loss_state"]`; its scalar entries are logged (train/norm_mean, ...).
- A loss with learnable arguments (SphereFace2's bias) gets them from its
  `logit_params` module, whose parameters live beside the model's
  (params["loss"]) and are logged (train/b).

`predict` gives evaluators the L2-normalized embeddings, the cosines to the
class centers as "logits" (the closest sub-center with sub-centers), labels,
the loss (the training loss on the batch: the current state, a fixed key),
the feature norms and, with a quality head, "quality".
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from softlab import losses, metrics
from softlab.experiment import ConfigError, Experiment
from softlab.trainers.base import REGISTRY, build_models, loss_options, options
from softlab.trainers.kinds import choose_loss, feeds

feeds("metric", ("margin",), stateful=True, inputs=tuple(losses.MARGIN_INPUTS))

# Inputs that are one value for the whole batch (the rest have the batch or class axis first).
SHARED_INPUTS = ("key",)


@REGISTRY.register("metric")
def metric(config, dataset, mesh) -> Experiment:
  """`config.model` (an embedding_classifier) trained with the margin loss `config.loss.name`."""
  model, eval_model = build_models(config, dataset.info)
  loss_fn, info = choose_loss(config, "metric")
  given = options(config, "loss", drop=("name", "dtype"))
  try:
    inputs = losses.margin_inputs(config.loss.name, given)
  except ValueError as error:
    raise ConfigError(f"config.loss: {error}") from None
  num_classes = dataset.info["num_classes"]
  first = dataset.train_batch(0)
  outputs = jax.eval_shape(
      lambda: model.init_with_output(jax.random.key(0), first["inputs"][:2])[0])
  if not isinstance(outputs, dict) or "cos" not in outputs:
    raise ConfigError(f"config.model: the metric trainer needs an embedding_classifier, got "
                      f"{config.model.name!r}")
  if "quality" in inputs and "quality" not in outputs:
    raise ConfigError(f"config.model.quality_head: {config.loss.name} trains a quality head "
                      "(it takes `quality`); set it to True")
  sharded_centers = "centers" in inputs
  if sharded_centers and num_classes % mesh.size:
    raise ConfigError(f"config.data: {num_classes} classes do not split over {mesh.size} "
                      f"devices, and {config.loss.name} shards the class centers over them")

  logit_params, learnable = None, ()
  if info.logit_params is not None:
    fields = {f.name for f in dataclasses.fields(info.logit_params)}
    logit_params = info.logit_params(num_classes=num_classes,
                                     **{k: v for k, v in given.items() if k in fields})
    learnable = tuple(jax.eval_shape(lambda: logit_params.init_with_output(
        jax.random.key(0), method="loss_arguments")[0]))

  example = example_inputs(inputs, outputs, num_classes)
  supplied = (*inputs, *learnable, "axis_name")
  learned_example = {name: jnp.zeros(()) for name in learnable}
  if info.stateful is None:
    hyper = loss_options(config, loss_fn, supplied=supplied,
                         call=lambda **h: loss_fn(**example, **learned_example, **h))
    stateful = None
  else:
    def dry_run(**h):
      made = info.stateful(**h)
      return made.apply(**example, state=made.init(2), ids=jnp.arange(2))
    hyper = loss_options(config, info.stateful, supplied=supplied, call=dry_run)
    stateful = info.stateful(**hyper)
  num_train = len(dataset.train_arrays["labels"]) if dataset.train_arrays else 0

  def centers_loss(arguments):
    return loss_fn(**arguments, **hyper, axis_name="data")

  def loss_values(out, params, extra, batch, key):
    """(per-example loss values, new extra) from the model's outputs on `batch`."""
    real = batch["weight"] > 0
    available = {**out, "labels": batch["labels"], "key": key, "where": real}
    arguments = {name: available[name] for name in inputs}
    if logit_params is not None:
      arguments.update(logit_params.apply(params["loss"], method="loss_arguments"))
    if sharded_centers:
      specs = {name: P() if name in SHARED_INPUTS else P("data") for name in arguments}
      values = jax.shard_map(centers_loss, mesh=mesh, in_specs=(specs,),
                             out_specs=P("data"))(arguments)
      return values, extra
    if stateful is None:
      return loss_fn(**arguments, **hyper), extra
    ids = jnp.where(real, batch["ids"], num_train) if "ids" in batch else jnp.full_like(
        batch["labels"], num_train)
    values, state = stateful.apply(**arguments, state=extra["loss_state"], ids=ids, where=real)
    return values, {"loss_state": state}

  def init_params(rng):
    model_rng, loss_rng = jax.random.split(rng)
    params = {"model": model.init(model_rng, first["inputs"][:1])}
    if logit_params is not None:
      params["loss"] = logit_params.init(loss_rng, method="loss_arguments")
    return params

  def init_extra(params):
    return {} if stateful is None else {"loss_state": stateful.init(num_train)}

  def loss(params, extra, batch, rng):
    out = model.apply(params["model"], batch["inputs"])
    values, extra = loss_values(out, params, extra, batch, rng)
    weight = batch["weight"]
    logged = {"loss": values, "accuracy": metrics.accuracy(class_cosines(out["cos"]),
                                                           batch["labels"])}
    if logit_params is not None:
      logged.update(logit_params.apply(params["loss"], method="loss_arguments"))
    return jnp.sum(weight * values) / jnp.sum(weight), (logged, extra)

  def predict(params, extra, batch, *, sown=()):
    """Normalized embeddings, cosines to the classes, norms, quality and the loss."""
    out = eval_model.apply(params["model"], batch["inputs"])
    values, _ = loss_values(out, params, extra, batch, jax.random.key(0))
    embeddings = out["embeddings"]
    predicted = {"embeddings": embeddings / jnp.maximum(out["norms"][:, None], 1e-12),
                 "logits": class_cosines(out["cos"]), "labels": batch["labels"],
                 "norms": out["norms"], "loss": values, "sown": {}}
    if "quality" in out:
      predicted["quality"] = out["quality"]
    return predicted

  def describe_extra(extra):
    """The loss state's scalars (AdaFace's running norm mean and std)."""
    return {key: value for key, value in extra["loss_state"].items() if jnp.ndim(value) == 0}

  def param_specs(params):
    """The class centers split over "data" by their leading (class) axis."""
    specs = jax.tree.map(lambda _: P(), params)
    specs["model"]["params"]["centers"] = P("data")
    return specs

  return Experiment(init_params=init_params, init_extra=init_extra, loss=loss, predict=predict,
                    describe_extra=describe_extra if stateful is not None else None,
                    param_specs=param_specs if sharded_centers else None)


def class_cosines(cos):
  """[N, C] cosines to the classes: the closest sub-center's with [N, C, K] inputs."""
  return jnp.max(cos, axis=-1) if cos.ndim == 3 else cos


def example_inputs(names, outputs, num_classes) -> dict:
  """A concrete two-example batch of the named inputs, for the loss options' dry run."""
  labels = np.arange(2, dtype=np.int32) % num_classes
  made = {"labels": jnp.asarray(labels), "key": jax.random.key(0),
          "where": jnp.ones(2, bool)}
  for name, shape in outputs.items():
    shape = (2, *shape.shape[1:]) if name != "centers" else shape.shape
    made[name] = jnp.full(shape, 0.5, jnp.float32)
  return {name: made[name] for name in names}
