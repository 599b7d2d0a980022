"""The ablation runner end to end on a tiny study written by the test."""

import functools
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from softlab import files, optim, study

STUDY = textwrap.dedent('''
    """A tiny study: ⊥AdamW against plain AdamW on modular addition mod 11."""
    import os

    TITLE = "Tiny grokking check"
    ARXIV = "2501.04697"
    CLAIM = "⊥AdamW reaches a lower training loss than AdamW in a few steps."
    BASE_CONFIG = os.path.relpath(os.path.join({root!r}, "configs/grokking/softmax.py"),
                                  os.path.dirname(__file__))
    _SMALL = {{"data.p": 11, "train.steps": 6, "train.log_every": 2, "train.eval_every": 3,
              "train.checkpoint_every": 6}}
    VARIANTS = {{"adamw": dict(_SMALL), "perp_adamw": {{**_SMALL, "optimizer.perpgrad": True}}}}
    SEEDS = (0, 1)
    METRICS = {{"train/loss": "final training loss", "first_logged": "first logged step"}}
    PLOTS = ("train/loss",)
    PAPER = {{"perp_adamw": {{"train/loss": "lower"}}}}

    def analyze(history):
      return {{"first_logged": min(r["step"] for r in history if "train/loss" in r)}}

    def verdict(results):
      a = results["variants"]["adamw"]["mean"]["train/loss"]
      b = results["variants"]["perp_adamw"]["mean"]["train/loss"]
      status = "supported" if b < a else "not supported"
      return status, f"⊥AdamW {{b:.3f}} vs AdamW {{a:.3f}}"
    ''')


@pytest.fixture
def tiny_study(tmp_path):
  path = tmp_path / "tiny.py"
  path.write_text(STUDY.format(root=os.getcwd()))
  return str(path)


@pytest.fixture
def one_seed_study(tmp_path):
  """The tiny study with seed 0 only: two runs."""
  path = tmp_path / "tiny.py"
  path.write_text(STUDY.format(root=os.getcwd()) + "SEEDS = (0,)\n")
  return str(path)


def finish_runs(path: str) -> None:
  """Writes the outputs of every run of the study at `path` as a finished run would (loss 1.0).

  The study then only aggregates: its tests of what happens around the runs
  train nothing.
  """
  tiny = study.load_study(path)
  for variant in tiny.VARIANTS:
    for seed in tiny.SEEDS:
      workdir = study.run_dir(tiny, variant, seed)
      os.makedirs(workdir)
      config = study.study_config(tiny, variant, seed, scale=1)
      with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(sort_keys=True))
      with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps({"step": step, "train/loss": 7.0 - step}) + "\n"
                     for step in (2, 4, 6))
      with open(os.path.join(workdir, "summary.json"), "w") as f:
        json.dump({"step": 6, "train/loss": 1.0}, f)


@pytest.fixture
def finished_study(one_seed_study):
  """The one-seed tiny study with both runs finished (written by `finish_runs`)."""
  finish_runs(one_seed_study)
  return one_seed_study


def test_outputs_are_replaced_whole_or_not_at_all(finished_study, tmp_path, monkeypatch):
  import matplotlib.figure

  out = tmp_path / "tiny"
  study.run_study(finished_study)
  before = {name: (out / name).read_bytes() for name in ("results.json", "RESULTS.md",
                                                          "train_loss.png")}
  assert json.loads(before["results.json"])["variants"]["adamw"]["seeds"]["0"]["train/loss"] == 1.0

  def crash(figure, path, **kwargs):
    with open(path, "wb") as f:
      f.write(b"\x89PNG cut off")
    raise OSError("No space left on device")

  monkeypatch.setattr(matplotlib.figure.Figure, "savefig", crash)
  with pytest.raises(OSError, match="No space left"):
    study.run_study(finished_study)
  monkeypatch.undo()
  # A value json cannot write, in the middle of results.json: it fails part way through.
  with open(finished_study, "a") as f:
    f.write("def extra_results(out_dir, scale):\n  return {'odd': {1, 2}}\n")
  with pytest.raises(TypeError, match="not JSON serializable"):
    study.run_study(finished_study)
  assert {name: (out / name).read_bytes() for name in before} == before
  assert not [name for name in os.listdir(out) if name.endswith(".tmp")]


def test_a_study_already_running_is_one_line_naming_its_process(finished_study, tmp_path,
                                                                softlab_cli):
  out = tmp_path / "tiny"
  with files.WorkdirLock(str(out), what="softlab ablate tiny"):
    code, _, err = softlab_cli("ablate", finished_study, "--force")
  assert code == 2
  assert err == (f"softlab: {out} is in use by process {os.getpid()} (softlab ablate tiny); wait"
                 " for it to finish or use another folder\n")
  assert (out / "runs" / "adamw" / "seed0" / "summary.json").exists()  # --force cleared nothing
  assert not (out / "results.json").exists()
  code, _, err = softlab_cli("ablate", finished_study)
  assert code == 0 and (out / "results.json").exists(), err


def test_a_finished_run_missing_its_history_is_rerun_from_scratch(finished_study, tmp_path,
                                                                 softlab_cli):
  runs = tmp_path / "tiny" / "runs"
  os.remove(runs / "adamw" / "seed0" / "metrics.jsonl")
  code, out, err = softlab_cli("ablate", finished_study)
  assert code == 0, err
  assert "2 runs (1 already done), 1 in parallel" in out
  assert f"adamw seed 0: {runs}/adamw/seed0/metrics.jsonl is missing; rerunning from scratch" in out
  results = json.loads((tmp_path / "tiny" / "results.json").read_text())
  assert results["variants"]["adamw"]["curves"]["train/loss"]["step"] == [2, 4, 6]
  assert results["variants"]["adamw"]["seeds"]["0"]["train/loss"] != 1.0  # trained again
  assert results["variants"]["perp_adamw"]["seeds"]["0"]["train/loss"] == 1.0  # kept


def test_a_cut_off_record_is_skipped_and_a_cut_off_summary_or_config_reruns_the_run(
    finished_study, tmp_path):
  tiny = study.load_study(finished_study)
  workdir = tmp_path / "tiny" / "runs" / "adamw" / "seed0"
  config = study.study_config(tiny, "adamw", 0, scale=1)
  with open(workdir / "metrics.jsonl", "a") as f:
    f.write('{"step": 8, "train/lo')  # a run killed while writing a record
  assert study.aggregate(tiny, scale=1)["variants"]["adamw"]["curves"]["train/loss"]["step"] == [
      2, 4, 6]
  assert study.restart_reason(tiny, str(workdir), config) is None
  assert study.run_finished(tiny, str(workdir))
  (workdir / "summary.json").write_text('{"step": 6, "train/lo')
  assert study.restart_reason(tiny, str(workdir), config).startswith(
      f"{workdir}/summary.json is not valid JSON")
  (workdir / "config.json").write_text("{")
  assert study.restart_reason(tiny, str(workdir), config).startswith(
      f"{workdir}/config.json is not valid JSON")
  os.remove(workdir / "metrics.jsonl")
  assert not study.run_finished(tiny, str(workdir))


WORKERS_PARENT = textwrap.dedent('''
    """A study's parent in miniature: two runs for one worker, then waiting to be ended."""
    import multiprocessing
    import os
    import signal
    import sys
    import time

    from softlab import study


    def interrupt(signum, frame):
      raise KeyboardInterrupt(signal.Signals(signum).name)


    def run(folder):
      """Notes its pid in `started`; on SIGTERM, as the training loop does, stops (`stopped`)."""
      signal.signal(signal.SIGTERM, interrupt)
      with open(os.path.join(folder, "started"), "a") as f:
        f.write(f"{os.getpid()}\\n")
      try:
        time.sleep(60)
      except KeyboardInterrupt as stop:
        with open(os.path.join(folder, "stopped"), "a") as f:
          f.write(f"{os.getpid()} {stop}\\n")
        raise


    if __name__ == "__main__":
      folder = sys.argv[1]
      if sys.argv[2] == "poll":  # the fallback where there is no prctl, on its own
        watcher = multiprocessing.get_context("spawn").Process(
            target=study._exit_when_parent_dies, args=(os.getpid(),))
        watcher.start()
        with open(os.path.join(folder, "started"), "w") as f:
          f.write(f"{watcher.pid}\\n")
        time.sleep(60)
      else:
        with study.interrupt_on_sigterm(), study.Workers(1) as workers:
          workers.submit(run, folder)
          workers.submit(run, folder)  # waits for the worker: must never start once ended
          time.sleep(60)
    ''')


def alive(pid: int) -> bool:
  """Whether process `pid` runs: it exists and is no zombie (dead, awaiting its new parent)."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except FileNotFoundError:
    return False


def wait_until(condition, timeout: float = 30.0) -> bool:
  deadline = time.monotonic() + timeout
  while not condition():
    if time.monotonic() > deadline:
      return False
    time.sleep(0.05)
  return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("mode, end", [
    ("workers", "kill -9 parent"), ("poll", "kill -9 parent"), ("workers", "SIGTERM parent"),
    ("workers", "Ctrl-C")])
def test_workers_end_with_their_parent(tmp_path, mode, end):
  script = tmp_path / "parent.py"
  script.write_text(WORKERS_PARENT)
  path = os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])
  parent = subprocess.Popen([sys.executable, str(script), str(tmp_path), mode],
                            env={**os.environ, "PYTHONPATH": path}, start_new_session=True,
                            stderr=subprocess.PIPE, text=True)
  started = tmp_path / "started"
  try:
    assert wait_until(lambda: started.exists() and started.read_text().endswith("\n"))
    worker = int(started.read_text())
    if end == "Ctrl-C":  # a terminal sends SIGINT to the whole process group
      os.killpg(parent.pid, signal.SIGINT)
    else:
      parent.send_signal(signal.SIGKILL if end == "kill -9 parent" else signal.SIGTERM)
    parent.wait(timeout=30)
    assert wait_until(lambda: not alive(worker), timeout=5), f"worker {worker} outlived {end}"
  finally:
    if parent.poll() is None:
      parent.kill()
      parent.wait()
  if end != "kill -9 parent":
    # The run stopped as on SIGTERM (the loop checkpoints there), once; the queued one never began.
    assert (tmp_path / "stopped").read_text() == f"{worker} SIGTERM\n"
    assert started.read_text() == f"{worker}\n"
    assert parent.stderr.read().rstrip().endswith("KeyboardInterrupt: signal 15" if end ==
                                                   "SIGTERM parent" else "KeyboardInterrupt")


def test_an_interrupted_ablate_is_one_line(tiny_study, monkeypatch, softlab_cli):
  def interrupted(*args, **kwargs):
    raise KeyboardInterrupt("signal 15")

  monkeypatch.setattr(study, "run_study", interrupted)
  assert softlab_cli("ablate", tiny_study) == (
      130, "", "softlab: ablate interrupted; its finished runs are kept and the next ablate"
               " resumes the others\n")


@pytest.mark.slow  # 40 s; the one-seed study tests below run, aggregate and rerun in the default suite
def test_study_runs_aggregates_skips_and_forces(tiny_study, tmp_path):
  results = study.run_study(tiny_study, workers=2)
  out = tmp_path / "tiny"
  assert {"results.json", "RESULTS.md", "train_loss.png"} <= set(os.listdir(out))
  assert sorted(os.listdir(out / "runs")) == ["adamw", "perp_adamw"]
  saved = json.loads((out / "results.json").read_text())
  assert saved["verdict"] == results["verdict"]
  assert results["verdict"]["status"] in study.STATUSES
  for variant in ("adamw", "perp_adamw"):
    numbers = saved["variants"][variant]
    assert set(numbers["seeds"]) == {"0", "1"}
    seeds = [numbers["seeds"][s]["train/loss"] for s in ("0", "1")]
    assert numbers["mean"]["train/loss"] == pytest.approx(sum(seeds) / 2)
    assert numbers["seeds"]["0"]["first_logged"] == 2
    assert numbers["curves"]["train/loss"]["step"] == [2, 4, 6]
  markdown = (out / "RESULTS.md").read_text()
  for text in ("Tiny grokking check", "**Claim tested:**", "softlab ablate", "## Verdict",
               "| perp_adamw |", "train/loss (paper)", "lower", "![train/loss](train_loss.png)"):
    assert text in markdown, text

  # Again from the command line: every run exists, so it only aggregates.
  summary = out / "runs" / "adamw" / "seed0" / "summary.json"
  stamp = os.path.getmtime(summary)
  result = subprocess.run([sys.executable, "-m", "softlab", "ablate", tiny_study],
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  assert "4 runs (4 already done)" in result.stdout and "verdict: " in result.stdout
  assert os.path.getmtime(summary) == stamp

  study.run_study(tiny_study, force=True, workers=2)
  assert os.path.getmtime(summary) > stamp


def test_ablate_list_and_errors(softlab_cli):
  code, out, _ = softlab_cli("ablate", "--list")
  assert code == 0
  assert "experiments/grokking.py: Grokking at the Edge of Numerical Stability" in out
  code, _, err = softlab_cli("ablate", "experiments/nope.py")
  assert code == 2 and "study file not found" in err


def test_run_made_with_another_config_is_rerun_from_scratch_with_progress_lines(
    one_seed_study, tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(study.StudyProgress, "__init__", functools.partialmethod(
      study.StudyProgress.__init__, interval=0.2))
  tiny = study.load_study(one_seed_study)
  stale = tmp_path / "tiny" / "runs" / "adamw" / "seed0"
  stale.mkdir(parents=True)
  config = study.study_config(tiny, "adamw", 0, scale=0.5)  # from `--scale 0.5`
  (stale / "config.json").write_text(config.to_json_best_effort(sort_keys=True))
  (stale / "summary.json").write_text(json.dumps({"step": 3, "train/loss": 1.0}))
  (stale / "stale.txt").write_text("from the old run")
  results = study.run_study(one_seed_study, workers=2)
  out = capsys.readouterr().out
  lines = out.splitlines()
  status = [line for line in lines if line.startswith("[") and " done] " in line]
  assert status and status[-1].startswith("[2/2 done]") and " | ETA " in status[-1], out
  finished = [line for line in lines if line.startswith(("[1/2] ", "[2/2] "))]
  assert len(finished) == 2 and all(" seed 0: " in line for line in finished), out
  assert "2 runs (0 already done)" in out
  assert "adamw seed 0: config changed (config.train.steps: 3 != 6); rerunning from scratch" in out
  assert not (stale / "stale.txt").exists()
  assert json.loads((stale / "summary.json").read_text())["step"] == 6
  assert results["variants"]["adamw"]["curves"]["train/loss"]["step"] == [2, 4, 6]


SCHEDULE_STUDY = textwrap.dedent('''
    TITLE, ARXIV, CLAIM = "Schedule check", "0000.00000", "none"
    BASE_CONFIG = {config!r}
    VARIANTS = {{"base": {{}}}}
    SEEDS = (0,)
    METRICS = {{}}

    def verdict(results):
      return "inconclusive", "nothing to check"
    ''')


@pytest.mark.parametrize("config, fields", [
    ("configs/lm/softmax.py", {"train.steps": 3000, "optimizer.warmup_steps": 200,
                               "optimizer.total_steps": 3000}),
    ("configs/ldr/ce.py", {"train.steps": 3800, "optimizer.boundaries": (1900, 2850)}),
])
def test_default_scale_stretches_the_learning_rate_schedule(tmp_path, config, fields):
  path = tmp_path / "schedule.py"
  path.write_text(SCHEDULE_STUDY.format(config=os.path.abspath(config)))
  schedule_study = study.load_study(str(path))
  base = study.study_config(schedule_study, "base", 0, scale=1)
  scaled = study.study_config(schedule_study, "base", 0, scale=2)
  for name, value in fields.items():
    section, key = name.split(".")
    assert scaled[section][key] == value, name
  old, new = optim.make_schedule(base.optimizer), optim.make_schedule(scaled.optimizer)
  steps = np.arange(0, base.train.steps, 7)
  np.testing.assert_allclose(new(2 * steps), old(steps), rtol=1e-6)
  tiny = study.study_config(schedule_study, "base", 0, scale=1e-3)
  optim.make_schedule(tiny.optimizer)  # rounding to a few steps keeps the schedule valid


def test_diverging_run_is_one_line_the_others_finish_and_diverged_keeps_it(tmp_path, diverging_npz, softlab_cli):
  diverging = {"data": {"name": "npz", "path": diverging_npz}, "model.use_bias": True}
  path = tmp_path / "tiny.py"
  path.write_text(STUDY.format(root=os.getcwd()) + "SEEDS = (0,)\n"
                  f"VARIANTS = {{'adamw': dict(_SMALL), 'diverges': {{**_SMALL, **{diverging!r}}}}}\n")
  code, out, err = softlab_cli("ablate", str(path), "--workers=2")
  assert code == 3, err
  assert err == ("softlab: 1 of 2 runs stopped on a non-finite loss (diverges seed 0);"
                           " the other runs are kept, no results written\n")
  assert "diverges seed 0: non-finite train/loss (nan) at step 1; last good" in out
  assert (tmp_path / "tiny" / "runs" / "adamw" / "seed0" / "summary.json").exists()
  assert not (tmp_path / "tiny" / "results.json").exists()

  # A study that declares `diverged` keeps such a run, with those numbers, and does not rerun it.
  with open(path, "a") as f:
    f.write("def diverged(history):\n"
            "  return {'train/loss': 99.0, 'first_logged': len(history)}\n"
            "def verdict(results):\n"
            "  return 'inconclusive', 'one run diverged'\n")
  code, out, err = softlab_cli("ablate", str(path), "--workers=1")
  assert code == 0, err
  assert "1 already done" in out and "(kept as diverged)" in out
  assert (tmp_path / "tiny" / "runs" / "diverges" / "seed0" / study.DIVERGED).exists()
  results = json.loads((tmp_path / "tiny" / "results.json").read_text())
  assert results["variants"]["diverges"]["seeds"]["0"]["train/loss"] == 99.0
  assert results["variants"]["adamw"]["seeds"]["0"]["train/loss"] < 99.0
  code, out, err = softlab_cli("ablate", str(path))
  assert code == 0 and "2 runs (2 already done)" in out, err


def test_progress_reads_each_running_runs_step_and_estimates_the_rest(tmp_path):
  runs = {("a", 0): (str(tmp_path / "a"), 100), ("b", 0): (str(tmp_path / "b"), 100),
          ("c", 0): (str(tmp_path / "c"), 100)}
  os.makedirs(tmp_path / "a")
  with open(tmp_path / "a" / "metrics.jsonl", "w") as f:
    f.write('{"step": 0}\n{"step": 40, "train/loss": 1.0}\n{"step": 50, "train/lo')  # cut off
  stream = io.StringIO()
  progress = study.StudyProgress(runs, interval=0.01, stream=stream)
  progress.start -= 10.0  # 10 s ago: 40 + 100 steps done -> 160 left at 14 steps/s
  progress.finish(("b", 0), "b seed 0: 9s")
  line = progress.refresh()
  assert line.startswith("[1/3 done] a seed 0: step 40/100 | ETA 0:00:1")
  assert "c seed 0" not in line  # not started yet
  assert int(line.rsplit(":", 1)[1]) == pytest.approx(160 / 14, abs=1)
  assert stream.getvalue().splitlines() == ["[1/3] b seed 0: 9s", line]
  progress.refresh()  # nothing changed: no new plain line
  assert len(stream.getvalue().splitlines()) == 2
  assert study.last_step(str(tmp_path / "missing.jsonl")) == 0


def test_progress_marks_early_stopping_runs_totals_and_the_eta_as_bounds(tmp_path):
  runs = {("a", 0): (str(tmp_path / "a"), 100), ("b", 0): (str(tmp_path / "b"), 100)}
  os.makedirs(tmp_path / "a")
  with open(tmp_path / "a" / "metrics.jsonl", "w") as f:
    f.write('{"step": 0}\n{"step": 40}\n')
  progress = study.StudyProgress(runs, interval=0.01, stream=io.StringIO(), capped={("a", 0)})
  assert progress.refresh().startswith("[0/2 done] a seed 0: step 40/<=100 | ETA <= 0:")
  progress.finish(("a", 0), "a seed 0: stopped early")
  assert " | ETA <=" not in progress.refresh()


DEPENDENT_STUDY = textwrap.dedent('''
    from softlab.study import RunOf
    TITLE, ARXIV, CLAIM = "Dependency check", "0000.00000", "none"
    BASE_CONFIG = {config!r}
    VARIANTS = {{"tuned": {{"linearize": dict(from_workdir=RunOf("base"), stage="lora")}},
                "base": {{}}, "later": {{"linearize": dict(from_workdir=RunOf("tuned"))}}}}
    SEEDS = (0, 3)
    METRICS = {{}}

    def verdict(results):
      return "inconclusive", "nothing to check"
    ''')


def test_run_of_gives_another_runs_workdir_and_orders_the_runs(tmp_path):
  path = tmp_path / "chain.py"
  path.write_text(DEPENDENT_STUDY.format(config=os.path.abspath("configs/lm/softmax.py")))
  chain = study.load_study(str(path))
  assert study.waves(chain) == [["base"], ["tuned"], ["later"]]
  config = study.study_config(chain, "tuned", 3, scale=1)
  assert config.linearize.from_workdir == str(tmp_path / "chain" / "runs" / "base" / "seed3")
  assert config.linearize.stage == "lora" and config.seed == 3
  chain.VARIANTS["base"] = {"x": study.RunOf("later")}
  with pytest.raises(ValueError, match="cycle among tuned, base, later"):
    study.waves(chain)
  chain.VARIANTS["base"] = {"x": study.RunOf("nope")}
  with pytest.raises(ValueError, match="RunOf of unknown variant"):
    study.waves(chain)
