"""Language modelling: a decoder transformer, next-token cross-entropy, and
validation at several sequence lengths in one run (length extrapolation).

Optional config fields:
- `eval_model`: model fields overridden at evaluation only, e.g. LSSAR
  sharpening applied at inference to a model trained with LSSA.
- `eval_diagnostics` (bool): at the training length, also report the
  attention-sink rate, attention sparsity and hidden-state kurtosis
  (softlab.attention.diagnostics).
- `eval_quantize_bits` (tuple of ints): also report the loss with the weights
  quantized to each bit width (`loss_int8`, ...; softlab.models.quantize_weights).
Training logs `train/attention_rms`, the RMS of the attention outputs averaged
over layers (the sigmoid-attention paper's early-training stability signal).
"""

import jax
import jax.numpy as jnp

from softlab import attention, losses, metrics, models
from softlab.trainers.base import (REGISTRY, ConfigError, Experiment, build_models, dtype_of,
                                   field, loss_options)

LOSSES = ("softmax_cross_entropy", "linear_cross_entropy")


def sown(state, name):
  """Every value sown under `name`, in layer order."""
  found = []
  for path, leaf in jax.tree_util.tree_leaves_with_path(state["intermediates"]):
    if any(getattr(key, "key", None) == name for key in path):
      found.append(leaf)
  return found


def attention_rms(state, weight):
  """RMS of the attention outputs over the real examples, averaged over layers."""
  mean_square = jnp.stack(sown(state, "attention_mean_square"))  # [layers, B]
  return jnp.mean(jnp.sqrt(mean_square @ weight / jnp.sum(weight)))


def diagnose(state, weight):
  """Sink rate, sparsity and kurtosis over the real examples (weight > 0)."""
  weights = jnp.stack(sown(state, "attention_weights"))  # [layers, B, N, T, T]
  real = weight > 0
  causal = jnp.tril(jnp.ones(weights.shape[-2:], bool)) & real[:, None, None, None]
  return {
      "sink_rate": attention.diagnostics.sink_rate(
          jnp.einsum("lbnts,b->lnts", weights, weight / jnp.sum(weight))),
      "sparsity": attention.diagnostics.sparsity(weights, causal),
      "kurtosis": attention.diagnostics.hidden_state_kurtosis(
          jnp.stack(sown(state, "hidden")), where=real[:, None, None]),
  }


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
  train_length = dataset.info["seq_len"]
  bits = config.get("eval_quantize_bits", ())
  if not (isinstance(bits, (tuple, list))
          and all(isinstance(b, int) and not isinstance(b, bool) and b >= 2 for b in bits)):
    raise ConfigError(f"config.eval_quantize_bits must be a tuple of integer bit widths >= 2, "
                      f"got {bits!r}")
  diagnostic_model = (eval_model.clone(attention_options={**eval_model.attention_options,
                                                          "sow_weights": True})
                      if config.get("eval_diagnostics", False) else None)
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

  def evaluate(params, extra, batch):
    inputs, targets = batch["tokens"][:, :-1], batch["tokens"][:, 1:]
    at_train_length = inputs.shape[1] == train_length
    if diagnostic_model is not None and at_train_length:
      logits, state = diagnostic_model.apply(params, inputs, mutable=["intermediates"])
      results = diagnose(state, batch["weight"])
    else:
      logits, results = eval_model.apply(params, inputs), {}
    logits = logits.astype(loss_dtype)
    results["loss"] = per_example(losses.softmax_cross_entropy(logits, targets))
    results["accuracy"] = per_example(metrics.accuracy(logits, targets))
    for width in bits:
      quantized = eval_model.apply(models.quantize_weights(params, bits=width), inputs)
      results[f"loss_int{width}"] = per_example(
          losses.softmax_cross_entropy(quantized.astype(loss_dtype), targets))
    return results

  return Experiment(init_params=lambda rng: model.init(rng, example),
                    init_extra=lambda params: {}, loss=loss, evaluate=evaluate)
