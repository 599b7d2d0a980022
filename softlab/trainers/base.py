"""The trainer registry and the helpers trainers read their config with; the
Experiment a trainer hands the generic loop and ConfigError live in
softlab.experiment, below the trainers and the evaluators."""

import contextlib
import functools
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from softlab import models
from softlab.config import override
from softlab.experiment import ConfigError
from softlab.registry import Registry
from softlab.validation import FieldError

REGISTRY = Registry("trainer")


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
