"""The model registry and the shared builder."""

from collections.abc import Callable, Mapping
from typing import Any

from softlab.registry import Registry

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


reject_unknown = REGISTRY.reject_unknown
