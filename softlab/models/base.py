"""The model registry and the shared builder."""

from collections.abc import Mapping
from typing import Any

from softlab.registry import Registry

REGISTRY = Registry("model")


def build(config, info: Mapping[str, Any], *, dtype):
  """The model named by `config.name`, sized by the rest of `config` and `info`."""
  builder, options = REGISTRY.from_config(config)
  return builder(options, info, dtype=dtype)


reject_unknown = REGISTRY.reject_unknown
