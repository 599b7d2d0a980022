"""Class centers split over 8 simulated devices (tests/conftest.py) for Partial FC.

Each device stores its C / 8 rows of the centers and of their Adam moments; the
loss and every gradient (the inner loss's per-example input, CR-FIQA's quality,
all-gathered) equal those of one device holding all C.
"""

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from test_metric import config_for

from softlab.trainers import loop

CLASSES, DIM, DEVICES = 16, 8, 8


def setup(devices):
  # sample_rate 1 keeps every center: the sampled set is the same on 1 and 8 devices.
  # The inner loss, CR-FIQA, also takes the quality head's per-example predictions.
  return loop.setup(config_for("partial_fc", **{
      "train.num_devices": devices, "loss.sample_rate": 1.0, "loss.margin_loss": "cr_fiqa",
      "model.quality_head": True}))


def row_shapes(array):
  return {shard.data.shape for shard in array.addressable_shards}


def test_each_device_holds_its_slice_of_the_centers_and_matches_one_device():
  runs = {devices: setup(devices) for devices in (1, DEVICES)}
  states = {devices: loop.init_state(run) for devices, run in runs.items()}
  sharded, state = runs[DEVICES], states[DEVICES]
  assert sharded.mesh.size == DEVICES

  centers = state["params"]["model"]["params"]["centers"]
  assert centers.shape == (CLASSES, DIM)
  assert row_shapes(centers) == {(CLASSES // DEVICES, DIM)}
  assert len(centers.addressable_shards) == DEVICES
  moments = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(state["opt_state"])
             if any(getattr(key, "key", None) == "centers" for key in path)]
  assert len(moments) == 2  # Adam's mu and nu
  assert all(row_shapes(moment) == {(CLASSES // DEVICES, DIM)} for moment in moments)
  backbone = state["params"]["model"]["params"]["backbone"]
  assert all(leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(backbone))

  batch = runs[1].dataset.train_batch(0)
  rng = jax.random.key(3)

  def loss_and_grads(run, state):
    sharded_batch = loop.shard(batch, run.mesh)
    return jax.jit(jax.value_and_grad(lambda params, extra, batch: run.experiment.loss(
        params, extra, batch, rng)[0]))(state["params"], state["extra"], sharded_batch)

  results = {devices: loss_and_grads(runs[devices], states[devices]) for devices in runs}
  np.testing.assert_allclose(results[DEVICES][0], results[1][0], rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
               results[DEVICES][1], results[1][1])
  # The loop's step keeps the centers split.
  stepped, _ = loop.step_functions(sharded, state)[False](state, loop.shard(batch, sharded.mesh))
  assert row_shapes(stepped["params"]["model"]["params"]["centers"]) == {(CLASSES // DEVICES, DIM)}


def test_without_centers_in_the_loss_the_state_is_replicated():
  run = loop.setup(config_for("arcface", **{"train.num_devices": DEVICES}))
  shardings = loop.state_shardings(run, jax.eval_shape(lambda: loop.init_state(run)))
  assert all(s == NamedSharding(run.mesh, P()) for s in jax.tree.leaves(shardings))
