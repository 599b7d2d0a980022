"""The model registry and the shared builder."""

from collections.abc import Mapping
from typing import Any

from softlab.registry import Registry

REGISTRY = Registry("model")


def build(config, info: Mapping[str, Any], *, dtype):
  """The model named by `config.name`, sized by the rest of `config` and `info`."""
  options = dict(config)
  name = options.pop("name")
  return REGISTRY.get(name)(options, info, dtype=dtype)


def reject_unknown(options: dict, model: str) -> None:
  """Raises if a model's options hold fields it does not know."""
  if options:
    raise ValueError(f"unknown field(s) for model {model!r}: {', '.join(sorted(options))}")
