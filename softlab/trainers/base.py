"""What an experiment trainer hands the generic loop, the trainer registry, and
the one-line errors a user's config can cause."""

import contextlib
import dataclasses
import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from softlab import models
from softlab.config import override
from softlab.registry import Registry
from softlab.validation import FieldError

REGISTRY = Registry("trainer")

Params = Any
Extra = Any  # per-run state beside the parameters (e.g. a stateful loss's state)
Metrics = dict[str, jax.Array]


class ConfigError(ValueError):
  """A mistake in the user's config: printed as one line, no traceback."""


@dataclasses.dataclass(frozen=True)
class Experiment:
  """How batches become a loss and predictions; everything else is the loop's job.

  Training metric values are either per-example arrays [B] or scalars that are
  already averages over the batch's real examples; the loop reports both as
  weighted sums over the real examples divided by their total weight
  (softlab.evaluators.weighted_sums), as evaluators do.

  Attributes:
    init_params: rng -> parameters.
    init_extra: parameters -> extra state (an empty dict when there is none).
    loss: (params, extra, batch, rng) -> (scalar loss, (metrics, new extra)).
    predict: (params, extra, batch, *, sown=()) -> the evaluation model's outputs
      on a batch, for evaluators: "loss" (per-example evaluation loss) and, as
      the trainer has them, "logits" and "labels" / "targets",
      "image_embeddings", "text_embeddings", "class_embeddings"; "sown" maps
      each name in `sown` to the values the model sowed under it, in layer order.
    describe_extra: extra -> scalar metrics logged at eval time (may be None).
    param_specs: params -> a like-structured tree of PartitionSpecs over the
      mesh for parameters split across devices (e.g. class centers over
      "data"), P() for the replicated ones; the optimizer state of a parameter
      is split like it. None: everything replicated.
    trainable: params -> a tree of bools like params (True = trained); None
      trains everything. The loop gives frozen parameters no update and no
      optimizer state, so they stay bit-identical.
  """

  init_params: Callable[[jax.Array], Params]
  init_extra: Callable[[Params], Extra]
  loss: Callable[[Params, Extra, Mapping[str, jax.Array], jax.Array], tuple[jax.Array, tuple[Metrics, Extra]]]
  predict: Callable[..., dict[str, Any]]
  describe_extra: Callable[[Extra], Metrics] | None = None
  param_specs: Callable[[Params], Any] | None = None
  trainable: Callable[[Params], Any] | None = None


def sown_values(state, names) -> dict[str, list]:
  """name -> every value sown under `name` in `state["intermediates"]`, in layer order."""
  found = {name: [] for name in names}
  for path, leaf in jax.tree_util.tree_leaves_with_path(state.get("intermediates", {})):
    for key in path:
      if getattr(key, "key", None) in found:
        found[key.key].append(leaf)
        break
  missing = [name for name, values in found.items() if not values]
  if missing:
    raise ConfigError(f"config.model sows no {', '.join(missing)}, which an evaluator in "
                      "config.evals or the trainer needs")
  return found


def sowing(model, names):
  """`model`, cloned to sow its attention weights when "attention_weights" is in `names`
  (transformers sow them only on request: they are computed densely)."""
  if "attention_weights" in names and hasattr(model, "attention_options"):
    return model.clone(attention_options={**model.attention_options, "sow_weights": True})
  return model


def field(config, path: str):
  """config.<path>, or a ConfigError naming the missing field."""
  node = config
  for part in path.split("."):
    if part not in node:
      raise ConfigError(f"config.{path} is missing")
    node = node[part]
  return node


def options(section, path: str, *, drop: tuple[str, ...] = ()) -> dict:
  """A config section as a plain dict without the fields in `drop`."""
  return {k: v for k, v in dict(field(section, path) if path else section).items() if k not in drop}


def lookup(getter: Callable[[str], Any], name: str, path: str):
  """getter(name) with a registry's ValueError turned into a ConfigError on `path`."""
  try:
    return getter(name)
  except ValueError as error:
    raise ConfigError(f"config.{path}: {error}") from None


@contextlib.contextmanager
def building(path: str):
  """Turns a builder's ValueError (a bad option) into a ConfigError on `path`.

  A FieldError names its field in full: "config.data.p must be ..." (a field
  already named from the section, like optim's "optimizer.lr", is not named
  twice); another ValueError is "config.<path>: <message>".
  """
  try:
    yield
  except ConfigError:
    raise
  except FieldError as error:
    within = error if error.field.startswith(f"{path}.") else error.within(path)
    raise ConfigError(f"config.{within}") from None
  except ValueError as error:
    raise ConfigError(f"config.{path}: {error}") from None


def loss_options(config, loss_fn, *example, call=None, supplied=()) -> dict:
  """config.loss's hyperparameters (all but name and dtype), checked up front.

  The valid fields are loss_fn's keyword-only parameters, except those the
  trainer supplies itself (`supplied`). Unknown fields and
  bad values are ConfigErrors naming config.loss, found by tracing
  `(call or loss_fn)(*example, **hyperparameters)` on a tiny example (shapes
  only: nothing is compiled or run) instead of deep inside the first compiled
  step.
  """
  hyper = options(config, "loss", drop=("name", "dtype"))
  parameters = inspect.signature(loss_fn).parameters
  valid = [p for p, spec in parameters.items()
           if spec.kind is inspect.Parameter.KEYWORD_ONLY
           and p not in ("where", "dtype", *supplied)]
  unknown = sorted(set(hyper) - set(valid))
  if unknown:
    raise ConfigError(f"config.loss: unknown field(s) {', '.join(unknown)} for "
                      f"{config.loss.name}; valid: {', '.join(valid)}")
  try:
    jax.eval_shape(functools.partial(call or loss_fn, **hyper), *example)
  except (TypeError, ValueError) as error:
    raise ConfigError(f"config.loss: {error}") from None
  return hyper


DTYPES = ("float32", "bfloat16", "float16", "float64")


def dtype_of(config, path: str, default: str = "float32"):
  """The jnp dtype named at config.<path> (default if absent)."""
  section, _, key = path.rpartition(".")
  name = field(config, section).get(key, default)
  if name not in DTYPES:
    raise ConfigError(f"config.{path}: unknown dtype {name!r}; valid: {', '.join(DTYPES)}")
  return jnp.dtype(name)


def integer(config, path: str, default=None, *, minimum: int = 0):
  """The integer at config.<path> (default if absent; None stays None)."""
  section, _, key = path.rpartition(".")
  value = field(config, section).get(key, default) if section else field(config, key)
  if value is None:
    return None
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise ConfigError(f"config.{path} must be an integer >= {minimum}, got {value!r}")
  return value


def build_models(config, info):
  """(training model, evaluation model); the second differs only by config.eval_model."""
  dtype = dtype_of(config, "train.dtype")
  with building("model"):
    model = models.build(field(config, "model"), info, dtype=dtype)
  if "eval_model" not in config:
    return model, model
  with building("eval_model"):
    eval_config = override(config, {f"model.{k}": v for k, v in config.eval_model.items()})
    return model, models.build(eval_config.model, info, dtype=dtype)
