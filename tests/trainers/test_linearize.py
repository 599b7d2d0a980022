"""LoLCATs' linearizing stages: attention transfer, LoRA, freezing, runs from a trained workdir."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax

from softlab import models, optim
from softlab.config import load_config, override
from softlab.models.lora import count, init_lora, merge_lora
from softlab.trainers import ConfigError, loop
from softlab.trainers.linearize import (feature_map_names, load_source, trainable_mask,
                                       transfer_errors)
from tests.fast_jit import jit

TINY = {"model.d_model": 16, "model.num_layers": 2, "model.num_heads": 2, "data.seq_len": 16,
        "data.eval_lengths": (16,), "data.eval_windows": 2, "train.batch_size": 4,
        "train.eval_batch_size": 4, "train.log_every": 1, "optimizer.warmup_steps": 0,
        "optimizer.total_steps": 2}
SOFTMAX_KIND = {"attention": "dot_product", "feature_map": "elu+1", "feature_map_kwargs": None,
                "window": 64}
INFO = {"vocab_size": 11}


def tiny_model(**attention):
  options = {"name": "transformer", "d_model": 16, "num_layers": 2, "num_heads": 2, **attention}
  return models.build(options, INFO, dtype=jnp.float32)


def tiny_config(**updates):
  return override(load_config("configs/lm/softmax.py"), {**TINY, **updates})


def linearize_config(from_workdir, stage, attention="linear", **options):
  return override(tiny_config(), {
      "trainer": "linearize", "model.attention": attention, "model.feature_map": "hedgehog",
      "train.steps": 2, "linearize": dict(from_workdir=from_workdir, stage=stage, **options)})


@pytest.fixture(scope="module")
def trained_workdir(tmp_path_factory):
  """A softmax LM trained for one step: the teacher and starting point."""
  workdir = str(tmp_path_factory.mktemp("teacher"))
  loop.train(tiny_config(**{"train.steps": 1, "optimizer.total_steps": 1}), workdir,
             show_progress=False)
  return workdir


def test_transfer_loss_is_zero_when_the_student_computes_the_teachers_attention():
  tokens = jax.random.randint(jax.random.key(0), (3, 8), 0, INFO["vocab_size"])
  softmax, linear = tiny_model(), tiny_model(attention="linear", feature_map="hedgehog")
  window = tiny_model(attention="sliding_window", feature_map="hedgehog", window=8)  # >= T

  @jit
  def errors():
    params = window.init(jax.random.key(1), tokens)  # softmax's + hedgehog W + window factor
    return (transfer_errors(softmax, params, tokens, SOFTMAX_KIND),
            transfer_errors(window, params, tokens, SOFTMAX_KIND),
            transfer_errors(linear, params, tokens, SOFTMAX_KIND))

  itself, full_window, linearized = errors()
  assert itself.shape == (2, 3)  # [layers, B]
  np.testing.assert_array_equal(itself, 0)
  np.testing.assert_allclose(full_window, 0, atol=1e-12)
  assert np.all(linearized > 1e-6)


def test_transfer_error_is_taken_before_the_output_projection():
  """LoLCATs' released code compares the heads' outputs before o_proj: scaling a layer's
  out kernel leaves that layer's error unchanged (after o_proj it would grow 9-fold)."""
  tokens = jax.random.randint(jax.random.key(0), (2, 8), 0, INFO["vocab_size"])
  linear = tiny_model(attention="linear", feature_map="hedgehog")

  @jit
  def errors():
    params = linear.init(jax.random.key(1), tokens)
    scaled = jax.tree_util.tree_map_with_path(
        lambda path, x: 3 * x if "block0" in jax.tree_util.keystr(path)
        and "'out'" in jax.tree_util.keystr(path) else x, params)
    return (transfer_errors(linear, params, tokens, SOFTMAX_KIND),
            transfer_errors(linear, scaled, tokens, SOFTMAX_KIND))

  base, scaled = errors()
  assert np.all(base[0] > 1e-6)
  np.testing.assert_allclose(scaled[0], base[0], rtol=1e-5)


def test_transfer_trains_the_window_factors_with_the_feature_maps():
  """The hybrid's transfer error has a gradient in each layer's window factor; attention
  transfer trains them with the feature maps, LoRA only with train_feature_maps (the released
  qkvo LoRA configs freeze them, the fqkvo ones keep them trainable)."""
  tokens = jax.random.randint(jax.random.key(0), (2, 8), 0, INFO["vocab_size"])
  window = tiny_model(attention="sliding_window", feature_map="hedgehog", window=3)

  @jit
  def factor_grads():
    params = window.init(jax.random.key(1), tokens)
    loss = lambda p: jnp.mean(transfer_errors(window, p, tokens, SOFTMAX_KIND))
    grads = jax.grad(loss)(params)["params"]
    return [grads[f"block{i}"]["attention"]["window_factor"] for i in range(2)]

  for grad in factor_grads():
    assert grad.shape == (2,) and np.all(np.abs(grad) > 1e-8)
  names = feature_map_names({"attention": "sliding_window", "feature_map": "hedgehog"})
  assert names == {"hedgehog_weight", "window_factor"}
  assert feature_map_names({"attention": "linear", "feature_map": "hedgehog"}) == {"hedgehog_weight"}
  params = {"model": {"w": jnp.ones(3), "window_factor": jnp.ones(2)}, "lora": {"a": jnp.ones(2)}}
  mask = lambda stage, train: jax.tree.leaves(trainable_mask(
      params, stage=stage, feature_maps=names, train_feature_maps=train))
  # leaves in key order: lora.a, model.w, model.window_factor
  assert mask("transfer", False) == [False, False, True]
  assert mask("lora", False) == [True, False, False]
  assert mask("lora", True) == [True, False, True]


def test_lora_starts_as_the_base_model_and_merges_as_w_plus_scaled_ab():
  tokens = jax.random.randint(jax.random.key(0), (2, 8), 0, INFO["vocab_size"])
  model = tiny_model()

  params = jit(model.init)(jax.random.key(1), tokens)  # an input below, not recomputed

  @jit
  def run(params):
    adapters = init_lora(jax.random.key(2), params, rank=3)
    moved = jax.tree.map(lambda x: x + 0.1, adapters)  # B != 0
    start = merge_lora(params, adapters, alpha=6.0)
    return (params, adapters, start, model.apply(params, tokens), model.apply(start, tokens),
            merge_lora(params, moved, alpha=6.0), moved)

  params, adapters, start, base, at_init, merged, moved = run(params)
  # B = 0: the merged weights are the base weights bit for bit; the logits agree to
  # rounding (XLA may fuse W + AB into the matmul and order its sums differently).
  jax.tree.map(np.testing.assert_array_equal, start, params)
  np.testing.assert_allclose(at_init, base, rtol=1e-6, atol=1e-6)
  assert sorted(adapters) == sorted(f"params/block{i}/attention/{name}/kernel" for i in range(2)
                                    for name in ("query", "key", "value", "out"))
  assert adapters["params/block0/attention/out/kernel"]["a"].shape == (16, 3)  # [N * D, r]
  assert count(adapters) == 2 * 4 * (16 * 3 + 3 * 16)
  for path, module in (("params/block1/attention/query/kernel", "query"),
                       ("params/block0/attention/out/kernel", "out")):
    w = np.asarray(params["params"][path.split("/")[1]]["attention"][module]["kernel"], np.float64)
    a, b = (np.asarray(moved[path][k], np.float64) for k in ("a", "b"))
    expected = w + (6.0 / 3) * (a @ b).reshape(w.shape)
    got = merged["params"][path.split("/")[1]]["attention"][module]["kernel"]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(merged["params"]["block0"]["Dense_0"]["kernel"],
                                params["params"]["block0"]["Dense_0"]["kernel"])


def changed_leaves(before, after):
  """Paths (keystr) of the leaves that differ."""
  flat = lambda tree: {jax.tree_util.keystr(p): np.asarray(x)
                       for p, x in jax.tree_util.tree_leaves_with_path(tree)}
  before, after = flat(before), flat(after)
  return {k for k in before if not np.array_equal(before[k], after[k])}


@pytest.mark.slow  # 2 compiled train steps; test_freeze_gives_frozen_parameters_no_update_and_no_state is fast
@pytest.mark.parametrize("stage, kind, expected", [
    ("transfer", "linear", lambda k: k.endswith("['hedgehog_weight']")),
    ("lora", "linear", lambda k: k.startswith("['lora']")),
    ("transfer", "sliding_window",
     lambda k: k.endswith("['hedgehog_weight']") or k.endswith("['window_factor']")),
    ("lora", "sliding_window", lambda k: k.startswith("['lora']")),
])
def test_a_step_changes_only_the_stages_parameters(trained_workdir, stage, kind, expected):
  run = loop.setup(linearize_config(trained_workdir, stage, attention=kind, lora_rank=2))
  state = loop.init_state(run)
  before = jax.device_get(state["params"])
  step = jax.jit(lambda s, b: loop.train_step(run, s, b, with_metrics=False))
  after = jax.device_get(step(state, run.dataset.train_batch(0))[0]["params"])
  changed = changed_leaves(before, after)
  every = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(before)}
  assert changed == {k for k in every if expected(k)}
  assert changed  # the stage trains something
  _, teacher = load_source(trained_workdir)  # every teacher parameter, bit-identical
  flat_after = {jax.tree_util.keystr(p): x
                for p, x in jax.tree_util.tree_leaves_with_path(after["model"])}
  for path, leaf in jax.tree_util.tree_leaves_with_path(teacher):
    np.testing.assert_array_equal(flat_after[jax.tree_util.keystr(path)], leaf)


@pytest.mark.slow  # a trained workdir + 2 steps; the transfer loss's tests above are fast
def test_two_step_transfer_run_from_a_trained_workdir(trained_workdir, tmp_path):
  summary = loop.train(linearize_config(trained_workdir, "transfer"), str(tmp_path),
                       show_progress=False)
  assert summary["step"] == 2
  assert summary["train/trainable_parameters"] == 2 * 2 * 8 * 8  # layers x [K, D, D]
  assert 0 < summary["train/transfer_mse_l1"] < 1 and np.isfinite(summary["val_16/loss"])


def test_config_errors_name_the_field(tmp_path):
  with pytest.raises(ConfigError, match="config.linearize: unknown field.*rank.*valid: from_workdir"):
    loop.setup(linearize_config(str(tmp_path), "transfer", rank=2))
  with pytest.raises(ConfigError, match="stage='distill'; valid: transfer, lora, finetune"):
    loop.setup(linearize_config(str(tmp_path), "distill"))
  with pytest.raises(ConfigError, match="transfer' trains the feature maps"):
    loop.setup(linearize_config(str(tmp_path), "transfer", attention="dot_product"))
  with pytest.raises(ConfigError, match="holds no trained run"):
    loop.setup(linearize_config(str(tmp_path), "lora"))


def test_freeze_gives_frozen_parameters_no_update_and_no_state():
  params = {"model": {"w": jnp.ones(3), "hedgehog_weight": jnp.ones(2)}, "lora": {"a": jnp.ones(2)}}
  mask = lambda p: trainable_mask(p, stage="transfer", feature_maps={"hedgehog_weight"},
                                  train_feature_maps=False)
  # leaves in key order: lora.a, model.hedgehog_weight, model.w
  assert jax.tree.leaves(mask(params)) == [False, True, False]
  tx = optim.freeze(optim.make_optimizer({"name": "adamw", "lr": 0.1, "weight_decay": 0.5}), mask)

  @jit
  def step():
    state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, state, params, grad_fn=lambda p, _: grads)
    return optax.apply_updates(params, updates), state

  new, state = step()
  np.testing.assert_array_equal(new["model"]["w"], params["model"]["w"])
  np.testing.assert_array_equal(new["lora"]["a"], params["lora"]["a"])
  assert np.all(new["model"]["hedgehog_weight"] < 1)
  assert count(state) < 2 * count(params)  # Adam's two moments for hedgehog_weight only
  lora_mask = trainable_mask(params, stage="lora", feature_maps={"hedgehog_weight"},
                             train_feature_maps=True)
  assert jax.tree.leaves(lora_mask) == [True, True, False]
  assert jax.tree.leaves(trainable_mask(params, stage="finetune", feature_maps=set(),
                                        train_feature_maps=False)) == [True, True, True]
