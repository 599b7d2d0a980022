"""Contrastive image-text training with any pairwise loss (SigLIP, CLIP), the
loss sharded over the mesh's "data" axis with shard_map (SigLIP: ring of text
blocks, per-device memory O(b^2); CLIP: all-gather). Zero-shot accuracy: each
test image is classified by its most similar class prompt ("a photo of the
digit seven").
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from softlab import losses
from softlab.trainers.base import REGISTRY, ConfigError, Experiment, build_models, options
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

  def evaluate(params, extra, batch):
    images = eval_model.apply(params["towers"], batch["images"], method="encode_images")
    texts = eval_model.apply(params["towers"], prompts, method="encode_texts")
    correct = jnp.argmax(losses.cosine_logits(images, texts), axis=-1) == batch["labels"]
    return {"zero_shot_accuracy": correct.astype(jnp.float32)}

  return Experiment(init_params=init_params,
                    init_extra=lambda params: {}, loss=loss, evaluate=evaluate)
