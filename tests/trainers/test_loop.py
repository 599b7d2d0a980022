"""The generic loop end to end: devices, resume after SIGKILL, errors, outputs."""

import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from softlab.config import load_config, override
from softlab.trainers import ConfigError, loop
from softlab.trainers.reporting import read_records

GROKKING = "configs/grokking/softmax.py"


def small_config(**updates):
  """Modular addition mod 23: the grokking setup at a size that runs in seconds."""
  base = {"data.p": 23, "train.steps": 12, "train.log_every": 1, "train.eval_every": 4,
          "train.checkpoint_every": 4}
  return override(load_config(GROKKING), {**base, **updates})


def complete_lines(workdir):
  """metrics.jsonl records, without a last line a running process is still writing."""
  return read_records(os.path.join(workdir, "metrics.jsonl"))


def history(workdir, key="train/loss"):
  return {r["step"]: r[key] for r in complete_lines(workdir) if key in r}


def records(workdir):
  return [{k: v for k, v in r.items() if k not in loop.TIMING_KEYS} for r in complete_lines(workdir)]


def assert_same_records(actual, expected, rtol=1e-6):
  assert [sorted(r) for r in actual] == [sorted(r) for r in expected]
  for got, want in zip(actual, expected):
    np.testing.assert_allclose([got[k] for k in sorted(got)], [want[k] for k in sorted(want)],
                               rtol=rtol, err_msg=f"step {want['step']}")


def test_run_writes_outputs_and_learns(tmp_path):
  summary = loop.train(small_config(**{"train.steps": 40}), str(tmp_path))
  for name in ("config.json", "metrics.jsonl", "summary.json"):
    assert os.path.exists(tmp_path / name), name
  assert os.listdir(tmp_path / "checkpoints")
  losses = history(tmp_path)
  assert losses[40] < 0.1 * losses[1]
  lines = records(tmp_path)
  assert all("step" in r for r in lines) and lines[0]["step"] == 0 and "test/accuracy" in lines[0]
  for key in ("train/loss", "train/accuracy", "train/grad_norm", "train/weight_norm",
              "train/learning_rate", "train/softmax_collapse", "test/loss", "test/accuracy"):
    assert key in summary, key
  assert summary["train/learning_rate"] == pytest.approx(0.01)


def test_one_and_eight_devices_give_the_same_losses(tmp_path):
  # The 5,107-example full batch of the paper's setup does not divide by 8: the
  # padded, zero-weight examples must not change anything.
  config = override(load_config(GROKKING), {"train.steps": 3, "train.log_every": 1,
                                             "train.eval_every": 3})
  one = loop.train(override(config, {"train.num_devices": 1}), str(tmp_path / "one"))
  eight = loop.train(override(config, {"train.num_devices": 8}), str(tmp_path / "eight"))
  a, b = history(tmp_path / "one"), history(tmp_path / "eight")
  assert sorted(a) == [1, 2, 3]
  np.testing.assert_allclose([a[s] for s in a], [b[s] for s in a], rtol=1e-5)
  assert one["test/accuracy"] == pytest.approx(eight["test/accuracy"], abs=1e-6)


def test_resume_continues_exactly(tmp_path):
  config = small_config()
  loop.train(override(config, {"train.steps": 8}), str(tmp_path / "resumed"))
  loop.train(config, str(tmp_path / "resumed"))  # continues 8 -> 12 (train.steps may grow)
  loop.train(config, str(tmp_path / "straight"))
  assert_same_records(records(tmp_path / "resumed"), records(tmp_path / "straight"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """The workdir of a finished small_config() run: tests copy it or compare with it."""
  workdir = tmp_path_factory.mktemp("finished")
  loop.train(small_config(), str(workdir))
  return workdir


@pytest.mark.parametrize("stop_at", [6, 12])
def test_interrupt_before_a_steps_records_resumes_exactly(tmp_path, monkeypatch, finished,
                                                          stop_at):
  # The interrupt lands after step `stop_at` trained but before its records were
  # written: resuming from it would never write them (nor, at the last step,
  # summary.json).
  write = loop.MetricsWriter.write

  def interrupted_write(self, step, metrics):
    if step == stop_at:
      raise KeyboardInterrupt
    write(self, step, metrics)

  config, interrupted = small_config(), str(tmp_path / "interrupted")
  monkeypatch.setattr(loop.MetricsWriter, "write", interrupted_write)
  with pytest.raises(KeyboardInterrupt):
    loop.train(config, interrupted)
  monkeypatch.undo()
  summary = loop.train(config, interrupted)
  assert_same_records(records(interrupted), records(finished))
  assert summary["step"] == 12 and os.path.exists(os.path.join(interrupted, "summary.json"))


def test_final_checkpoint_without_summary_writes_it_and_lower_steps_are_refused(tmp_path,
                                                                               finished):
  workdir = shutil.copytree(finished, tmp_path / "run")
  os.remove(workdir / "summary.json")  # stopped between the last checkpoint and the summary
  rebuilt = loop.train(small_config(), str(workdir))
  expected = json.loads((finished / "summary.json").read_text())
  assert sorted(rebuilt) == sorted(expected)
  np.testing.assert_allclose([rebuilt[k] for k in sorted(rebuilt)],
                             [expected[k] for k in sorted(expected)], rtol=1e-6)
  assert json.loads((workdir / "summary.json").read_text()) == rebuilt
  with pytest.raises(ConfigError, match=r"config.train.steps=8 is below step 12 of the checkpoint"
                     r" in .*; set train.steps >= 12 or use a new --workdir"):
    loop.train(small_config(**{"train.steps": 8}), str(workdir))
  assert (workdir / "config.json").read_text() == (finished / "config.json").read_text()


@pytest.mark.parametrize("lost", ["every checkpoint", "the last checkpoint, mid-line"])
def test_restart_after_losing_checkpoints_matches_uninterrupted(tmp_path, finished, lost):
  # A run killed before its first checkpoint restarts from step 0 and must not
  # keep the old step-0 record; one killed while writing a line leaves it half written.
  workdir = shutil.copytree(finished, tmp_path / "run")
  os.remove(workdir / "summary.json")
  if lost == "every checkpoint":
    shutil.rmtree(workdir / "checkpoints")
  else:
    shutil.rmtree(workdir / "checkpoints" / "12")
    with open(workdir / "metrics.jsonl", "a") as f:
      f.write('{"step": 13, "train/lo')
  loop.train(small_config(), str(workdir))
  assert (workdir / "metrics.jsonl").read_text().endswith("}\n")
  assert_same_records(records(workdir), records(finished))


def softlab(*args, **kwargs):
  return subprocess.Popen([sys.executable, "-m", "softlab", *args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.mark.slow  # 35 s; the interrupt and lost-checkpoint resume tests above run by default
def test_sigkill_mid_run_then_restart_matches_uninterrupted(tmp_path):
  overrides = ["--config.data.p=23", "--config.train.steps=400", "--config.train.log_every=1",
               "--config.train.eval_every=50", "--config.train.checkpoint_every=25"]
  killed = str(tmp_path / "killed")
  process = softlab("train", GROKKING, "--workdir", killed, *overrides)
  deadline = time.time() + 120
  while time.time() < deadline:
    steps = history(killed) if os.path.exists(os.path.join(killed, "metrics.jsonl")) else {}
    if steps and max(steps) >= 160:
      break
    time.sleep(0.05)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert max(history(killed)) < 400  # really interrupted mid-run
  for workdir in (killed, str(tmp_path / "straight")):
    finished = softlab("train", GROKKING, "--workdir", workdir, *overrides)
    out, err = finished.communicate(timeout=300)
    assert finished.returncode == 0, err
  assert_same_records(records(killed), records(tmp_path / "straight"))


@pytest.mark.parametrize("args, message", [
    (["--config.loss.name=softmaxx"], "config.loss.name: unknown loss 'softmaxx'; valid: "),
    (["--config.model.name=resnet"], "config.model: unknown model 'resnet'; valid: "),
    (["--config.data.name=imagenet"], "config.data: unknown dataset 'imagenet'; valid: "),
    (["--config.optimizer.name=lion"], "config.optimizer: optimizer.name='lion' is not valid"),
    (["--config.train.steps=ten"], "flag --config.train.steps=ten: invalid literal"),
    (["--config.train.stepz=10"], "names a field the config does not have"),
    (["--config.train.dtype=float8"], "config.train.dtype: unknown dtype 'float8'; valid"),
])
def test_bad_config_is_one_line_error(tmp_path, softlab_cli, args, message):
  code, _, err = softlab_cli("train", GROKKING, "--workdir", str(tmp_path),
                             "--config.train.steps=1", *args)
  assert code == 2
  assert message in err, err
  assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_missing_config_file_and_workdir_errors(tmp_path, softlab_cli):
  code, _, err = softlab_cli("train", "configs/nope.py", "--workdir", str(tmp_path))
  assert "config file not found: configs/nope.py" in err
  assert code == 2
  code, _, err = softlab_cli("train", GROKKING)
  assert "train needs --workdir" in err and code == 2


def test_workdir_holding_another_config_is_refused(tmp_path):
  loop.train(small_config(**{"train.steps": 2}), str(tmp_path))
  with pytest.raises(ConfigError, match=r"holds a different config \(config.optimizer.lr: 0.01 != 0.02\)"):
    loop.train(small_config(**{"train.steps": 2, "optimizer.lr": 0.02}), str(tmp_path))


def test_missing_dataset_file_is_a_config_error(tmp_path):
  config = small_config(**{"data": {"name": "npz", "path": str(tmp_path / "data.npz")}})
  with pytest.raises(ConfigError, match="config.data: path: no such .npz file"):
    loop.train(config, str(tmp_path / "run"))


def test_non_finite_loss_stops_with_step_and_keeps_last_checkpoint(tmp_path, diverging_npz):
  config = small_config(**{"data": {"name": "npz", "path": diverging_npz},
                           "model.use_bias": True})
  with pytest.raises(FloatingPointError, match=r"non-finite train/loss \(nan\) at step 1; last good checkpoint: none"):
    loop.train(config, str(tmp_path / "run"))


# ------------------------------------------------------------- the loop's pieces
@pytest.fixture(scope="module")
def small_run():
  return loop.setup(small_config(**{"train.steps": 2}))


def test_one_train_step_gives_pinned_metrics(small_run):
  # nanodo's train_test style: one step on the fixed full batch, numbers pinned.
  state = loop.init_state(small_run)
  batch = loop.batch_source(small_run)(0)
  step = jax.jit(functools.partial(loop.train_step, small_run))
  state, metrics = step(state, batch)
  got = loop.train_metrics(metrics)
  assert int(state["step"]) == 1
  assert got == pytest.approx({
      "train/loss": 3.1353282, "train/accuracy": 10 / 212, "train/softmax_collapse": 0.0,
      "train/zero_loss": 0.0, "train/grad_norm": 0.12517114, "train/weight_norm": 20.705612,
      "train/learning_rate": 0.01}, rel=1e-5)
  # The loss is the mean cross-entropy of the initial parameters' logits (float64 NumPy).
  initial = loop.init_state(small_run)
  logits = np.asarray(small_run.experiment.predict(initial["params"], {}, batch)["logits"],
                      np.float64)
  log_p = logits - logits.max(-1, keepdims=True)
  log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
  labels = np.asarray(batch["labels"])
  assert got["train/loss"] == pytest.approx(-log_p[np.arange(len(labels)), labels].mean(),
                                            rel=1e-5)  # float32 loss
  _, light = jax.jit(functools.partial(loop.train_step, small_run, with_metrics=False))(
      loop.init_state(small_run), batch)
  assert sorted(light) == ["loss"] and float(light["loss"]) == pytest.approx(3.1353282, rel=1e-6)


def test_eval_step_sums_combine_into_evaluate(small_run):
  state = loop.init_state(small_run)
  evaluator = small_run.evaluators["classification"]
  batches = small_run.dataset.eval_splits["test"]
  sums = [loop.eval_step(evaluator, state, b) for b in batches]
  weight = sum(s["weight"] for s in sums)
  assert weight == sum(len(b["weight"]) for b in batches)
  metrics = loop.evaluate(small_run, state, 0)
  for key in ("loss", "accuracy"):
    assert metrics[f"test/{key}"] == pytest.approx(sum(s[key] for s in sums) / weight, rel=1e-9)


def test_corrupt_newest_checkpoint_falls_back_to_the_previous(tmp_path, finished, capfd):
  workdir = shutil.copytree(finished, tmp_path / "run")
  os.remove(workdir / "summary.json")
  data_files = sorted((workdir / "checkpoints" / "12").rglob("ocdbt.process_0/d/*"),
                      key=lambda p: p.stat().st_size)
  with open(data_files[-1], "r+b") as f:
    f.truncate(100)
  summary = loop.train(small_config(), str(workdir))
  lines = [line for line in capfd.readouterr().err.splitlines() if "is damaged" in line]
  assert len(lines) == 1 and "the checkpoint at step 12 is damaged" in lines[0], lines
  assert "falling back to the previous one" in lines[0]
  assert (workdir / "damaged_checkpoints" / "12").is_dir()  # moved aside, never deleted
  assert summary["step"] == 12
  assert_same_records(records(workdir), records(finished))


def test_non_finite_loss_between_log_steps_names_the_first_bad_step(tmp_path, diverging_npz):
  config = small_config(**{"data": {"name": "npz", "path": diverging_npz},
                           "model.use_bias": True, "train.log_every": 3,
                           "train.eval_every": 3, "train.checkpoint_every": 3})
  with pytest.raises(FloatingPointError, match=r"non-finite train/loss \(nan\) at step 1; "):
    loop.train(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run" / "checkpoints" / "3")


@pytest.mark.parametrize("under_file, message", [
    ("", "is a file, not a folder"), ("run", "cannot be written (Not a directory)")])
def test_unusable_workdir_is_one_line(tmp_path, softlab_cli, under_file, message):
  (tmp_path / "file").write_text("")
  workdir = tmp_path / "file" / under_file if under_file else tmp_path / "file"
  with pytest.raises(ConfigError, match=re.escape(message)):
    loop.train(small_config(**{"train.steps": 1}), str(workdir))
  code, _, err = softlab_cli("train", GROKKING, "--workdir", str(workdir))
  assert code == 2 and message in err
  assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_float64_is_switched_on_by_train_x64():
  config = load_config("configs/grokking/float64.py")
  assert loop.x64_enabled(config) and not loop.x64_enabled(load_config(GROKKING))
  with pytest.raises(ConfigError, match=r"config.loss.dtype=float64 needs config.train.x64=True"):
    loop.x64_enabled(override(config, {"train.x64": False}))
  config = override(config, {"data.p": 23})
  with jax.enable_x64(loop.x64_enabled(config)):
    run = loop.setup(config)
    state = loop.init_state(run)
    logits = run.experiment.predict(state["params"], {}, loop.batch_source(run)(0))["logits"]
  assert logits.dtype == np.float64


def test_an_evaluator_needing_values_the_model_does_not_sow_is_a_config_error(tmp_path):
  config = small_config(**{"train.steps": 1, "evals.attention": {"name": "attention_on_target"}})
  with pytest.raises(ConfigError, match="config.model sows no attention_weights, which an "
                     "evaluator in config.evals or the trainer needs"):
    loop.train(config, str(tmp_path))


def test_unknown_train_and_top_level_fields_are_config_errors():
  with pytest.raises(ConfigError, match=r"config.train.stepz names a field the config does not "
                     r"have; valid: steps, "):
    loop.setup(small_config(**{"train.stepz": 3}))
  with pytest.raises(ConfigError, match=r"config.eval_diagnostics names a field"):
    loop.setup(override(small_config(), {"eval_diagnostics": True}))


# ------------------------------------------------------------------ early stopping
def stopping_config(**early_stop):
  return small_config(**{"train.early_stop": early_stop})


PLATEAU = {"metric": "test/accuracy", "patience": 2}


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
  """The workdir of a run stopped on its test-accuracy plateau: tests copy it or compare with it."""
  workdir = tmp_path_factory.mktemp("stopped")
  loop.train(stopping_config(**PLATEAU), str(workdir))
  return workdir


def test_early_stop_ends_at_the_step_a_metric_stops_improving(stopped, finished):
  # Reference: the finished run's test accuracy at its evaluations (0, 4, 8, 12)
  # walked by hand: stop after `patience` evaluations in a row without a new best.
  accuracy = history(finished, "test/accuracy")
  best, waited, expected = -1.0, 0, None
  for step in sorted(accuracy):
    best, waited = (accuracy[step], 0) if accuracy[step] > best else (best, waited + 1)
    if waited == 2:
      expected = step
      break
  assert expected is not None and expected < 12  # the setup really plateaus early
  summary = json.loads((stopped / "summary.json").read_text())
  assert summary["step"] == expected
  assert summary["stop_reason"].startswith(
      "early_stop: test/accuracy did not improve by more than 0 in 2 evaluations")
  assert max(history(stopped)) == expected and "train/loss" in summary
  assert summary["test/accuracy"] == pytest.approx(accuracy[expected], abs=1e-6)
  assert max(int(d) for d in os.listdir(stopped / "checkpoints") if d.isdigit()) == expected


@pytest.mark.parametrize("early_stop, stop_step", [
    ({"metric": "test/loss", "mode": "max", "patience": 1}, 12),  # rises at every evaluation
    ({"metric": "test/loss", "mode": "max", "target": 4.0}, 8),   # 3.6 at step 4, 4.5 at 8
])
def test_early_stop_runs_to_the_cap_while_improving_and_stops_at_a_target(tmp_path, early_stop,
                                                                          stop_step):
  summary = loop.train(stopping_config(**early_stop), str(tmp_path))
  losses = history(tmp_path, "test/loss")
  assert summary["step"] == stop_step == max(losses)
  assert all(losses[a] < losses[b] for a, b in zip(sorted(losses), sorted(losses)[1:]))
  if stop_step == 12:
    assert summary["stop_reason"] == "train.steps=12 reached"
  else:
    assert losses[4] < 4.0 <= losses[8]
    assert summary["stop_reason"] == "early_stop: test/loss reached the target 4 at step 8"


def test_an_early_stopped_run_resumes_to_the_same_stop_and_stays_stopped(tmp_path, stopped):
  config = stopping_config(**PLATEAU)
  straight = json.loads((stopped / "summary.json").read_text())
  assert loop.train(config, str(stopped)) == straight  # finished: summary.json as it is
  resumed = str(tmp_path / "resumed")
  loop.train(override(config, {"train.steps": 4}), resumed)  # stops at its cap, step 4
  assert loop.train(config, resumed)["step"] == straight["step"]  # replays, then stops
  assert_same_records(records(resumed), records(stopped))
  os.remove(os.path.join(resumed, "summary.json"))  # stopped before the summary was written
  rebuilt = loop.train(override(config, {"train.steps": 20}), resumed)
  assert rebuilt["step"] == straight["step"] and rebuilt["stop_reason"] == straight["stop_reason"]
  assert rebuilt["test/accuracy"] == pytest.approx(straight["test/accuracy"], abs=1e-6)
  assert max(history(resumed)) == straight["step"]  # nothing trained past the stop
  assert loop.train(override(config, {"train.steps": 20}), resumed) == rebuilt


@pytest.mark.parametrize("early_stop, message", [
    ({"metric": "test/accuracy", "patiense": 2},
     r"config.train.early_stop.patiense names a field early_stop does not have; valid: metric, "),
    ({"metric": "test/accuracy"}, r"config.train.early_stop needs patience \(evaluations"),
    ({"metric": "test/accuracy", "patience": 0},
     r"config.train.early_stop.patience must be an integer >= 1, got 0"),
    ({"metric": "test/accuracy", "patience": 2, "mode": "up"},
     r"config.train.early_stop.mode='up' is not valid; valid: max, min"),
    ({"metric": "test/accuracy", "patience": 2, "min_delta": -0.1},
     r"config.train.early_stop.min_delta must be a number >= 0, got -0.1"),
    ({"metric": "test/acc", "patience": 2},
     r"config.train.early_stop.metric='test/acc' is not an evaluation metric of this run; valid:"
     r" test/accuracy, test/loss, "),
])
def test_bad_early_stop_fields_are_one_line_config_errors(tmp_path, early_stop, message):
  with pytest.raises(ConfigError, match=message) as error:
    loop.train(stopping_config(**early_stop), str(tmp_path))
  assert "\n" not in str(error.value)


def test_an_early_stopping_resume_without_its_history_is_one_line(tmp_path, stopped):
  workdir = shutil.copytree(stopped, tmp_path / "run")
  for name in ("summary.json", "metrics.jsonl"):
    os.remove(workdir / name)
  with pytest.raises(ConfigError, match=r"metrics.jsonl has no records up to the checkpoint at"
                     r" step \d+: config.train.early_stop rebuilds its state from them"):
    loop.train(stopping_config(**PLATEAU), str(workdir))
