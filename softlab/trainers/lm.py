"""Language modelling: a decoder transformer, next-token cross-entropy, and
validation at several sequence lengths in one run (length extrapolation).

`config.eval_model` (optional): model fields overridden at evaluation only,
e.g. LSSAR sharpening applied at inference to a model trained with LSSA.
Evaluators (`config.evals`: lm, attention_diagnostics, quantized) read
`predict`: logits, targets, the per-window loss and sown values by name.
Training logs `train/attention_rms`, the RMS of the attention outputs averaged
over layers (the sigmoid-attention paper's early-training stability signal).
"""

import jax.numpy as jnp

from softlab import losses, metrics
from softlab.trainers.base import (REGISTRY, ConfigError, Experiment, build_models, dtype_of,
                                   field, loss_options, sowing, sown_values)

LOSSES = ("softmax_cross_entropy", "linear_cross_entropy")


def attention_rms(state, weight):
  """RMS of the attention outputs over the real examples, averaged over layers."""
  name = "attention_mean_square"
  mean_square = jnp.stack(sown_values(state, (name,))[name])  # [layers, B]
  return jnp.mean(jnp.sqrt(mean_square @ weight / jnp.sum(weight)))


@REGISTRY.register("lm")
def lm(config, dataset, mesh) -> Experiment:
  """Next-token prediction on token windows [B, T + 1] (`batch["tokens"]`)."""
  model, eval_model = build_models(config, dataset.info)
  name = field(config, "loss.name")
  if name not in LOSSES:
    raise ConfigError(f"config.loss.name: {name!r} is not a language-model loss; valid: "
                      f"{', '.join(LOSSES)}")
  vocab, labels = dataset.info["vocab_size"], jnp.zeros(1, jnp.int32)
  if name == "linear_cross_entropy":
    hyper = loss_options(config, losses.linear_cross_entropy, jnp.zeros((1, 1)),
                         jnp.zeros((1, vocab)), labels)
  else:
    hyper = loss_options(config, losses.softmax_cross_entropy, jnp.zeros((1, vocab)), labels)
  loss_dtype = dtype_of(config, "loss.dtype")
  example = dataset.train_batch(0)["tokens"][:1, :-1]

  def per_example(values):
    return jnp.mean(values, axis=-1)

  def loss(params, extra, batch, rng):
    inputs, targets = batch["tokens"][:, :-1], batch["tokens"][:, 1:]
    if name == "linear_cross_entropy":
      (hidden, weight), state = model.apply(params, inputs, head=False, mutable=["intermediates"])
      values = losses.linear_cross_entropy(
          hidden.reshape(-1, hidden.shape[-1]).astype(loss_dtype), weight.astype(loss_dtype),
          targets.reshape(-1), **hyper).reshape(targets.shape)
      step_metrics = {}
    else:
      logits, state = model.apply(params, inputs, mutable=["intermediates"])
      logits = logits.astype(loss_dtype)
      values = losses.softmax_cross_entropy(logits, targets, **hyper)
      step_metrics = {"accuracy": per_example(metrics.accuracy(logits, targets))}
    step_metrics["attention_rms"] = attention_rms(state, batch["weight"])
    values = per_example(values)
    weight = batch["weight"]
    return jnp.sum(weight * values) / jnp.sum(weight), ({"loss": values, **step_metrics}, extra)

  def predict(params, extra, batch, *, sown=()):
    inputs, targets = batch["tokens"][:, :-1], batch["tokens"][:, 1:]
    logits, state = sowing(eval_model, sown).apply(params, inputs, mutable=["intermediates"])
    logits = logits.astype(loss_dtype)
    return {"logits": logits, "targets": targets,
            "loss": per_example(losses.softmax_cross_entropy(logits, targets)),
            "sown": sown_values(state, sown)}

  return Experiment(init_params=lambda rng: model.init(rng, example),
                    init_extra=lambda params: {}, loss=loss, predict=predict)
