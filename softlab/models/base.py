"""The model registry and the shared builder."""

from collections.abc import Callable, Mapping
from typing import Any

from softlab.registry import Registry
from softlab.validation import FieldError

REGISTRY = Registry("model")
# Model name -> (its linen module, the dataset's info) -> its NNX version, driven
# like a linen module (softlab.models.nnx registers them).
NNX_VERSIONS: dict[str, Callable[[Any, Mapping[str, Any]], Any]] = {}


APIS = ("linen", "nnx")


def build(config, info: Mapping[str, Any], *, dtype):
  """The model named by `config.name`, sized by the rest of `config` and `info`.

  `config.api` chooses Flax's API: "linen" (default) returns the linen module;
  "nnx" returns its NNX version wrapped in `softlab.models.nnx.Functional`
  (linen's init / apply calling convention, so trainers run either).
  """
  builder, options = REGISTRY.from_config(config)
  name, api = config["name"], options.pop("api", "linen")
  if api not in APIS:
    raise ValueError(f"api {api!r}; valid: {', '.join(APIS)}")
  model = builder(options, info, dtype=dtype)
  if api == "linen":
    return model
  if name not in NNX_VERSIONS:
    raise ValueError(f"api 'nnx': model {name!r} has no NNX version; models with one: "
                     f"{', '.join(sorted(NNX_VERSIONS))}")
  return NNX_VERSIONS[name](model, info)


def check_widths(value, name: str) -> tuple[int, ...]:
  """Layer widths (a sequence of integers >= 1) as a tuple; FieldError naming `name`
  otherwise, before a width-0 layer divides by its fan-in at initialization."""
  widths = tuple(value) if isinstance(value, (list, tuple)) else None
  if widths is None or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
    raise FieldError(name, f" must be layer widths, integers >= 1, got {value!r}")
  return widths


reject_unknown = REGISTRY.reject_unknown
