"""The experiment trainers: what each adds on top of the loop works end to end."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from softlab.config import load_config, override
from softlab.trainers import ConfigError, loop

GROKKING = "configs/grokking/softmax.py"


def losses_by_step(workdir, key="train/loss"):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return {r["step"]: r[key] for r in map(json.loads, f) if key in r}


def quick(path, **updates):
  base = {"train.log_every": 1, "train.checkpoint_every": 1000}
  return override(load_config(path), {**base, **updates})


def test_contrastive_sharded_over_eight_devices_equals_one(tmp_path):
  config = quick("configs/contrastive/siglip.py", **{"train.steps": 3, "train.eval_every": 3,
                                                     "train.batch_size": 16})
  one = loop.train(override(config, {"train.num_devices": 1}), str(tmp_path / "one"))
  eight = loop.train(override(config, {"train.num_devices": 8}), str(tmp_path / "eight"))
  a, b = losses_by_step(tmp_path / "one"), losses_by_step(tmp_path / "eight")
  np.testing.assert_allclose([a[s] for s in (1, 2, 3)], [b[s] for s in (1, 2, 3)], rtol=1e-5)
  assert one["test/zero_shot_accuracy"] == pytest.approx(eight["test/zero_shot_accuracy"])
  assert one["train/bias"] == pytest.approx(-10.0, abs=0.1)


def test_contrastive_learns_zero_shot_and_rejects_padding(tmp_path):
  summary = loop.train(quick("configs/contrastive/clip.py", **{"train.steps": 150,
                                                              "train.eval_every": 150}),
                       str(tmp_path / "clip"))
  assert summary["test/zero_shot_accuracy"] > 0.5  # chance is 0.1
  with pytest.raises(ConfigError, match="a batch of 12 pairs must divide by the 8 devices"):
    loop.train(quick("configs/contrastive/siglip.py", **{"train.steps": 1,
                                                         "train.batch_size": 12}),
               str(tmp_path / "bad"))
  # A batch at least the training set's size is the whole set, 1,258 pairs here.
  with pytest.raises(ConfigError, match="a batch of 1258 pairs must divide by the 8 devices"):
    loop.train(quick("configs/contrastive/siglip.py", **{"train.steps": 1,
                                                         "train.batch_size": 4096}),
               str(tmp_path / "whole"))
  with pytest.raises(ConfigError, match="config.loss: unknown field"):
    loop.train(quick("configs/contrastive/siglip.py", **{"train.steps": 1,
                                                         "loss.dtype": "float64",
                                                         "train.x64": True}),
               str(tmp_path / "dtype"))


DIAGNOSTICS_AT_32 = {"name": "attention_diagnostics", "splits": ("val_32",)}


@pytest.mark.slow  # 19 s; the 2-step lm config run evaluates every length in the default suite
def test_lm_learns_and_evaluates_every_length(tmp_path):
  config = quick("configs/lm/softmax.py", **{
      "train.steps": 40, "train.eval_every": 40, "train.batch_size": 16,
      "data.eval_lengths": (32, 64), "data.seq_len": 32, "data.eval_windows": 8,
      "model.d_model": 32, "model.num_layers": 1, "optimizer.total_steps": 40,
      "optimizer.warmup_steps": 5, "evals.diagnostics": DIAGNOSTICS_AT_32,
      "evals.quantized": {"name": "quantized", "bits": (8,)}})
  summary = loop.train(config, str(tmp_path))
  losses = losses_by_step(tmp_path)
  assert losses[40] < losses[1] - 1.0
  assert {"val_32/loss", "val_64/loss", "val_32/accuracy"} <= set(summary)
  # Diagnostics at the training length only; quantized losses everywhere.
  assert 0 <= summary["val_32/sink_rate"] <= 1 and 0 <= summary["val_32/sparsity"] <= 1
  assert summary["val_32/kurtosis"] > 1 and "val_64/kurtosis" not in summary
  assert abs(summary["val_64/loss_int8"] - summary["val_64/loss"]) < 0.05
  assert summary["train/attention_rms"] > 0


def test_lm_metrics_leave_out_padding_examples(tmp_path):
  # 6 windows on 4 devices are padded to 8 with zero-weight windows; the
  # attention RMS and the diagnostics must be those of the 6 real windows.
  config = quick("configs/lm/softmax.py", **{
      "train.steps": 2, "train.eval_every": 2, "train.batch_size": 6, "train.eval_batch_size": 6,
      "data.seq_len": 16, "data.eval_lengths": (16,), "data.eval_windows": 6, "model.d_model": 32,
      "model.num_layers": 1,
      "evals.diagnostics": {"name": "attention_diagnostics", "splits": ("val_16",)}})
  one = loop.train(override(config, {"train.num_devices": 1}), str(tmp_path / "one"))
  four = loop.train(override(config, {"train.num_devices": 4}), str(tmp_path / "four"))
  for key in ("train/attention_rms", "train/loss", "val_16/sink_rate", "val_16/sparsity",
              "val_16/kurtosis", "val_16/loss"):
    assert four[key] == pytest.approx(one[key], rel=1e-4), key


def test_lm_trains_an_nnx_transformer_and_reads_its_sown_values(tmp_path):
  config = quick("configs/lm/ssmax.py", **{
      "model.api": "nnx", "train.steps": 2, "train.eval_every": 2, "train.batch_size": 8,
      "train.eval_batch_size": 8, "data.seq_len": 16, "data.eval_lengths": (16,),
      "data.eval_windows": 8, "model.d_model": 16, "model.num_layers": 1,
      "evals.diagnostics": {"name": "attention_diagnostics", "splits": ("val_16",)}})
  summary = loop.train(config, str(tmp_path))
  losses = losses_by_step(tmp_path)
  assert np.all(np.isfinite([losses[1], losses[2], summary["val_16/loss"]]))
  assert summary["train/attention_rms"] > 0 and 0 <= summary["val_16/sink_rate"] <= 1
  assert summary["val_16/kurtosis"] > 0 and summary["val_16/max_activation_l0"] > 0


def test_classification_trains_an_nnx_mlp_with_perpgrad_and_resumes_exactly(tmp_path):
  config = quick("configs/grokking/perpgrad.py", **{
      "model.api": "nnx", "data.p": 23, "train.steps": 4, "train.eval_every": 2,
      "train.checkpoint_every": 2})
  loop.train(override(config, {"train.steps": 2}), str(tmp_path / "resumed"))
  summary = loop.train(config, str(tmp_path / "resumed"))
  loop.train(config, str(tmp_path / "straight"))
  resumed, straight = losses_by_step(tmp_path / "resumed"), losses_by_step(tmp_path / "straight")
  assert [resumed[s] for s in (1, 2, 3, 4)] == pytest.approx([straight[s] for s in (1, 2, 3, 4)])
  assert straight[4] < straight[1] and summary["test/accuracy"] >= 0


@pytest.mark.slow  # 15 s; the fused loss equals the dense one in tests/losses/test_vocab.py and
# trains through the lm trainer in tests/trainers/test_loss_kinds.py
def test_lm_fused_head_loss_equals_logits_loss(tmp_path):
  updates = {"train.steps": 1, "train.eval_every": 1, "train.batch_size": 8,
             "data.seq_len": 16, "data.eval_lengths": (16,), "data.eval_windows": 4,
             "model.d_model": 32, "model.num_layers": 1}
  dense = loop.train(quick("configs/lm/softmax.py", **updates), str(tmp_path / "dense"))
  fused = loop.train(quick("configs/lm/softmax.py", **updates,
                           **{"loss": {"name": "linear_cross_entropy", "dtype": "float32"}}),
                     str(tmp_path / "fused"))
  assert fused["train/loss"] == pytest.approx(dense["train/loss"], rel=1e-5)
  assert fused["val_16/loss"] == pytest.approx(dense["val_16/loss"], rel=1e-5)


def test_aldr_kl_keeps_per_example_lambda_in_the_state(tmp_path):
  config = quick("configs/ldr/aldr_kl.py", **{"train.steps": 30, "train.eval_every": 30})
  summary = loop.train(config, str(tmp_path))
  lam0 = config.loss.lam0
  for key in ("train/lambda_noisy", "train/lambda_clean"):
    assert lam0 * (1 - 1 / config.loss.alpha) - 1e-6 <= summary[key] <= lam0 + 1e-6
  assert summary["train/lambda_noisy"] != summary["train/lambda_clean"]


def test_noisy_softmax_gets_a_key_and_the_step_from_the_classification_trainer(tmp_path):
  """configs/classification/noisy_softmax.py for 2 steps: at step 1 (alpha_t = alpha) the
  annealed run equals the constant-alpha one; at step 2 an annealing over 1 step has reached
  alpha_t = 0 and the constant run has not."""
  runs = {"anneal1": {"loss.anneal_steps": 1}, "constant": {"loss.anneal_steps": None}}
  losses = {}
  for name, updates in runs.items():
    config = quick("configs/classification/noisy_softmax.py",
                   **{"train.steps": 2, "train.eval_every": 2, "loss.alpha": 0.5, **updates})
    summary = loop.train(config, str(tmp_path / name))
    losses[name] = losses_by_step(tmp_path / name)
    assert summary["step"] == 2 and np.isfinite(summary["test/loss"])
  assert losses["anneal1"][1] == losses["constant"][1]
  assert losses["anneal1"][2] != losses["constant"][2]


def test_retrieval_reports_attention_on_target_and_eval_model(tmp_path):
  config = quick("configs/retrieval/max_item.py", **{
      "train.steps": 20, "train.eval_every": 20, "data.test_lengths": (16, 64),
      "data.test_size": 64})
  base = loop.train(config, str(tmp_path / "softmax"))
  assert 0 < base["test_64/attention_on_target"] <= base["test_64/attention_max"] <= 1
  adaptive = load_config("configs/retrieval/max_item.py:adaptive_softmax")
  assert adaptive.eval_model.normalizer == "adaptive_softmax"
  sharp = loop.train(override(config, {"eval_model": adaptive.eval_model.to_dict()}),
                     str(tmp_path / "adaptive"))
  assert sharp["train/loss"] == pytest.approx(base["train/loss"])  # training is unchanged
  assert sharp["test_64/attention_max"] >= base["test_64/attention_max"]


def free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_equal_one_process(tmp_path):
  fields = {"data.p": 23, "train.steps": 4, "train.log_every": 1, "train.eval_every": 2,
            "train.checkpoint_every": 2}
  args = [GROKKING, *(f"--config.{key}={value}" for key, value in fields.items())]
  port = free_port()
  flags = os.environ["XLA_FLAGS"].replace("device_count=8", "device_count=2")
  env = {**os.environ, "XLA_FLAGS": flags}
  processes = [
      subprocess.Popen([sys.executable, "-m", "softlab", "train", *args, "--workdir",
                        str(tmp_path / "multi"), "--multihost",
                        f"--coordinator_address=localhost:{port}", "--num_processes=2",
                        f"--process_id={i}"], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
      for i in range(2)
  ]
  for process in processes:
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
  # The same 4 devices in one process.
  loop.train(quick(GROKKING, **fields, **{"train.num_devices": 4}), str(tmp_path / "single"))
  a, b = losses_by_step(tmp_path / "multi"), losses_by_step(tmp_path / "single")
  assert sorted(a) == [1, 2, 3, 4]
  np.testing.assert_allclose([a[s] for s in a], [b[s] for s in a], rtol=1e-5)


@pytest.mark.parametrize("path, updates, message", [
    (GROKKING, {"loss.label_smothing": 0.1},
     r"config.loss: unknown field\(s\) label_smothing for softmax_cross_entropy; valid: "
     r"label_smoothing"),
    (GROKKING, {"loss.name": "focal_loss", "loss.gamma": -1.0}, "config.loss: gamma"),
    (GROKKING, {"loss.name": "aldr_kl", "loss.lam0": "ten"}, "config.loss: "),
    ("configs/retrieval/max_item.py", {"loss.name": "aldr_kl"},
     "config.loss.name: aldr_kl keeps a lambda per training example"),
    ("configs/lm/softmax.py", {"loss.name": "noisy_softmax_cross_entropy"},
     "'noisy_softmax_cross_entropy' is a classification loss; the lm trainer takes "
     "classification, vocab_head losses but supplies no key, step; trainers for classification "
     "losses: classification"),
    ("configs/lm/softmax.py", {"loss.z_loss": 1e-4}, r"config.loss: unknown field\(s\) z_loss"),
    ("configs/lm/softmax.py", {"loss.name": "linear_cross_entropy", "loss.z_loss": -1.0},
     "config.loss: z_loss must be >= 0"),
    ("configs/lm/softmax.py", {"evals.quantized": {"name": "quantized", "bits": 8}},
     "config.evals.quantized: bits must be a non-empty tuple of integer bit widths >= 2, got 8"),
    ("configs/lm/softmax.py", {"evals.quantized": {"name": "quantized", "bits": (8, 1)}},
     "config.evals.quantized: bits must be a non-empty tuple"),
])
def test_bad_trainer_options_are_config_errors(tmp_path, path, updates, message):
  with pytest.raises(ConfigError, match=message):
    loop.train(quick(path, **{"train.steps": 1, **updates}), str(tmp_path))


def test_data_seed_and_missing_names(tmp_path):
  config = quick(GROKKING, **{"train.steps": 1, "data.p": 23})
  base = loop.train(config, str(tmp_path / "base"))
  reseeded = loop.train(override(config, {"data.seed": 7}), str(tmp_path / "reseeded"))
  assert reseeded["train/loss"] != base["train/loss"]  # another train/test split
  for section in ("data", "model"):
    broken = config.copy_and_resolve_references()
    del broken[section]["name"]
    with pytest.raises(ConfigError, match=f"config.{section}: missing field 'name'; valid: "):
      loop.train(broken, str(tmp_path / section))
