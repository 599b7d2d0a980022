"""The device mesh, batches split over it, and replicated results back on the host."""

from collections.abc import Mapping

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from softlab.experiment import ConfigError


def make_mesh(num_devices: int | None):
  """A 1-D mesh with a "data" axis over the first `num_devices` devices (all by default)."""
  devices = jax.devices()
  if num_devices:
    if num_devices > len(devices):
      raise ConfigError(f"config.train.num_devices={num_devices}, but only {len(devices)} exist")
    devices = devices[:num_devices]
  # Auto axes: XLA propagates the batch sharding through the model (GSPMD).
  return jax.make_mesh((len(devices),), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices)


def shard(batch: Mapping[str, np.ndarray], mesh) -> dict[str, jax.Array]:
  """The global host batch as arrays split over the mesh's "data" axis.

  The batch is padded with zero-weight examples to a multiple of the number of
  devices. Each process only transfers the rows its own devices hold, so on
  many hosts every process feeds its shard of the same global batch.
  """
  size = len(batch["weight"])
  padded = -(-size // mesh.size) * mesh.size
  sharded = {}
  for key, value in batch.items():
    value = np.asarray(value)
    if padded != size:
      value = np.concatenate([value, np.zeros((padded - size,) + value.shape[1:], value.dtype)])
    sharding = NamedSharding(mesh, P("data", *([None] * (value.ndim - 1))))
    sharded[key] = jax.make_array_from_callback(value.shape, sharding, lambda index, v=value: v[index])
  return sharded


def to_host(tree):
  """Replicated device scalars as Python floats (works on any process)."""
  return jax.tree.map(lambda x: float(np.asarray(x.addressable_data(0))), tree)
