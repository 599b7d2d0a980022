"""Linearizing a trained softmax LM (LoLCATs): attention transfer, then LoRA.

`config.trainer = "linearize"` with `config.model` the student (the trained
model's fields with e.g. attention="linear" or "sliding_window" and
feature_map="hedgehog") and `config.linearize` (LINEARIZE_FIELDS):
  from_workdir   a softlab run (lm or linearize) whose config.json and latest
                 checkpoint give the starting parameters: every student
                 parameter it has (same path and shape) is taken from it, the
                 others (the feature maps' learned arguments, the hybrid's
                 window factor) keep their init.
                 A linearize source's LoRA adapters are merged in first.
  stage          "transfer": attention transfer. Only the feature maps train
                 (with attention="sliding_window" also the layers' window
                 factors, the logits of the softmax terms' per-head
                 weights: the released load_and_convert_attns freezes the
                 model and then creates `window_factors` as a new, trainable
                 parameter, so they train with the feature maps), on the
                 per-layer MSE between the student layer's output and the
                 source layer's (its own attention kind, normally softmax)
                 on the same input; the source's output is passed on, so every
                 layer sees the teacher's inputs (LoLCATs' "attention
                 transfer"). As in the released code (hazyresearch/lolcats,
                 src/model/linear_attention/linear_attention.py and
                 linear_window_attention_sw.py: MSE of y_pred against
                 _y_true; src/trainer/distill_attention_xent_mse.py) the
                 MSE is taken on the heads' outputs before the output
                 projection o_proj and averaged over layers; that code
                 also multiplies it by mse_factor = 1000 (its configs), a
                 constant left out here.
                 "lora": LoRA adapters on the attention projections q, k, v, o
                 (rank `lora_rank`, W + (lora_alpha / r) A B, B = 0 at init, so
                 the model starts as the base) train on config.loss (next
                 token); with `train_feature_maps` the feature maps and the
                 window factors train too. The released LoRA configs
                 (finetune_lora_qkvo_*.yaml) train only the adapters (PEFT's
                 get_peft_model freezes the rest, window_factors included),
                 the default here; finetune_lora_fqkvo_*.yaml keeps
                 feature_map_q/k and window_factors trainable
                 (`trainable_weights`), which is `train_feature_maps`.
                 "finetune": every parameter trains on config.loss (the
                 swap-and-fine-tune baseline).
  lora_rank (8), lora_alpha (16.0), train_feature_maps (False): stage "lora".
The parameters are {"model": the student's, "lora": the adapters (empty
unless stage "lora")}; the Experiment's `trainable` tells the loop which
train; every step logs the counts `parameters` and `trainable_parameters`.
The sliding-window hybrid's window factor is the layer's "window_factor"
(`softlab.attention.MultiHeadAttention`, initialized to config.model's
`window_factor_init`, logit(0.1) as released; see
`softlab.attention.sliding_window_linear_attention` for how the released
hybrid differs). The released LoRA stage
(configs/experiment/finetune_lora_qkvo_alpaca_clean.yaml) uses r = 8,
lora_alpha = 16, dropout 0 on q_proj, k_proj, v_proj, o_proj: the defaults
here. The paper's equation numbers could not be checked from here (only its
abstract and the released code were reachable), so none are cited.

References:
  Zhang et al., "LoLCATs: On Low-Rank Linearizing of Large Language Models",
  arXiv:2410.10254.
"""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from softlab import attention, losses
from softlab.models.lora import init_lora, merge_lora
from softlab.experiment import ConfigError, Experiment
from softlab.trainers.base import (REGISTRY, build_models, dtype_of, field, loss_options, sowing,
                                   sown_values)
from softlab.trainers import warm_start
from softlab.trainers.kinds import choose_loss
from softlab.trainers.lm import ADAPTERS, attention_rms

STAGES = ("transfer", "lora", "finetune")
LINEARIZE_FIELDS = {"from_workdir": None, "stage": "transfer", "lora_rank": 8,
                    "lora_alpha": 16.0, "train_feature_maps": False}
# The fields of a layer that say which attention it computes (the teacher's come from the source).
KIND_FIELDS = ("attention", "feature_map", "feature_map_kwargs", "window")


def linearize_options(config) -> dict:
  """config.linearize with defaults, checked."""
  given = dict(field(config, "linearize"))
  unknown = sorted(set(given) - set(LINEARIZE_FIELDS))
  if unknown:
    raise ConfigError(f"config.linearize: unknown field(s) {', '.join(unknown)}; valid: "
                      f"{', '.join(LINEARIZE_FIELDS)}")
  options = {**LINEARIZE_FIELDS, **given}
  if not isinstance(options["from_workdir"], str) or not options["from_workdir"]:
    raise ConfigError("config.linearize.from_workdir must name a trained softlab run's workdir")
  if options["stage"] not in STAGES:
    raise ConfigError(f"config.linearize.stage={options['stage']!r}; valid: {', '.join(STAGES)}")
  rank = options["lora_rank"]
  if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
    raise ConfigError(f"config.linearize.lora_rank must be an integer >= 1, got {rank!r}")
  return options


def load_source(workdir: str) -> tuple[dict, dict]:
  """(config.json, model parameters of its latest checkpoint, LoRA merged) of a run."""
  config_path = os.path.join(workdir, "config.json")
  if not os.path.exists(config_path):
    raise ConfigError(f"config.linearize.from_workdir={workdir} holds no trained run "
                      "(config.json and checkpoints/)")
  with open(config_path) as f:
    source_config = json.load(f)
  params = warm_start.trained_params(workdir, field="linearize.from_workdir")
  if set(params) == {"model", "lora"}:  # a linearize run's own layout
    alpha = source_config["linearize"].get("lora_alpha", LINEARIZE_FIELDS["lora_alpha"])
    params = jax.tree.map(np.asarray, merge_lora(params["model"], params["lora"], alpha=alpha))
  return source_config, params


def overlay(params, source):
  """`params` with every leaf that `source` has at the same path (same shape) taken from it."""
  extra = sorted(set(traverse_util.flatten_dict(source)) - set(traverse_util.flatten_dict(params)))
  if extra:
    raise ConfigError(f"config.linearize.from_workdir has parameters config.model lacks "
                      f"({', '.join('/'.join(path) for path in extra[:3])}): the student must be "
                      "the same architecture")
  return warm_start.merge(params, source, field="linearize.from_workdir")


def feature_map_names(model_config) -> set[str]:
  """The parameter names attention transfer trains: the student's learned feature-map
  arguments ("hedgehog_weight") and, for the sliding-window hybrid, "window_factor"."""
  kind = model_config.get("attention", "dot_product")
  if kind == "dot_product":
    return set()
  name = model_config.get("feature_map", attention.MultiHeadAttention.feature_map)
  names = {f"{name}_{argument}" for argument in attention.feature_map_spec(name).learned}
  return names | ({"window_factor"} if kind == "sliding_window" else set())


def trainable_mask(params, *, stage: str, feature_maps: set[str], train_feature_maps: bool):
  """params -> bools: what `stage` trains (see the module docstring)."""

  def is_feature_map(path):
    return getattr(path[-1], "key", None) in feature_maps

  def mark(path, _):
    part = path[0].key
    if stage == "finetune":
      return True
    if stage == "transfer":
      return part == "model" and is_feature_map(path)
    return part == "lora" or (train_feature_maps and is_feature_map(path))

  return jax.tree_util.tree_map_with_path(mark, params)


def transfer_errors(model, params, inputs, teacher_kind: dict):
  """Per-layer MSE [layers, B] of the student's heads' outputs against the teacher's.

  Each attention layer's call is intercepted: the same layer (same
  parameters) is also applied with the teacher's attention kind on the same
  input, and the teacher's output goes on to the next block. The error is
  the mean square difference of the heads' outputs [T, N, H] before the
  output projection (the input of the layer's `out`), as in the released
  LoLCATs code (MSE of y_pred against _y_true, both before o_proj).
  """
  errors = []
  heads = []  # the input of each `out` projection, in call order
  teaching = []  # non-empty while the teacher layer runs (its own call is not intercepted)

  def interceptor(next_fun, args, kwargs, context):
    if context.method_name != "__call__":
      return next_fun(*args, **kwargs)
    if (context.module.name == "out"
        and isinstance(context.module.parent, attention.MultiHeadAttention)):
      heads.append(args[0])
      return next_fun(*args, **kwargs)
    if teaching or not isinstance(context.module, attention.MultiHeadAttention):
      return next_fun(*args, **kwargs)
    next_fun(*args, **kwargs)
    student = heads.pop()
    teacher_layer = context.module.clone(parent=None, **teacher_kind)
    teaching.append(True)
    teacher_out = teacher_layer.apply({"params": context.module.variables["params"]}, *args,
                                      **kwargs)
    teaching.pop()
    teacher = jax.lax.stop_gradient(heads.pop())
    error = jnp.square(student.astype(jnp.float32) - teacher.astype(jnp.float32))
    errors.append(jnp.mean(error, axis=tuple(range(1, error.ndim))))
    return jax.lax.stop_gradient(teacher_out)

  with nn.intercept_methods(interceptor):
    model.apply(params, inputs, mutable=["intermediates"])
  return jnp.stack(errors)


@REGISTRY.register("linearize")
def linearize(config, dataset, mesh) -> Experiment:
  """LoLCATs' stages on token windows [B, T + 1] (see the module docstring)."""
  options = linearize_options(config)
  stage = options["stage"]
  model, eval_model = build_models(config, dataset.info)
  feature_maps = feature_map_names(field(config, "model"))
  if stage == "transfer" and not feature_maps:
    raise ConfigError("config.linearize.stage='transfer' trains the feature maps: config.model "
                      "needs attention='sliding_window', or 'linear' with a learned feature_map "
                      "(e.g. 'hedgehog')")
  source_config, source_params = load_source(options["from_workdir"])
  teacher_model = source_config["model"]
  teacher_kind = {name: teacher_model.get(name, getattr(attention.MultiHeadAttention, name))
                  for name in KIND_FIELDS}
  loss_fn, info = choose_loss(config, "lm")
  example_outputs, adapter = ADAPTERS[info.kind]
  hyper = loss_options(config, loss_fn, *example_outputs(dataset.info["vocab_size"]),
                       jnp.zeros(1, jnp.int32))
  loss_dtype = dtype_of(config, "loss.dtype")
  alpha = float(options["lora_alpha"])
  example = dataset.train_batch(0)["tokens"][:1, :-1]

  def init_params(rng):
    model_rng, lora_rng = jax.random.split(rng)
    params = overlay(model.init(model_rng, example), source_params)
    adapters = (init_lora(lora_rng, params, rank=options["lora_rank"])
                if stage == "lora" else {})
    return {"model": params, "lora": adapters}

  def merged(params):
    return merge_lora(params["model"], params["lora"], alpha=alpha)

  trainable = lambda params: trainable_mask(
      params, stage=stage, feature_maps=feature_maps,
      train_feature_maps=options["train_feature_maps"])
  shapes = jax.eval_shape(init_params, jax.random.key(0))
  sizes = jax.tree.map(lambda leaf: leaf.size, shapes)
  counts = {"parameters": float(sum(jax.tree.leaves(sizes))),
            "trainable_parameters": float(sum(
                size for size, keep in zip(jax.tree.leaves(sizes), jax.tree.leaves(trainable(shapes)))
                if keep))}

  def constants():
    return {key: jnp.float32(value) for key, value in counts.items()}

  def weighted_mean(values, weight):
    return jnp.sum(weight * values) / jnp.sum(weight)

  def transfer_loss(params, extra, batch, rng):
    errors = transfer_errors(model, merged(params), batch["tokens"][:, :-1], teacher_kind)
    values = jnp.mean(errors, axis=0)
    step_metrics = {f"transfer_mse_l{i}": error for i, error in enumerate(errors)} | constants()
    return weighted_mean(values, batch["weight"]), ({"loss": values, **step_metrics}, extra)

  def next_token_loss(params, extra, batch, rng):
    inputs, targets = batch["tokens"][:, :-1], batch["tokens"][:, 1:]
    values, per_token, state = adapter(model, merged(params), inputs, targets, loss_fn, hyper,
                                       loss_dtype)
    step_metrics = {key: jnp.mean(value, axis=-1) for key, value in per_token.items()}
    step_metrics["attention_rms"] = attention_rms(state, batch["weight"])
    step_metrics.update(constants())
    values = jnp.mean(values, axis=-1)
    return weighted_mean(values, batch["weight"]), ({"loss": values, **step_metrics}, extra)

  def predict(params, extra, batch, *, sown=()):
    inputs, targets = batch["tokens"][:, :-1], batch["tokens"][:, 1:]
    logits, state = sowing(eval_model, sown).apply(merged(params), inputs,
                                                   mutable=["intermediates"])
    logits = logits.astype(loss_dtype)
    return {"logits": logits, "targets": targets,
            "loss": jnp.mean(losses.softmax_cross_entropy(logits, targets), axis=-1),
            "sown": sown_values(state, sown)}

  return Experiment(init_params=init_params, init_extra=lambda params: {},
                    loss=transfer_loss if stage == "transfer" else next_token_loss,
                    predict=predict, trainable=trainable)
