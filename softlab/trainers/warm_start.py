"""Warm starts: a run's parameters initialized from another run's workdir.

`config.train.init_from = "<workdir>"` (post-training, e.g. UniAttn from a
trained baseline LM): the newest checkpoint of that workdir gives every
parameter the new model shares with it (same path, same shape); parameters the
new model adds keep their initialization (UniAttn's compensation starts at 0),
and trained ones it lacks are dropped (the reusing blocks' query / key
projections). Optimizer state and step start afresh. `config.train.init_fresh`
= parameter path prefixes ("attention/query") that keep their fresh
initialization all the same (a second training stage that restarts only part
of a trained model); `config.train.trainable` = path prefixes of the only
parameters that train (`prefix_mask`; the loop freezes the others).
"""

import os
import sys

import jax
import numpy as np
from flax import traverse_util

from softlab.experiment import ConfigError
from softlab.trainers.checkpoints import Checkpoints


def trained_params(workdir: str, *, field: str = "train.init_from"):
  """The parameters of the newest checkpoint in `workdir` (a softlab run) that verifies
  (see `checkpoints.Checkpoints.restore_newest`), on the host.

  Raises:
    ConfigError: naming config.<field>, when `workdir` has no such checkpoint.
  """
  missing = ConfigError(f"config.{field}={workdir!r} has no checkpoint (expected a softlab"
                        " run's workdir with checkpoints/)")
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    raise missing
  restored = Checkpoints(workdir).restore_newest(
      report=lambda line: print(line, file=sys.stderr))
  if restored is None:
    raise missing
  return jax.tree.map(np.asarray, restored[0]["params"])


def prefix_mask(params, prefixes, *, field: str):
  """A tree of bools like `params`: True where a parameter's path (its keys joined by "/",
  e.g. "params/attention/query/kernel" in a linen model) equals a prefix in `prefixes` or
  lies under one.

  Raises:
    ConfigError: naming config.<field>, for a prefix that matches no parameter (the paths'
      first two levels listed).
  """
  flat = traverse_util.flatten_dict(params)
  paths = {key: "/".join(str(part) for part in key) for key in flat}
  under = lambda path, prefix: path == prefix or path.startswith(prefix.rstrip("/") + "/")
  for prefix in prefixes:
    if not any(under(path, prefix) for path in paths.values()):
      tops = sorted({"/".join(str(part) for part in key[:2]) for key in flat})
      raise ConfigError(f"config.{field}: {prefix!r} matches no parameter; the parameters are"
                        f" under {', '.join(tops)}")
  return traverse_util.unflatten_dict(
      {key: any(under(path, prefix) for prefix in prefixes) for key, path in paths.items()})


def merge(fresh, trained, *, field: str = "train.init_from", keep_fresh=None):
  """`fresh` with every leaf that `trained` has at the same path and shape replaced by it,
  except where the bool tree `keep_fresh` (like `fresh`, e.g. from `prefix_mask`) is True.

  Raises:
    ConfigError: naming config.<field>: a shared path with another shape, or no
      shared parameter at all.
  """
  flat_fresh = traverse_util.flatten_dict(fresh)
  flat_trained = traverse_util.flatten_dict(trained)
  shared = [path for path in flat_fresh if path in flat_trained]
  for path in shared:
    if np.shape(flat_fresh[path]) != np.shape(flat_trained[path]):
      raise ConfigError(
          f"config.{field}: parameter {'/'.join(path)} has shape"
          f" {np.shape(flat_trained[path])} there but {np.shape(flat_fresh[path])} in this model")
  if not shared:
    raise ConfigError(f"config.{field}: the checkpoint shares no parameter with this model")
  flat_keep = traverse_util.flatten_dict(keep_fresh) if keep_fresh is not None else {}
  merged = {path: (flat_trained[path].astype(flat_fresh[path].dtype)
                   if path in flat_trained and not flat_keep.get(path, False) else value)
            for path, value in flat_fresh.items()}
  return traverse_util.unflatten_dict(merged)
