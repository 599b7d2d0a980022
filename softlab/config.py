"""Loading experiment config files and applying overrides, outside of absl flags.

A config file is a Python file with `get_config()` (or `get_config(arg)`,
selected as `path:arg`, as big_vision does) returning an
`ml_collections.ConfigDict`. A config may derive from a sibling:
`config = load_config(pathlib.Path(__file__).with_name("softmax.py"))`.
"""

import hashlib
import importlib.util
import os
from collections.abc import Mapping
from typing import Any

import ml_collections


def load_config(spec: str | os.PathLike) -> ml_collections.ConfigDict:
  """The ConfigDict of `path` or `path:arg`."""
  path, _, arg = str(spec).partition(":")
  if not os.path.isfile(path):
    raise ValueError(f"config file not found: {path}")
  name = "softlab_config_" + hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:12]
  module_spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ValueError(f"config file {path} defines no get_config()")
  return module.get_config(arg) if arg else module.get_config()


def override(config: ml_collections.ConfigDict, updates: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """A copy of `config` with dotted-path updates ({"loss.name": "stablemax_cross_entropy"}).

  New fields may be added to existing sections (a loss hyperparameter the base
  config did not set); a path through a missing section is an error.
  """
  config = ml_collections.ConfigDict(config.to_dict())
  for path, value in updates.items():
    *sections, key = path.split(".")
    node = config
    for section in sections:
      if section not in node:
        raise ValueError(f"override {path}: config has no section {section!r}")
      node = node[section]
    with node.ignore_type():
      node[key] = value
  return config
