"""Warm starts: a run's parameters initialized from another run's workdir.

`config.train.init_from = "<workdir>"` (post-training, e.g. UniAttn from a
trained baseline LM): the newest checkpoint of that workdir gives every
parameter the new model shares with it (same path, same shape); parameters the
new model adds keep their initialization (UniAttn's compensation starts at 0),
and trained ones it lacks are dropped (the reusing blocks' query / key
projections). Optimizer state and step start afresh.
"""

import os

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util

from softlab.trainers.base import ConfigError


def trained_params(workdir: str, *, field: str = "train.init_from"):
  """The parameters of the newest checkpoint in `workdir` (a softlab run), on the host.

  Raises:
    ConfigError: naming config.<field>, when `workdir` has no checkpoint.
  """
  directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
  missing = ConfigError(f"config.{field}={workdir!r} has no checkpoint (expected a softlab"
                        " run's workdir with checkpoints/)")
  if not os.path.isdir(directory):
    raise missing
  with ocp.CheckpointManager(directory) as manager:
    step = manager.latest_step()
    if step is None:
      raise missing
    state = manager.restore(step, args=ocp.args.StandardRestore())
  return jax.tree.map(np.asarray, state["params"])


def merge(fresh, trained, *, field: str = "train.init_from"):
  """`fresh` with every leaf that `trained` has at the same path and shape replaced by it.

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
  merged = {path: (flat_trained[path].astype(flat_fresh[path].dtype) if path in flat_trained
                   else value) for path, value in flat_fresh.items()}
  return traverse_util.unflatten_dict(merged)
