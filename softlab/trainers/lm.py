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

The training loss is any classification loss (on the logits, also logging
`train/accuracy`) or vocab_head loss (on the final hidden states and the
output projection, e.g. `linear_cross_entropy`, which never forms the logits).
"""

import jax
import jax.numpy as jnp

from softlab import attention, losses, metrics, models
from softlab.trainers.base import (REGISTRY, ConfigError, Experiment, build_models, dtype_of,
                                   loss_options)
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
  loss_fn, info = choose_loss(config, "lm")
  example_outputs, adapter = ADAPTERS[info.kind]
  hyper = loss_options(config, loss_fn, *example_outputs(dataset.info["vocab_size"]),
                       jnp.zeros(1, jnp.int32))
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
    values, per_token, state = adapter(model, params, inputs, targets, loss_fn, hyper, loss_dtype)
    step_metrics = {key: per_example(value) for key, value in per_token.items()}
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
