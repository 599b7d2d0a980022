"""The metric trainer: every margin loss by name, sharded centers, loss state, learnable bias."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from softlab import losses
from softlab.config import load_config, override
from softlab.trainers import ConfigError, kinds, loop

TINY = {"train.steps": 2, "train.batch_size": 16, "train.eval_batch_size": 64,
        "train.num_devices": 1, "data.num_identities": 16, "data.heldout_identities": 4,
        "data.per_identity": 2, "data.heldout_per_identity": 2, "data.closed_per_identity": 1,
        "data.dim": 4, "data.nuisance_dim": 4, "model.backbone.hidden": (8,),
        "model.embedding_dim": 8}
# Model fields a loss needs besides the base config's.
MODEL_FOR = {"subcenter_arcface": {"model.subcenters": 3},
             "cr_fiqa": {"model.quality_head": True}}
MARGIN_LOSSES = [n for n in losses.names() if losses.info(n).kind == "margin"]


def config_for(name, **updates):
  config = override(load_config("configs/metric/arcface.py"), {"loss.name": name})
  return override(config, {**TINY, **MODEL_FOR.get(name, {}), **updates})


def two_steps(config):
  """(run, states after 0, 1 and 2 steps, the two steps' losses)."""
  run = loop.setup(config)
  states, step_losses = [loop.init_state(run)], []
  step = jax.jit(lambda state, batch: loop.train_step(run, state, batch, with_metrics=False))
  for i in range(2):
    state, out = step(states[-1], loop.shard(run.dataset.train_batch(i), run.mesh))
    states.append(state)
    step_losses.append(float(out["loss"]))
  return run, states, step_losses


def test_every_margin_loss_is_fed_by_the_metric_trainer():
  assert "metric" in {t for n in MARGIN_LOSSES for t in kinds.trainers_for(losses.info(n))}
  assert all(kinds.trainers_for(losses.info(n)) == ("metric",) for n in MARGIN_LOSSES)


@pytest.mark.slow  # about 3 s a loss; fast siblings: the adaface, sphereface2, elasticface tests
def test_every_margin_loss_trains_two_steps_by_name():
  """Each loss's experiment from the same config with only loss.name changed (and the
  model fields it needs), its init and two optimizer steps in one compilation."""
  runs = {name: loop.setup(config_for(name)) for name in MARGIN_LOSSES}
  batches = {name: [run.dataset.train_batch(i) for i in range(2)] for name, run in runs.items()}

  def train_all(batches):
    results = {}
    for name, run in runs.items():
      params = run.experiment.init_params(jax.random.key(0))
      state = {"step": jnp.zeros((), jnp.int32), "params": params,
               "opt_state": run.tx.init(params), "extra": run.experiment.init_extra(params)}
      step_losses = []
      for batch in batches[name]:
        state, out = loop.train_step(run, state, batch, with_metrics=False)
        step_losses.append(out["loss"])
      results[name] = (jnp.stack(step_losses), params["model"]["params"]["centers"],
                       state["params"]["model"]["params"]["centers"])
    return results

  for name, (step_losses, before, after) in jax.jit(train_all)(batches).items():
    assert np.all(np.isfinite(step_losses)), name
    assert not np.allclose(before, after), name


@pytest.mark.slow  # 15 s; fast sibling: tests/losses/test_margin.py's sharded partial_fc
def test_partial_fc_centers_sharded_over_eight_devices_equal_one_device():
  results = []
  for devices in (1, 8):
    config = config_for("partial_fc", **{"train.num_devices": devices,
                                         "loss.sample_rate": 1.0})
    run, states, step_losses = two_steps(config)
    assert run.mesh.size == devices
    results.append((step_losses, states[-1]["params"]["model"]["params"]["centers"]))
  np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-5)
  np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-4, atol=1e-6)


@pytest.mark.slow  # 10 s; the loss-level identity is tested in tests/losses/test_margin.py
def test_partial_fc_equals_its_margin_loss_at_sample_rate_one():
  full = two_steps(config_for("arcface"))[2]
  sampled = two_steps(config_for("partial_fc", **{"loss.sample_rate": 1.0}))[2]
  np.testing.assert_allclose(full, sampled, rtol=1e-5)


def test_adaface_keeps_running_norm_statistics_in_the_state():
  run, states, _ = two_steps(config_for("adaface"))
  batch = run.dataset.train_batch(0)
  model = run.experiment
  out = jax.jit(lambda p: model.predict(p, states[0]["extra"],
                                        loop.shard(batch, run.mesh)))(states[0]["params"])
  norms = np.clip(np.asarray(out["norms"], np.float64), 1e-3, 100)
  state = states[1]["extra"]["loss_state"]
  np.testing.assert_allclose(state["norm_mean"], 0.99 * 20 + 0.01 * norms.mean(), rtol=1e-5)
  np.testing.assert_allclose(state["norm_std"], 0.99 * 100 + 0.01 * norms.std(ddof=1),
                             rtol=1e-5)


def test_sphereface2_bias_starts_at_its_init_and_learns():
  _, states, _ = two_steps(config_for("sphereface2", **{"loss.r": 20.0}))
  start = losses.sphereface2_bias_init(16, r=20.0)
  np.testing.assert_allclose(states[0]["params"]["loss"]["params"]["b"], start, rtol=1e-6)
  assert states[2]["params"]["loss"]["params"]["b"] != pytest.approx(start)


def test_the_key_is_new_every_step():
  run = loop.setup(config_for("elasticface", **{"loss.sigma": 0.3}))
  state = loop.init_state(run)
  batch = loop.shard(run.dataset.train_batch(0), run.mesh)
  loss = jax.jit(lambda rng: run.experiment.loss(state["params"], state["extra"], batch, rng)[0])
  a, b, again = loss(jax.random.key(1)), loss(jax.random.key(2)), loss(jax.random.key(1))
  assert a != b and a == again


@pytest.mark.parametrize("updates, message", [
    ({"loss.name": "cr_fiqa"}, r"config.model.quality_head: cr_fiqa trains a quality head"),
    ({"loss.name": "arcface", "model.subcenters": 3}, r"config.loss: cos must be \[N, C\]"),
    ({"loss.name": "partial_fc", "data.num_identities": 12, "train.num_devices": 8},
     "12 classes do not split over 8 devices"),
    ({"loss.name": "arcface", "loss.key": 1}, "unknown field"),
    ({"loss.name": "partial_fc", "loss.margin_loss": "adaface"},
     "config.loss: margin_loss 'adaface' cannot run inside Partial FC"),
    ({"loss.name": "unicom", "loss.margin_loss": "cr_fiqa"},
     "config.model.quality_head: unicom trains a quality head"),
    ({"loss.name": "softmax_cross_entropy"}, "the metric trainer takes margin losses"),
])
def test_bad_metric_configs_are_one_line_errors(updates, message):
  config = override(load_config("configs/metric/arcface.py"), {**TINY, **updates})
  with pytest.raises(ConfigError, match=message):
    loop.setup(config)


def test_predict_gives_unit_embeddings_and_class_cosines():
  run = loop.setup(config_for("subcenter_arcface", **{"model.backbone.hidden": (32,)}))
  state = loop.init_state(run)
  batch = loop.shard(run.dataset.eval_splits["closed"][0], run.mesh)
  out = jax.jit(lambda p: run.experiment.predict(p, state["extra"], batch))(state["params"])
  np.testing.assert_allclose(jnp.linalg.norm(out["embeddings"], axis=1), 1, rtol=1e-5)
  assert out["logits"].shape == (16, 16)
