"""UniAttn superblocks in the decoder LM and the post-training warm start."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fast_jit import jit
from softlab.config import load_config, override
from softlab.models import transformer
from softlab.trainers.checkpoints import Checkpoints
from softlab.trainers import loop, warm_start
from softlab.experiment import ConfigError

TOKENS = jnp.asarray(np.random.default_rng(0).integers(0, 11, (1, 5)))


def decoder(**fields):
  return transformer.DecoderLM(vocab_size=11, d_model=8, num_layers=3, num_heads=2, mlp_ratio=1,
                               positions="rope", tie_embeddings=True,
                               attention_options={"sow_weights": True}, dtype=jnp.float32,
                               **fields)


def run(model, params):
  logits, state = model.apply(params, TOKENS, mutable=["intermediates"])
  weights = [state["intermediates"][f"block{i}"]["attention"]["attention_weights"][0]
             for i in range(3)]
  return logits, weights


def test_superblock_size_1_is_the_baseline_and_reuse_shares_the_first_blocks_weights():
  baseline, one = decoder(), decoder(superblock_size=1, uniattn_compensation=True)
  reuse, compensated = decoder(superblock_size=2), decoder(superblock_size=2,
                                                           uniattn_compensation=True)

  @jit
  def everything(key):
    params = baseline.init(key, TOKENS)
    shared = compensated.init(key, TOKENS)
    shared = warm_start.merge(shared, params)
    moved = jax.tree.map(lambda x: x + 0.1, shared)  # W_c != 0
    return (params, shared, run(baseline, params), run(one, params), run(reuse, shared),
            run(compensated, shared), run(compensated, moved))

  params, shared, base, same, pure, zero_w_c, nonzero_w_c = everything(jax.random.key(0))
  assert (jax.tree.structure(jax.eval_shape(one.init, jax.random.key(0), TOKENS))
          == jax.tree.structure(params))
  np.testing.assert_array_equal(same[0], base[0])
  # block 1 reuses block 0's weights and has no query / key; block 2 starts a new superblock.
  block1 = shared["params"]["block1"]
  assert set(block1["attention"]) == {"value", "out"} and "compensation" in block1
  assert not np.any(block1["compensation"]["kernel"])
  np.testing.assert_array_equal(pure[1][1], pure[1][0])
  assert np.abs(pure[1][2] - pure[1][0]).max() > 1e-3
  assert np.abs(pure[0] - base[0]).max() > 1e-4  # reuse changes the model
  np.testing.assert_array_equal(zero_w_c[0], pure[0])  # compensation at 0 is pure reuse
  assert np.abs(nonzero_w_c[0] - zero_w_c[0]).max() > 1e-4


def test_merge_takes_shared_parameters_and_rejects_other_shapes():
  fresh = {"params": {"a": np.zeros(2), "new": np.ones(3)}}
  merged = warm_start.merge(fresh, {"params": {"a": np.full(2, 5.0), "old": np.ones(4)}})
  assert jax.tree.map(np.ndim, merged) == jax.tree.map(np.ndim, fresh)
  np.testing.assert_array_equal(merged["params"]["a"], [5.0, 5.0])
  np.testing.assert_array_equal(merged["params"]["new"], [1.0, 1.0, 1.0])
  with pytest.raises(ConfigError, match="parameter params/a has shape"):
    warm_start.merge(fresh, {"params": {"a": np.zeros(3)}})
  with pytest.raises(ConfigError, match="shares no parameter"):
    warm_start.merge(fresh, {"params": {"b": np.zeros(2)}})


@pytest.mark.slow
def test_post_training_run_with_superblocks_from_a_config_override(tmp_path):
  small = {"train.steps": 2, "train.log_every": 1, "train.eval_every": 2,
           "train.checkpoint_every": 2, "model.d_model": 16, "model.num_layers": 2,
           "data.seq_len": 16, "data.eval_lengths": (16,), "data.eval_windows": 4,
           "train.batch_size": 4, "train.eval_batch_size": 4}
  baseline = override(load_config("configs/lm/softmax.py"), small)
  trained = loop.init_state(loop.setup(baseline))  # a baseline workdir's checkpoint at step 0
  Checkpoints(str(tmp_path / "base")).save(0, trained, config={})
  uniattn = override(baseline, {"model.superblock_size": 2, "model.uniattn_compensation": True,
                                "train.init_from": str(tmp_path / "base")})
  start = loop.init_state(loop.setup(uniattn))["params"]["params"]
  for name in ("query", "key", "value", "out"):
    np.testing.assert_array_equal(start["block0"]["attention"][name]["kernel"],
                                  trained["params"]["params"]["block0"]["attention"][name]["kernel"])
  assert set(start["block1"]["attention"]) == {"value", "out"}
  assert not np.any(start["block1"]["compensation"]["kernel"])
  summary = loop.train(uniattn, str(tmp_path / "uniattn"), show_progress=False)
  assert summary["step"] == 2 and np.isfinite(summary["train/loss"])
  with pytest.raises(ConfigError, match="has no checkpoint"):
    warm_start.trained_params(str(tmp_path / "missing"))
