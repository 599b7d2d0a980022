"""Loading experiment config files and applying overrides: the one path the
command line (`softlab train`) and studies (`softlab ablate`) share.

A config file is a Python file with `get_config()` (or `get_config(arg)`,
selected as `path:arg`, as big_vision does) returning an
`ml_collections.ConfigDict`. A config may derive from a sibling:
`config = load_config(pathlib.Path(__file__).with_name("softmax.py"))`.
Overrides are dotted paths ({"loss.name": "stablemax_cross_entropy"}); on the
command line `--config.a.b=text`, the text read as the field's current type
(`parse_value`). Which fields a section may hold is checked by whoever builds
it (a registry builder, the loop for `train` and the top level).
"""

import ast
import hashlib
import importlib.util
import inspect
import json
import os
from collections.abc import Mapping
from typing import Any

import ml_collections


def load_config(spec: str | os.PathLike) -> ml_collections.ConfigDict:
  """The ConfigDict of `path` or `path:arg`.

  One-line ValueErrors for a missing file, a file without get_config(), and
  an argument get_config() cannot take (or one it needs and is not given),
  checked on its signature so a TypeError inside it stays a traceback.
  """
  path, _, arg = str(spec).partition(":")
  if not os.path.isfile(path):
    raise ValueError(f"config file not found: {path}")
  name = "softlab_config_" + hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:12]
  module_spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ValueError(f"config file {path} defines no get_config()")
  arguments = (arg,) if arg else ()
  signature = inspect.signature(module.get_config)
  try:
    signature.bind(*arguments)
  except TypeError:
    if not arg:
      problem = f"get_config{signature} needs an argument: write {path}:ARG"
    elif not signature.parameters:
      problem = f"get_config() takes no argument, got :{arg}"
    else:
      problem = f"get_config{signature} cannot be called with the one argument :{arg}"
    raise ValueError(f"config file {path}: {problem}") from None
  return module.get_config(*arguments)


# Sections whose fields belong to the component `name` picks (the optimizers share theirs),
# and the fields such a section keeps when its name switches to another component
# (a model's Flax `api` holds for the next model too).
COMPONENT_SECTIONS = ("data", "model", "loss")
SHARED_FIELDS = ("name", "dtype", "seed", "api")


def override(config: ml_collections.ConfigDict, updates: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """A copy of `config` with dotted-path updates ({"loss.name": "stablemax_cross_entropy"}).

  New fields may be added to existing sections (a loss hyperparameter the base
  config did not set); a path through a missing section is an error, except
  that a new `evals` entry is created (`evals.q.name=quantized`). Setting
  the `name` of data, model or loss to another component drops the old
  component's fields (all but SHARED_FIELDS) first, so `data.name=npz` with
  `data.path=...` builds the npz dataset alone.
  """
  config = ml_collections.ConfigDict(config.to_dict())
  switches = [p.partition(".")[0] for p, v in updates.items()
              if p.partition(".")[0] in COMPONENT_SECTIONS and p.partition(".")[2] == "name"
              and p.partition(".")[0] in config and config[p.partition(".")[0]].get("name") != v]
  for name in switches:
    section = config[name]
    for key in [k for k in section if k not in SHARED_FIELDS]:
      del section[key]
  for path, value in updates.items():
    *sections, key = path.split(".")
    node = config
    for depth, section in enumerate(sections):
      if section not in node:
        if sections[0] != "evals" or depth > 1:
          raise ValueError(f"override {path}: config has no section {section!r}")
        with node.ignore_type():
          node[section] = ml_collections.ConfigDict()
      node = node[section]
    with node.ignore_type():
      node[key] = value
  return config


def parse_value(config: ml_collections.ConfigDict, path: str, text: str) -> Any:
  """The command-line text for config.<path> as a value of the field's current type.

  Numbers, booleans and strings follow the existing field; a new field, a None
  field or a tuple/list/dict is read as a Python literal (plain text if it is
  none). ValueError "flag --config.<path>=<text>: <why>" otherwise.
  """
  node = config
  for part in path.split(".")[:-1]:
    node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
  key = path.rpartition(".")[2]
  current = node.get(key) if isinstance(node, ml_collections.ConfigDict) else None
  try:
    if isinstance(current, bool):
      if text.lower() not in ("true", "false", "1", "0"):
        raise ValueError(f"expected true or false, got {text!r}")
      return text.lower() in ("true", "1")
    if isinstance(current, int):
      return int(text)
    if isinstance(current, float):
      return float(text)
    if isinstance(current, str):
      return text
  except ValueError as error:
    raise ValueError(f"flag --config.{path}={text}: {error}") from None
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def as_json(config) -> dict:
  """`config` as the JSON object config.json holds (keys sorted)."""
  return json.loads(config.to_json_best_effort(sort_keys=True))


def first_difference(old, new, *, ignore=(), prefix="") -> str | None:
  """'config.a.b: old != new' for the first differing field, or None."""
  if isinstance(old, dict) and isinstance(new, dict):
    for key in sorted(set(old) | set(new)):
      path = f"{prefix}{key}"
      if path in ignore:
        continue
      if key not in old or key not in new:
        return f"config.{path} only in the {'new' if key in new else 'old'} config"
      found = first_difference(old[key], new[key], ignore=ignore, prefix=f"{path}.")
      if found:
        return found
    return None
  return None if old == new else f"config.{prefix.rstrip('.')}: {old!r} != {new!r}"
