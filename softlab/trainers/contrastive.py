"""Contrastive image-text training with SigLIP or CLIP, the loss sharded over
the mesh's "data" axis with shard_map (SigLIP: ring of text blocks, per-device
memory O(b^2); CLIP: all-gather). `predict` gives evaluators (zero_shot,
retrieval) the image, caption and class-prompt ("a photo of the digit
seven") embeddings.
"""

import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from softlab import losses
from softlab.trainers.base import REGISTRY, ConfigError, Experiment, build_models, field, options

LOSSES = ("siglip_loss", "clip_loss")


@REGISTRY.register("contrastive")
def contrastive(config, dataset, mesh) -> Experiment:
  """Two towers trained with `config.loss.name` in (siglip_loss, clip_loss).

  Loss options: t_prime_init (default log 10, both losses) and, for SigLIP,
  bias_init (default -10; None = no bias).
  """
  model, eval_model = build_models(config, dataset.info)
  name = field(config, "loss.name")
  if name not in LOSSES:
    raise ConfigError(f"config.loss.name: {name!r} is not a contrastive loss; valid: "
                      f"{', '.join(LOSSES)}")
  hyper = options(config, "loss", drop=("name",))
  t_prime_init = hyper.pop("t_prime_init", math.log(10.0))
  if name == "siglip_loss":
    logit_params = losses.SigLIPLogitParams(t_prime_init=t_prime_init,
                                            bias_init=hyper.pop("bias_init", -10.0))
  else:
    logit_params = losses.CLIPLogitScale(t_prime_init=t_prime_init)
  if hyper:
    raise ConfigError(f"config.loss: unknown field(s) {', '.join(sorted(hyper))} for {name}")
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

  def pair_losses(zimg, ztxt, t, b):
    if name == "siglip_loss":
      return losses.siglip_loss(zimg, ztxt, t=t, b=b, axis_name="data")
    return losses.clip_loss(zimg, ztxt, t=t, axis_name="data")

  sharded = jax.shard_map(pair_losses, mesh=mesh, in_specs=(P("data"), P("data"), P(), P()),
                          out_specs=P("data"))

  def loss(params, extra, batch, rng):
    zimg, ztxt = model.apply(params["towers"], batch["images"], batch["tokens"])
    if name == "siglip_loss":
      t, b = logit_params.apply(params["logit"])
      logged = {"temperature": t, "bias": b}
    else:
      t, b = logit_params.apply(params["logit"]), jnp.zeros(())
      logged = {"temperature": t}
    values = sharded(zimg, ztxt, t, b)
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
