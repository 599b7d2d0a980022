"""Runs that meet real faults lose nothing: damaged or mismatched checkpoints, a second
process on one workdir, signals, failed writes, damaged run files, non-finite states."""

import errno
import json
import os
import shutil
import signal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from softlab import files
from softlab.trainers import ConfigError, loop
from softlab.trainers.checkpoints import Checkpoints, fingerprint, host_fingerprint

from test_loop import GROKKING, assert_same_records, records, small_config


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("finished")
  loop.train(small_config(), str(workdir), show_progress=False)
  return workdir


@pytest.fixture
def unfinished(tmp_path, finished):
  """A copy of the finished run as if killed after its step-8 checkpoint (its only one:
  two are kept)."""
  workdir = shutil.copytree(finished, tmp_path / "run")
  os.remove(workdir / "summary.json")
  shutil.rmtree(workdir / "checkpoints" / "12")
  return workdir


def one_line(err):
  lines = [line for line in err.strip().splitlines() if line]
  assert len(lines) == 1 and "Traceback" not in err, err
  return lines[0]


# ------------------------------------------------------------- checksums, finiteness
def test_fingerprint_sees_every_bit_and_position():
  state = {"w": jnp.arange(6, dtype=jnp.float32).reshape(2, 3), "n": jnp.int32(3),
           "h": jnp.ones(4, jnp.bfloat16), "b": jnp.array([True, False]),
           "key": jax.random.key(0)}
  finite, base = host_fingerprint(state)
  assert finite
  flipped = np.asarray(state["w"]).copy().view(np.uint32)
  flipped[1, 2] ^= 1 << 7
  changed = [{**state, "w": jnp.asarray(flipped.view(np.float32))},
             {**state, "w": state["w"][:, ::-1]},  # same values, other positions
             {**state, "h": state["h"].at[0].set(2)}, {**state, "b": state["b"][::-1]},
             {**state, "key": jax.random.key(1)}, {**state, "w": jnp.zeros((2, 3))}]
  assert len({base, *(host_fingerprint(s)[1] for s in changed)}) == len(changed) + 1
  assert not bool(fingerprint({**state, "w": state["w"].at[0, 0].set(jnp.nan)})[0])
  assert not bool(fingerprint({**state, "h": state["h"].at[1].set(jnp.inf)})[0])


def test_a_non_finite_state_is_never_saved(tmp_path):
  checkpoints = Checkpoints(str(tmp_path))
  checkpoints.save(1, {"w": jnp.ones(3)}, config={})
  with pytest.raises(FloatingPointError, match=r"non-finite parameters or optimizer state "
                     r"after step 2 \(not saved\); last good checkpoint: step 1 in"):
    checkpoints.save(2, {"w": jnp.array([1.0, jnp.nan, 1.0])}, config={})
  assert checkpoints.steps() == [1]


def test_the_update_at_the_last_step_is_checked_before_saving(tmp_path, monkeypatch,
                                                              softlab_cli):
  # lr = inf: step 1's loss (before the update) is finite, its update is not.
  monkeypatch.setattr(loop.optim, "make_optimizer", lambda config: optax.sgd(np.inf))
  code, _, err = softlab_cli("train", GROKKING, "--workdir", str(tmp_path), "--config.data.p=23",
                             "--config.train.steps=1")
  assert code == 3
  assert "non-finite parameters or optimizer state after step 1 (not saved); last good" \
         " checkpoint: none" in one_line(err)
  assert not os.path.exists(tmp_path / "checkpoints" / "1")
  assert not os.path.exists(tmp_path / "summary.json")


def test_a_checksum_mismatch_is_moved_aside_and_the_previous_step_restored(tmp_path, capfd):
  checkpoints = Checkpoints(str(tmp_path))
  good = {"w": jnp.arange(3.0)}
  checkpoints.save(1, good, config={})
  # Bits that still decode but differ from what was saved: its stored checksum is wrong.
  checkpoints.manager.save(2, args=ocp.args.Composite(
      state=ocp.args.StandardSave({"w": jnp.array([0.0, 1.0, -5e19])}),
      meta=ocp.args.JsonSave({"checksum": host_fingerprint(good)[1], "config": {}})))
  state, step = checkpoints.restore_newest(good, report=print)
  assert step == 1 and np.array_equal(state["w"], good["w"])
  line = one_line(capfd.readouterr().out)
  assert "the checkpoint at step 2 is damaged (its checksum does not match its contents)" in line
  assert os.path.isdir(tmp_path / "damaged_checkpoints" / "2")
  assert checkpoints.steps() == [1]


def test_zero_filled_newest_checkpoint_falls_back_and_resumes_exactly(unfinished, finished,
                                                                      capfd):
  data = max((unfinished / "checkpoints" / "8").rglob("ocdbt.process_0/d/*"),
             key=lambda p: p.stat().st_size)
  data.write_bytes(bytes(data.stat().st_size))
  loop.train(small_config(), str(unfinished), show_progress=False)
  line = one_line(capfd.readouterr().err)
  assert "the checkpoint at step 8 is damaged" in line and "falling back" in line
  assert (unfinished / "damaged_checkpoints" / "8").is_dir()
  assert_same_records(records(unfinished), records(finished))


# -------------------------------------------- restores that fail are not damage
def test_a_checkpoint_that_no_longer_fits_is_refused_and_kept(tmp_path, softlab_cli):
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(40, 4)).astype(np.float32), rng.integers(0, 3, 40)
  path = tmp_path / "data.npz"
  np.savez(path, x_train=x, y_train=y, x_test=x[:8], y_test=y[:8])
  args = ("train", GROKKING, "--workdir", str(tmp_path / "run"), "--config.data.name=npz",
          f"--config.data.path={path}", "--config.train.checkpoint_every=2")
  assert softlab_cli(*args, "--config.train.steps=2")[0] == 0
  y[5] = 3  # one more class: the model's head grows
  np.savez(path, x_train=x, y_train=y, x_test=x[:8], y_test=y[:8])
  code, _, err = softlab_cli(*args, "--config.train.steps=4")
  assert code == 2
  assert ("the checkpoint at step 2 in" in one_line(err) and "does not fit this run's state"
          in err and "float32(200, 3) in the checkpoint, float32(200, 4) now" in err), err
  assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["2"]
  assert not os.path.exists(tmp_path / "run" / "damaged_checkpoints")


def test_an_unreadable_checkpoint_is_an_error_and_stays(unfinished, monkeypatch):
  def denied(self, step):
    raise PermissionError(errno.EACCES, "Permission denied", f"checkpoints/{step}")

  monkeypatch.setattr(ocp.CheckpointManager, "item_metadata", denied)
  with pytest.raises(files.FileError, match=r"the checkpoint at step 8 in .* cannot be read "
                     r"\(Permission denied: checkpoints/8\); fix its permissions and rerun"):
    loop.train(small_config(), str(unfinished), show_progress=False)
  assert os.listdir(unfinished / "checkpoints") == ["8"]


# ----------------------------------------------------- one process per workdir
def test_a_second_run_in_a_busy_workdir_is_one_line(tmp_path, softlab_cli):
  with files.WorkdirLock(str(tmp_path), what="softlab train"):
    code, _, err = softlab_cli("train", GROKKING, "--workdir", str(tmp_path))
  assert code == 2
  assert f"is in use by process {os.getpid()} (softlab train)" in one_line(err)
  assert os.listdir(tmp_path) == [files.WorkdirLock.LOCK_NAME]


# ----------------------------------------------------------------- history
def test_resume_cuts_metrics_past_the_checkpoint_in_place(unfinished, finished):
  path = unfinished / "metrics.jsonl"
  before, inode = path.read_bytes(), path.stat().st_ino
  kept = before[:before.index(b'{"step": 9')]  # records up to the step-8 checkpoint
  loop.train(small_config(), str(unfinished), show_progress=False)
  assert path.stat().st_ino == inode  # appended to, never rewritten
  assert path.read_bytes().startswith(kept)
  assert_same_records(records(unfinished), records(finished))


def test_a_damaged_metrics_line_is_one_line_naming_it(unfinished):
  path = unfinished / "metrics.jsonl"
  lines = path.read_text().splitlines(keepends=True)
  lines[2] = '{"step": 2, "train/lo\n'
  path.write_text("".join(lines))
  with pytest.raises(files.FileError, match=r"metrics.jsonl line 3 is not a metrics record"):
    loop.train(small_config(), str(unfinished), show_progress=False)
  assert path.read_text() == "".join(lines)


@pytest.mark.parametrize("damage", ["truncated", "deleted"])
def test_a_lost_config_json_is_checked_against_the_checkpoints_config(unfinished, finished,
                                                                      damage, capfd):
  config_json = unfinished / "config.json"
  if damage == "truncated":
    config_json.write_text(config_json.read_text()[:50])
  else:
    config_json.unlink()
  with pytest.raises(ConfigError, match=r"holds a different config \(config.optimizer.lr"):
    loop.train(small_config(**{"optimizer.lr": 0.5}), str(unfinished), show_progress=False)
  loop.train(small_config(), str(unfinished), show_progress=False)
  assert "checking against the config saved with the checkpoint at step 8" in capfd.readouterr().err
  assert config_json.read_text() == (finished / "config.json").read_text()
  assert_same_records(records(unfinished), records(finished))


def test_a_run_with_history_but_no_config_is_refused(tmp_path, finished):
  workdir = tmp_path / "run"
  workdir.mkdir()
  shutil.copy(finished / "metrics.jsonl", workdir)
  with pytest.raises(ConfigError, match=r"config.json is missing, and no checkpoint in .* says"
                     r" which config made its run"):
    loop.train(small_config(), str(workdir), show_progress=False)
  assert (workdir / "metrics.jsonl").read_bytes() == (finished / "metrics.jsonl").read_bytes()


def test_a_truncated_summary_is_written_again(tmp_path, finished, capfd):
  workdir = shutil.copytree(finished, tmp_path / "run")
  (workdir / "summary.json").write_text('{"step": 1')
  summary = loop.train(small_config(), str(workdir), show_progress=False)
  assert "summary.json is not valid JSON" in one_line(capfd.readouterr().err)
  assert json.loads((workdir / "summary.json").read_text()) == summary
  assert summary["step"] == 12
  assert_same_records(records(workdir), records(finished))


def test_atomic_writes_keep_the_old_file_when_a_write_fails(tmp_path, monkeypatch):
  path = tmp_path / "summary.json"
  files.write_json(str(path), {"step": 1})
  monkeypatch.setattr(os, "replace", lambda *args: (_ for _ in ()).throw(OSError(errno.ENOSPC,
                                                                              "No space")))
  with pytest.raises(OSError):
    files.write_json(str(path), {"step": 2})
  assert json.loads(path.read_text()) == {"step": 1}
  assert os.listdir(tmp_path) == ["summary.json"]  # no temporary file left behind


# ------------------------------------------------------- signals, failed writes
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_the_step_and_exits_in_one_line(tmp_path, finished, monkeypatch,
                                                       softlab_cli, signum):
  write = loop.MetricsWriter.write

  def signalled(self, step, metrics):
    write(self, step, metrics)
    if step == 6:  # a step between checkpoints
      os.kill(os.getpid(), signum)

  monkeypatch.setattr(loop.MetricsWriter, "write", signalled)
  args = ("train", GROKKING, "--workdir", str(tmp_path), "--config.data.p=23",
          "--config.train.steps=12", "--config.train.log_every=1", "--config.train.eval_every=4",
          "--config.train.checkpoint_every=4")
  code, _, err = softlab_cli(*args)
  assert code == 128 + signum
  assert (f"stopped by {signal.Signals(signum).name} after step 6, saved as its checkpoint;"
          " rerun the same command to resume") in one_line(err)
  assert Checkpoints(str(tmp_path)).steps() == [4, 6]
  monkeypatch.undo()
  assert softlab_cli(*args)[0] == 0
  assert_same_records(records(tmp_path), records(finished))


def test_a_failed_checkpoint_write_stops_the_run_at_once(tmp_path, monkeypatch, softlab_cli):
  save = ocp.CheckpointManager.save

  def full_disk(self, step, *args, **kwargs):
    if step == 8:
      raise ValueError("RESOURCE_EXHAUSTED: Error writing ... Failed to write 333688 bytes to"
                       " file 8: No space left on device [os_error_code='28']")
    return save(self, step, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, "save", full_disk)
  code, _, err = softlab_cli("train", GROKKING, "--workdir", str(tmp_path), "--config.data.p=23",
                             "--config.train.steps=12", "--config.train.log_every=4",
                             "--config.train.checkpoint_every=4")
  assert code == 1
  assert ("the checkpoint at step 8 could not be written to" in one_line(err)
          and "(No space left on device); the run stopped, its earlier checkpoints (4) are kept"
          in err), err
  assert Checkpoints(str(tmp_path)).steps() == [4]
  assert max(r["step"] for r in records(tmp_path)) == 8
