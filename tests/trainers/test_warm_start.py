"""Partial warm starts: `train.init_fresh` and `train.trainable` (a second training stage that
restarts and trains only part of a trained model)."""

import functools

import jax
import numpy as np
import pytest
from flax import traverse_util

from softlab.config import load_config, override
from softlab.trainers.checkpoints import Checkpoints
from softlab.trainers import ConfigError, loop, warm_start

QUERY_SIDE = ("params/query", "params/attention/query")


def test_prefix_mask_marks_whole_path_components():
  zeros = lambda: np.zeros(2)
  params = {"params": {"query": zeros(), "query_norm": {"scale": zeros()},
                       "attention": {"query": {"kernel": zeros()}, "key": {"kernel": zeros()}}}}
  mask = warm_start.prefix_mask(params, QUERY_SIDE, field="train.trainable")
  assert mask == {"params": {"query": True, "query_norm": {"scale": False},
                             "attention": {"query": {"kernel": True}, "key": {"kernel": False}}}}
  with pytest.raises(ConfigError, match=r"^config.train.trainable: 'params/attn' matches no "
                     r"parameter; the parameters are under params/attention, params/query, "
                     r"params/query_norm$"):
    warm_start.prefix_mask(params, ["params/attn"], field="train.trainable")


def test_merge_keeps_the_fresh_values_it_is_told_to():
  fresh = {"a": np.zeros(2), "b": {"c": np.zeros(3)}}
  trained = {"a": np.ones(2), "b": {"c": np.ones(3)}}
  keep = warm_start.prefix_mask(fresh, ["b"], field="train.init_fresh")
  merged = warm_start.merge(fresh, trained, keep_fresh=keep)
  np.testing.assert_array_equal(merged["a"], np.ones(2))
  np.testing.assert_array_equal(merged["b"]["c"], np.zeros(3))


def tiny(**updates):
  """The max-item set classifier at a size that compiles in seconds."""
  base = {"model.d_model": 8, "train.batch_size": 4, "train.eval_batch_size": 8,
          "data.test_lengths": (5,), "data.test_size": 8, "train.steps": 1}
  return override(load_config("configs/retrieval/max_item.py"), {**base, **updates})


def test_a_second_stage_restarts_and_trains_only_the_query_side(tmp_path):
  run = loop.setup(tiny(**{"train.init_from": str(tmp_path / "base"),
                           "train.init_fresh": QUERY_SIDE, "train.trainable": QUERY_SIDE,
                           "optimizer.name": "sgd", "optimizer.lr": 0.5}))
  trained = {"params": run.experiment.init_params(jax.random.key(1))}  # a first stage's checkpoint
  Checkpoints(str(tmp_path / "base")).save(0, trained, config={})
  start = loop.init_state(run)
  state, _ = jax.jit(functools.partial(loop.train_step, run))(start, loop.batch_source(run)(0))
  flat = lambda tree: traverse_util.flatten_dict(jax.device_get(tree))
  fresh, first = flat(run.experiment.init_params(jax.random.key(0))), flat(trained["params"])
  begin, end = flat(start["params"]), flat(state["params"])
  query_side = {path for path in begin if "/".join(path).startswith(QUERY_SIDE)}
  assert {"/".join(path) for path in query_side} == {"params/query",
                                                      "params/attention/query/kernel"}
  for path in begin:
    np.testing.assert_array_equal(begin[path], (fresh if path in query_side else first)[path])
    assert np.array_equal(end[path], begin[path]) == (path not in query_side), path


def test_partial_warm_start_fields_are_one_line_config_errors():
  with pytest.raises(ConfigError, match=r"^config.train.init_fresh needs config.train.init_from"):
    loop.init_state(loop.setup(tiny(**{"train.init_fresh": QUERY_SIDE})))
  with pytest.raises(ConfigError, match=r"^config.train.trainable must be a list of parameter "
                     r"path prefixes, got the string 'params/query'$"):
    loop.setup(tiny(**{"train.trainable": "params/query"}))
