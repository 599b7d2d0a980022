"""Contrastive image-text training with any pairwise loss (SigLIP, CLIP), the
loss sharded over the mesh's "data" axis with shard_map (SigLIP: ring of text
blocks, per-device memory O(b^2); CLIP: all-gather). `predict` gives
evaluators (zero_shot, retrieval) the image, caption and class-prompt ("a
photo of the digit seven") embeddings.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from softlab.experiment import ConfigError, Experiment
from softlab.trainers.base import REGISTRY, build_models, options
from softlab.trainers.kinds import choose_loss, feeds

feeds("contrastive", ("pairwise",))

# How the logit parameters' loss arguments are logged (train/temperature, train/bias).
LOGGED_AS = {"t": "temperature", "b": "bias"}


@REGISTRY.register("contrastive")
def contrastive(config, dataset, mesh) -> Experiment:
  """Two towers trained with the pairwise loss `config.loss.name`.

  Loss options: the fields of the loss's logit-parameter module (LossInfo.
  logit_params), e.g. t_prime_init (default log 10 here, SigLIP's, for every
  loss) and, for SigLIP, bias_init (default -10; None = no bias).
  """
  model, eval_model = build_models(config, dataset.info)
  loss_fn, info = choose_loss(config, "contrastive")
  hyper = options(config, "loss", drop=("name",))
  valid = [f.name for f in dataclasses.fields(info.logit_params)
           if f.name not in ("parent", "name")]
  unknown = sorted(set(hyper) - set(valid))
  if unknown:
    raise ConfigError(f"config.loss: unknown field(s) {', '.join(unknown)} for "
                      f"{config.loss.name}; valid: {', '.join(valid)}")
  logit_params = info.logit_params(**{"t_prime_init": math.log(10.0), **hyper})
  first = dataset.train_batch(0)
  pairs = len(first["images"])
  if pairs % mesh.size:
    raise ConfigError(f"config.train.batch_size: a batch of {pairs} pairs must divide by the "
                      f"{mesh.size} devices: every pair is a negative for every other, so no "
                      "padding")
  prompts = jnp.asarray(dataset.info["class_prompts"])

  def init_params(rng):
    towers, logit = jax.random.split(rng)
    return {"towers": model.init(towers, first["images"][:1], first["tokens"][:1]),
            "logit": logit_params.init(logit)}

  def pair_losses(zimg, ztxt, arguments):
    return loss_fn(zimg, ztxt, **arguments, axis_name="data")

  sharded = jax.shard_map(pair_losses, mesh=mesh, in_specs=(P("data"), P("data"), P()),
                          out_specs=P("data"))

  def loss(params, extra, batch, rng):
    zimg, ztxt = model.apply(params["towers"], batch["images"], batch["tokens"])
    arguments = logit_params.apply(params["logit"], method="loss_arguments")
    values = sharded(zimg, ztxt, arguments)
    logged = {LOGGED_AS.get(key, key): value for key, value in arguments.items()}
    return jnp.mean(values), ({"loss": values, **logged}, extra)

  def predict(params, extra, batch, *, sown=()):
    """Image and class-prompt embeddings, and the captions' when the batch has them."""
    towers = params["towers"]
    out = {"image_embeddings": eval_model.apply(towers, batch["images"], method="encode_images"),
           "class_embeddings": eval_model.apply(towers, prompts, method="encode_texts"),
           "labels": batch["labels"], "sown": {}}
    if "tokens" in batch:
      out["text_embeddings"] = eval_model.apply(towers, batch["tokens"], method="encode_texts")
    return out

  return Experiment(init_params=init_params,
                    init_extra=lambda params: {}, loss=loss, predict=predict)
