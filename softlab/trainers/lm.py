"""Language modelling: a decoder transformer, next-token cross-entropy, and
validation at several sequence lengths in one run (length extrapolation).

`config.eval_model` (optional): model fields overridden at evaluation only,
e.g. LSSAR sharpening applied at inference to a model trained with LSSA.
Evaluators (`config.evals`: lm, attention_diagnostics, quantized) read
`predict`: logits, targets, the per-window loss and sown values by name.
Training logs `train/attention_rms`, the RMS of the attention outputs averaged
over layers (the sigmoid-attention paper's early-training stability signal).

The training loss is any classification loss (on the logits, also logging
`train/accuracy`) or vocab_head loss (on the final hidden states and the
output projection, e.g. `linear_cross_entropy`, which never forms the logits).
"""

import jax.numpy as jnp

from softlab import losses, metrics
from softlab.experiment import Experiment
from softlab.trainers.base import (REGISTRY, build_models, dtype_of, loss_options, sowing,
                                   sown_values)
from softlab.trainers.kinds import choose_loss, feeds


def logits_loss(model, params, inputs, targets, loss_fn, hyper, dtype):
  """Classification kind: (per-token values, per-token metrics, sown state) from the logits."""
  logits, state = model.apply(params, inputs, mutable=["intermediates"])
  logits = logits.astype(dtype)
  values = loss_fn(logits, targets, **hyper)
  return values, {"accuracy": metrics.accuracy(logits, targets)}, state


def vocab_head_loss(model, params, inputs, targets, loss_fn, hyper, dtype):
  """Vocab_head kind: (per-token values, no metrics, sown state) from (hidden, weight)."""
  (hidden, weight), state = model.apply(params, inputs, head=False, mutable=["intermediates"])
  values = loss_fn(hidden.reshape(-1, hidden.shape[-1]).astype(dtype), weight.astype(dtype),
                   targets.reshape(-1), **hyper).reshape(targets.shape)
  return values, {}, state


# Loss kind -> (its model outputs for a vocabulary of V (a dry-run example), its adapter).
ADAPTERS = {
    "classification": (lambda vocab: (jnp.zeros((1, vocab)),), logits_loss),
    "vocab_head": (lambda vocab: (jnp.zeros((1, 1)), jnp.zeros((1, vocab))), vocab_head_loss),
}
feeds("lm", ADAPTERS)


def attention_rms(state, weight):
  """RMS of the attention outputs over the real examples, averaged over layers."""
  name = "attention_mean_square"
  mean_square = jnp.stack(sown_values(state, (name,))[name])  # [layers, B]
  return jnp.mean(jnp.sqrt(mean_square @ weight / jnp.sum(weight)))


@REGISTRY.register("lm")
def lm(config, dataset, mesh) -> Experiment:
  """Next-token prediction on token windows [B, T + 1] (`batch["tokens"]`)."""
  model, eval_model = build_models(config, dataset.info)
  loss_fn, info = choose_loss(config, "lm")
  example_outputs, adapter = ADAPTERS[info.kind]
  hyper = loss_options(config, loss_fn, *example_outputs(dataset.info["vocab_size"]),
                       jnp.zeros(1, jnp.int32))
  loss_dtype = dtype_of(config, "loss.dtype")
  example = dataset.train_batch(0)["tokens"][:1, :-1]

  def per_example(values):
    return jnp.mean(values, axis=-1)

  def loss(params, extra, batch, rng):
    inputs, targets = batch["tokens"][:, :-1], batch["tokens"][:, 1:]
    values, per_token, state = adapter(model, params, inputs, targets, loss_fn, hyper, loss_dtype)
    step_metrics = {key: per_example(value) for key, value in per_token.items()}
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
