"""The ablation runner: a study's variants x seeds -> runs -> table, plots, verdict.

A study file (experiments/<study>.py) declares:
  TITLE, ARXIV        the paper
  CLAIM               the claim being tested, one sentence
  BASE_CONFIG         a config file, relative to the study file
  VARIANTS            name -> {dotted config path: value} overrides
  SEEDS               seeds every variant runs with
  METRICS             {key: description} reported in the table (summary keys or
                      keys computed by `analyze`)
  verdict(results)    -> (status, explanation); status is "supported",
                      "not supported" or "inconclusive", computed from the numbers
and optionally:
  PAPER               variant -> {metric key: the paper's number}
  PLOTS               metric keys to plot against step, one line per variant
  scale(config, factor) -> config for `--scale` (default: `scale_steps`, train.steps
                      and the optimizer's step counts * factor)
  analyze(history)    -> extra per-run numbers from the metrics.jsonl records
  extra_results(out_dir, scale) -> dict of results that need no training run
                      (analytic parts), stored under results["extra"]; its
                      "markdown" entry goes into RESULTS.md
  report(results)     -> markdown of study-specific tables for RESULTS.md
  diverged(history)   -> the numbers of a run stopped by a non-finite loss (from
                      the metrics.jsonl records before the stop), for studies
                      where diverging is an outcome (e.g. an unbounded loss
                      under label noise); without it such a run fails the study

A variant may start from another's run: a config value `RunOf("base")` becomes
the workdir of variant "base"'s run with the same seed (e.g.
`"linearize": dict(from_workdir=RunOf("base"), ...)`). Such runs wait for the runs they
name, and rerun whenever those rerun.

`run_study` runs every missing (variant, seed) in parallel processes (the
parent shows their progress: each running run's step, runs done / total and an
ETA, read from the runs' metrics.jsonl), then writes experiments/<study>/results.json, RESULTS.md and <metric>.png. A run
whose config.json differs from the config the study gives it now (another
--scale, edited VARIANTS) is rerun from scratch, with a one-line notice, as is
one whose config.json or summary.json is not valid JSON or that finished
without its metrics.jsonl (see `restart_reason`). A run stopped by a non-finite
loss is reported and the others go on; the study then raises
FloatingPointError without writing results, unless it declares `diverged`:
then the run is kept as diverged (DIVERGED in its workdir holds the error) and
`diverged(history)` gives its numbers.

While it runs, the study's folder experiments/<study>/ is locked: a second
`softlab ablate` of the same study stops at once with one line naming the
first's process. Its outputs are replaced atomically (softlab.files). No worker
outlives the study (`Workers`): a killed parent takes its workers along, and
Ctrl-C or SIGTERM stops the running runs as Ctrl-C stops `softlab train` (the
next ablate resumes them from their checkpoints) and starts no queued one.
"""

import concurrent.futures
import contextlib
import ctypes
import dataclasses
import importlib.util
import json
import math
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping

import numpy as np

from softlab import files
from softlab.config import as_json, first_difference, load_config, override

STATUSES = ("supported", "not supported", "inconclusive")
REQUIRED = ("TITLE", "ARXIV", "CLAIM", "BASE_CONFIG", "VARIANTS", "SEEDS", "METRICS", "verdict")


@dataclasses.dataclass(frozen=True)
class RunOf:
  """A config value in VARIANTS: the workdir of `variant`'s run with the same seed."""

  variant: str


def _resolve(value, seed: int, study):
  """`value` with every RunOf in it (nested dicts included) replaced by that run's workdir."""
  if isinstance(value, RunOf):
    return run_dir(study, value.variant, seed)
  if isinstance(value, Mapping):
    return {key: _resolve(item, seed, study) for key, item in value.items()}
  return value


def _run_refs(value):
  if isinstance(value, RunOf):
    yield value.variant
  elif isinstance(value, Mapping):
    for item in value.values():
      yield from _run_refs(item)


def dependencies(study, variant: str) -> set[str]:
  """The variants whose runs `variant` starts from (its RunOf values)."""
  return set(_run_refs(study.VARIANTS[variant]))


def waves(study) -> list[list[str]]:
  """The variants in groups, each group's dependencies all in earlier groups."""
  for variant in study.VARIANTS:
    unknown = dependencies(study, variant) - set(study.VARIANTS)
    if unknown:
      raise ValueError(f"{study.NAME}: variant {variant!r} uses RunOf of unknown variant(s) "
                       f"{', '.join(sorted(unknown))}")
  ordered, done = [], set()
  while len(done) < len(study.VARIANTS):
    ready = [v for v in study.VARIANTS if v not in done and dependencies(study, v) <= done]
    if not ready:
      raise ValueError(f"{study.NAME}: RunOf dependencies form a cycle among "
                       f"{', '.join(v for v in study.VARIANTS if v not in done)}")
    ordered.append(ready)
    done.update(ready)
  return ordered


def load_study(path: str):
  """The study module at `path`, checked for the required declarations."""
  if not os.path.isfile(path):
    raise ValueError(f"study file not found: {path}")
  name = os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(f"softlab_study_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  missing = [k for k in REQUIRED if not hasattr(module, k)]
  if missing:
    raise ValueError(f"study {path} lacks {', '.join(missing)}")
  module.NAME, module.PATH = name, os.path.abspath(path)
  return module


def list_studies(directory: str = "experiments") -> list[tuple[str, str]]:
  """(path, title) of every study file in `directory`."""
  if not os.path.isdir(directory):
    return []
  found = []
  for entry in sorted(os.listdir(directory)):
    if entry.endswith(".py") and not entry.startswith("_"):
      path = os.path.join(directory, entry)
      found.append((path, load_study(path).TITLE))
  return found


def study_config(study, variant: str, seed: int, scale: float):
  """The full config of one run."""
  base = load_config(os.path.join(os.path.dirname(study.PATH), study.BASE_CONFIG))
  config = override(base, {**_resolve(study.VARIANTS[variant], seed, study), "seed": seed})
  if scale != 1:
    config = study.scale(config, scale) if hasattr(study, "scale") else scale_steps(config, scale)
  return config


def scale_steps(config, factor: float):
  """`config` trained `factor` times as many steps, its learning-rate schedule stretched to match.

  Besides train.steps, the schedule's fields counted in optimizer steps
  (warmup_steps, the cosine's total_steps, the step schedule's boundaries)
  scale too: left alone, a longer run would train at lr 0 past the old total
  or decay at the old points.
  """
  times = lambda steps: int(round(steps * factor))
  optimizer = config.optimizer
  warmup = times(optimizer.get("warmup_steps", 0))
  updates = {"train.steps": max(1, times(config.train.steps))}
  if "warmup_steps" in optimizer:
    updates["optimizer.warmup_steps"] = warmup
  if optimizer.get("total_steps"):
    updates["optimizer.total_steps"] = max(warmup + 1, times(optimizer.total_steps))
  if optimizer.get("boundaries"):
    updates["optimizer.boundaries"] = increasing([times(b) for b in optimizer.boundaries])
  return override(config, updates)


def increasing(steps: list[int]) -> tuple[int, ...]:
  """`steps` moved up as little as needed to be increasing and positive (rounding may tie them)."""
  moved = []
  for step in steps:
    moved.append(max(step, moved[-1] + 1 if moved else 1))
  return tuple(moved)


def output_dir(study) -> str:
  return os.path.splitext(study.PATH)[0]


def run_dir(study, variant: str, seed: int) -> str:
  return os.path.join(output_dir(study), "runs", variant, f"seed{seed}")


def _train_in_fresh_process(config_json: str, workdir: str, threads: int) -> float:
  """Worker body: one training run; one thread for matrix products when threads = 1.

  A run asking for `train.num_devices` > 1 gets that many host devices
  (simulated on a CPU-only machine), so a study can include a sharded variant.
  """
  config = json.loads(config_json)
  flags = [] if threads > 1 else ["--xla_cpu_multi_thread_eigen=false"]
  devices = config["train"].get("num_devices") or 1
  if devices > 1:
    flags.append(f"--xla_force_host_platform_device_count={devices}")
  os.environ["XLA_FLAGS"] = " ".join(flags)
  import ml_collections

  from softlab.trainers import loop

  start = time.perf_counter()
  loop.train(ml_collections.ConfigDict(config), workdir, show_progress=False)
  return time.perf_counter() - start


END_GRACE_S = 30.0  # how long `Workers.end` lets interrupted runs save a checkpoint
PARENT_POLL_S = 0.5  # without prctl: how often a worker checks that its parent lives
PR_SET_PDEATHSIG = 1  # prctl option, <linux/prctl.h>
_stopping = None  # in a worker: the Workers' `stopping` event (set by `_start_worker`)


class Workers:
  """The processes a study's runs train in: spawned, one run each, none outliving the study.

  A worker ends when the process that started it ends, however it ends
  (kill -9 included; see `_start_worker`). Leaving the `with` block on an
  exception (Ctrl-C, SIGTERM under `interrupt_on_sigterm`, an error) ends the
  workers first (`end`) instead of waiting for every queued run to train.
  """

  def __init__(self, count: int):
    context = multiprocessing.get_context("spawn")
    self.stopping = context.Event()
    self.pool = concurrent.futures.ProcessPoolExecutor(
        count, mp_context=context, max_tasks_per_child=1, initializer=_start_worker,
        initargs=(os.getpid(), self.stopping))

  def submit(self, fn, *args) -> concurrent.futures.Future:
    """`fn(*args)` in a worker; its result is None if the study ends before it starts."""
    return self.pool.submit(_unless_stopping, fn, *args)

  def end(self, grace: float = END_GRACE_S) -> None:
    """Stops every run now: queued ones never start, running ones stop at their next step.

    Running workers get SIGTERM, which the training loop treats like Ctrl-C
    (it keeps its last completed step when it can; the next ablate resumes from
    the latest checkpoint); those still alive after `grace` seconds, or after
    another interrupt, get SIGKILL.
    """
    self.stopping.set()
    # pid -> Process, kept current by the pool; no public view of it before Python 3.14.
    processes = self.pool._processes
    for process in list(processes.values()):
      process.terminate()
    deadline = time.monotonic() + grace
    try:
      for process in list(processes.values()):
        process.join(max(0.0, deadline - time.monotonic()))
    finally:
      for process in list(processes.values()):
        process.kill()

  def __enter__(self):
    return self

  def __exit__(self, kind, error, traceback):
    try:
      if kind is not None:
        self.end()
    finally:
      self.pool.shutdown(cancel_futures=kind is not None)


def _start_worker(parent: int, stopping) -> None:
  """Worker initializer: the worker ends with its parent, and leaves Ctrl-C to the parent.

  On Linux the kernel sends SIGKILL when the parent dies (PR_SET_PDEATHSIG;
  strictly, when the thread that started the worker ends: the study's thread
  or the pool's manager thread, which both outlive their workers); elsewhere a
  daemon thread polls the parent's pid. A terminal's Ctrl-C reaches every
  process of the group: workers ignore it and the parent ends them
  (`Workers.end`), so each run is stopped once, by SIGTERM.
  """
  global _stopping
  _stopping = stopping
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  if not _kill_when_parent_dies():
    threading.Thread(target=_exit_when_parent_dies, args=(parent,), daemon=True).start()
  if os.getppid() != parent:  # it died before the request above
    os._exit(1)


def _kill_when_parent_dies() -> bool:
  """Asks Linux for SIGKILL when this process's parent dies; False without prctl."""
  prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)
  return prctl is not None and prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL)) == 0


def _exit_when_parent_dies(parent: int) -> None:
  """Returns never: exits this process once `parent` is no longer its parent."""
  while os.getppid() == parent:
    time.sleep(PARENT_POLL_S)
  os._exit(1)


def _unless_stopping(fn, *args):
  """Worker side of `Workers.submit`: `fn(*args)`, or None once the study is ending."""
  return None if _stopping.is_set() else fn(*args)


@contextlib.contextmanager
def interrupt_on_sigterm():
  """SIGTERM raises KeyboardInterrupt, as Ctrl-C does, so a study ends its workers first.

  Python runs signal handlers in the main thread only; elsewhere this does nothing.
  """
  if threading.current_thread() is not threading.main_thread():
    yield
    return

  def interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")

  previous = signal.signal(signal.SIGTERM, interrupt)
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, previous)


def run_study(path: str, *, force: bool = False, scale: float = 1.0,
              workers: int | None = None) -> dict:
  """Runs the study's missing runs, aggregates them and writes its outputs.

  The study's output folder stays locked meanwhile (softlab.files.WorkdirLock):
  a second `softlab ablate` of the same study would train the same runs at
  once, their records interleaved in the runs' metrics.jsonl; it gets a
  FileError naming this process instead.
  """
  study = load_study(path)
  os.makedirs(output_dir(study), exist_ok=True)
  with files.WorkdirLock(output_dir(study), what=f"softlab ablate {study.NAME}"):
    return _run_study(study, force=force, scale=scale, workers=workers)


def _run_study(study, *, force: bool, scale: float, workers: int | None) -> dict:
  configs = {(v, s): study_config(study, v, s, scale) for v in study.VARIANTS for s in study.SEEDS}
  restarts = {run: reason for run, config in configs.items()
              if (reason := restart_reason(study, run_dir(study, *run), config))}
  todo = [run for run in configs
          if force or run in restarts or not run_finished(study, run_dir(study, *run))]
  for group in waves(study):  # a run whose starting run reruns reruns too
    for variant in group:
      for seed in study.SEEDS:
        if (variant, seed) not in todo and any((v, seed) in todo
                                               for v in dependencies(study, variant)):
          todo.append((variant, seed))
          restarts.setdefault((variant, seed), "a run it starts from reruns")
  workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
  threads = max(1, (os.cpu_count() or 1) // workers)
  print(f"{study.NAME}: {len(configs)} runs ({len(configs) - len(todo)} already done), "
        f"{workers} in parallel", flush=True)
  for (variant, seed), reason in restarts.items():
    print(f"{variant} seed {seed}: {reason}; rerunning from scratch", flush=True)
  for run in todo:
    if force or run in restarts:
      clear_run(run_dir(study, *run))
  failed = []
  progress = StudyProgress({run: (run_dir(study, *run), configs[run].train.steps) for run in todo},
                           capped={run for run in todo if configs[run].train.get("early_stop")})
  with interrupt_on_sigterm(), contextlib.closing(progress), Workers(workers) as pool:
    futures, pending, done, broken = {}, set(), set(), set()
    waiting = list(todo)
    while waiting or pending:
      for run in list(waiting):
        starts_from = {(v, run[1]) for v in dependencies(study, run[0])} & set(todo)
        if starts_from & broken:
          waiting.remove(run)
          broken.add(run)
          failed.append(f"{run[0]} seed {run[1]} (a run it starts from failed)")
        elif starts_from <= done:
          waiting.remove(run)
          future = pool.submit(_train_in_fresh_process, configs[run].to_json_best_effort(),
                               run_dir(study, *run), threads)
          futures[future] = run
          pending.add(future)
      finished, pending = concurrent.futures.wait(
          pending, timeout=progress.interval, return_when=concurrent.futures.FIRST_COMPLETED)
      for future in finished:
        variant, seed = futures[future]
        try:
          outcome = f"{future.result():.0f}s"
          done.add((variant, seed))
        except FloatingPointError as error:
          outcome = str(error)
          if hasattr(study, "diverged"):
            files.write_json(os.path.join(run_dir(study, variant, seed), DIVERGED),
                             {"error": outcome})
            done.add((variant, seed))
            outcome += " (kept as diverged)"
          else:
            failed.append(f"{variant} seed {seed}")
            broken.add((variant, seed))
        progress.finish(futures[future], f"{variant} seed {seed}: {outcome}")
      progress.refresh()
  if failed:
    raise FloatingPointError(
        f"{len(failed)} of {len(todo)} runs stopped on a non-finite loss ({', '.join(failed)});"
        " the other runs are kept, no results written")
  results = aggregate(study, scale)
  results["command"] = f"softlab ablate {os.path.relpath(study.PATH)}" + (
      f" --scale={scale:g}" if scale != 1 else "")
  if hasattr(study, "extra_results"):
    results["extra"] = study.extra_results(output_dir(study), scale)
  status, explanation = study.verdict(results)
  if status not in STATUSES:
    raise ValueError(f"{study.NAME}.verdict returned {status!r}; valid: {', '.join(STATUSES)}")
  results["verdict"] = {"status": status, "explanation": explanation}
  write_outputs(study, results)
  print(f"verdict: {status.upper()} - {explanation}")
  return results


def last_step(metrics_path: str) -> int:
  """The step of the last complete record in a metrics.jsonl (0 if none), from its tail."""
  try:
    with open(metrics_path, "rb") as f:
      offset = max(0, f.seek(0, os.SEEK_END) - 65536)
      f.seek(offset)
      lines = f.read().decode(errors="replace").split("\n")
  except FileNotFoundError:
    return 0
  # The first line may be cut by the offset, the last has no newline yet (or is empty).
  for line in reversed(lines[1 if offset else 0:-1]):
    try:
      return int(json.loads(line)["step"])
    except (ValueError, KeyError):
      continue
  return 0


class StudyProgress:
  """What a study's parent process shows while its runs train in workers.

  `refresh()` reads each unfinished run's step from its metrics.jsonl and
  shows "[done/total] <variant seed>: step s/S, ... | ETA"; on a terminal a
  tqdm bar over all runs' steps, otherwise a plain line every `interval`
  seconds when something changed. `finish(run, text)` prints a finished run.
  Runs in `capped` may stop early (config.train.early_stop): their S is a cap,
  shown "step s/<=S", and while one is unfinished the ETA is an upper bound
  ("ETA <= ...").
  """

  def __init__(self, runs: Mapping, *, interval: float | None = None, stream=None,
               capped=frozenset()):
    self.runs = dict(runs)  # run -> (workdir, total steps)
    self.capped = set(capped)
    self.stream = stream or sys.stdout
    self.tty = self.stream.isatty()
    self.interval = interval if interval is not None else (1.0 if self.tty else 30.0)
    self.done: dict = {}
    self.steps = {run: 0 for run in self.runs}
    self.start = time.perf_counter()
    self.shown = None
    self.bar = None
    if self.tty and self.runs:
      from tqdm import tqdm

      self.bar = tqdm(total=sum(total for _, total in self.runs.values()), unit="step",
                      dynamic_ncols=True, file=self.stream)

  def finish(self, run, text: str) -> None:
    self.done[run] = True
    self.steps[run] = self.runs[run][1]
    message = f"[{len(self.done)}/{len(self.runs)}] {text}"
    if self.bar is not None:
      self.bar.write(message)
    else:
      print(message, file=self.stream, flush=True)

  def refresh(self) -> str:
    """Reads the runs' steps and shows the status line (returned)."""
    for run, (workdir, _) in self.runs.items():
      if run not in self.done:
        self.steps[run] = last_step(os.path.join(workdir, "metrics.jsonl"))
    line = self.status()
    if self.bar is not None:
      self.bar.update(sum(self.steps.values()) - self.bar.n)
      self.bar.set_postfix_str(line, refresh=True)
    elif line != self.shown:
      print(line, file=self.stream, flush=True)
    self.shown = line
    return line

  def status(self) -> str:
    cap = lambda run: "<=" if run in self.capped else ""
    running = [f"{run[0]} seed {run[1]}: step {self.steps[run]}/{cap(run)}{total}"
               for run, (_, total) in self.runs.items()
               if run not in self.done and self.steps[run] > 0]
    bound = "<= " if any(run not in self.done for run in self.capped) else ""
    return (f"[{len(self.done)}/{len(self.runs)} done] " + ("; ".join(running) or "starting")
            + f" | ETA {bound}{self.eta()}")

  def eta(self) -> str:
    """Remaining steps at the rate seen since the first progress ('?' before any)."""
    progressed = sum(self.steps.values())
    remaining = sum(total for _, total in self.runs.values()) - progressed
    if progressed == 0:
      return "?"
    rate = progressed / max(time.perf_counter() - self.start, 1e-9)
    seconds = int(remaining / rate)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()


def config_change(workdir: str, config) -> str | None:
  """How `config` differs from the config.json of the run in `workdir` ('config.a: old != new').

  None when they match or the workdir holds no run; a FileError if its
  config.json is not valid JSON.
  """
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return None
  return first_difference(files.read_json(path), as_json(config))


DIVERGED = "diverged.json"
HISTORY = "metrics.jsonl"  # the run's records, one JSON object per logged step


def restart_reason(study, workdir: str, config) -> str | None:
  """Why the run in `workdir` must rerun from scratch, in words; None to keep or resume it.

  A run made with another config, one whose config.json or summary.json is not
  valid JSON, and a finished one (summary.json or DIVERGED) whose metrics.jsonl
  is gone: resuming would keep the damage (the loop hands a finished run's
  summary back as it is, and its history cannot be rebuilt).
  """
  try:
    difference = config_change(workdir, config)
    if difference:
      return f"config changed ({difference})"
    if _has(workdir, "summary.json"):
      files.read_json(os.path.join(workdir, "summary.json"))
  except files.FileError as error:
    return str(error)
  if (_has(workdir, "summary.json") or _has(workdir, DIVERGED)) and not _has(workdir, HISTORY):
    return f"{os.path.join(workdir, HISTORY)} is missing"
  return None


def run_finished(study, workdir: str) -> bool:
  """The run has its outputs: metrics.jsonl, and a summary or a kept diverged record."""
  return _has(workdir, HISTORY) and (
      _has(workdir, "summary.json") or (hasattr(study, "diverged") and _has(workdir, DIVERGED)))


def _has(workdir: str, name: str) -> bool:
  return os.path.exists(os.path.join(workdir, name))


def run_numbers(study, workdir: str, history: list[dict]) -> dict:
  """A run's numbers: its summary with `analyze`'s, or `diverged`'s for a diverged run."""
  if not os.path.exists(os.path.join(workdir, "summary.json")):
    return study.diverged(history)
  numbers = files.read_json(os.path.join(workdir, "summary.json"))
  if hasattr(study, "analyze"):
    numbers.update(study.analyze(history))
  return numbers


def clear_run(workdir: str) -> None:
  """Removes a previous run's outputs so a forced or changed run starts from scratch."""
  import shutil

  if os.path.isdir(workdir):
    shutil.rmtree(workdir)


def aggregate(study, scale: float) -> dict:
  """Per-variant numbers per seed, their mean and std, and mean curves."""
  from softlab.trainers.reporting import read_records  # imports jax, as config_change does

  variants = {}
  for variant in study.VARIANTS:
    per_seed = {}
    histories = []
    for seed in study.SEEDS:
      workdir = run_dir(study, variant, seed)
      history = read_records(os.path.join(workdir, HISTORY))
      numbers = run_numbers(study, workdir, history)
      per_seed[str(seed)] = {k: numbers.get(k) for k in study.METRICS}
      histories.append(history)
    variants[variant] = {
        "overrides": {k: _jsonable(v) for k, v in study.VARIANTS[variant].items()},
        "seeds": per_seed,
        "mean": {k: _mean([s[k] for s in per_seed.values()]) for k in study.METRICS},
        "std": {k: _std([s[k] for s in per_seed.values()]) for k in study.METRICS},
        "curves": mean_curves(histories, getattr(study, "PLOTS", ())),
    }
  return {"study": study.NAME, "title": study.TITLE, "arxiv": study.ARXIV, "claim": study.CLAIM,
          "scale": scale, "seeds": list(study.SEEDS), "metrics": dict(study.METRICS),
          "paper": getattr(study, "PAPER", {}), "variants": variants}


def _jsonable(value):
  if isinstance(value, RunOf):
    return f"run of {value.variant}"
  if isinstance(value, Mapping):
    return {key: _jsonable(item) for key, item in value.items()}
  return list(value) if isinstance(value, tuple) else value


def _finite(values):
  return [v for v in values if v is not None and math.isfinite(v)]


def _mean(values):
  values = _finite(values)
  return float(np.mean(values)) if values else None


def _std(values):
  values = _finite(values)
  return float(np.std(values)) if values else None


def mean_curves(histories: list[list[dict]], keys) -> dict:
  """key -> {"step": [...], "mean": [...]} over the steps every seed logged."""
  curves = {}
  for key in keys:
    series = [{r["step"]: r[key] for r in h if key in r} for h in histories]
    steps = sorted(set.intersection(*(set(s) for s in series))) if series else []
    curves[key] = {"step": steps, "mean": [float(np.mean([s[t] for s in series])) for t in steps]}
  return curves


def format_number(value) -> str:
  if value is None:
    return "n/a"
  if isinstance(value, str):
    return value
  return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3g}"


def results_table(results: Mapping) -> str:
  """Markdown: one row per variant, ours (mean ± std) beside the paper's number."""
  keys = list(results["metrics"])
  header = ["variant"] + [f"{k} (ours)" if _has_paper(results, k) else k for k in keys]
  for key in keys:
    if _has_paper(results, key):
      header.insert(header.index(f"{key} (ours)") + 1, f"{key} (paper)")
  rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for variant, numbers in results["variants"].items():
    cells = [variant]
    for key in keys:
      mean, std = numbers["mean"][key], numbers["std"][key]
      spread = f" ± {format_number(std)}" if len(results["seeds"]) > 1 and mean is not None else ""
      cells.append(format_number(mean) + spread)
      if _has_paper(results, key):
        cells.append(format_number(results["paper"].get(variant, {}).get(key)))
    rows.append("| " + " | ".join(cells) + " |")
  return "\n".join(rows)


def _has_paper(results, key) -> bool:
  return any(key in numbers for numbers in results["paper"].values())


def write_outputs(study, results: dict) -> None:
  """results.json, one PNG per plotted metric, and RESULTS.md, each replaced atomically.

  A crash or kill while writing leaves each file as it was or complete, never
  cut off (results.json and RESULTS.md are committed beside the study).
  """
  out = output_dir(study)
  os.makedirs(out, exist_ok=True)
  files.write_json(os.path.join(out, "results.json"), results)
  plots = [plot_curves(results, key, out) for key in getattr(study, "PLOTS", ())]
  lines = [
      f"# {study.TITLE}",
      "",
      f"Paper: {study.TITLE} (arXiv:{study.ARXIV}).",
      "",
      f"**Claim tested:** {study.CLAIM}",
      "",
      f"**Command:** `{results['command']}` (seeds {', '.join(map(str, study.SEEDS))}; "
      f"scale {results['scale']:g})",
      "",
      f"## Verdict: {results['verdict']['status']}",
      "",
      results["verdict"]["explanation"],
      "",
      "## Results",
      "",
      "Mean ± std over seeds. " + "; ".join(f"`{k}`: {d}" for k, d in study.METRICS.items()) + ".",
      "",
      results_table(results),
      "",
  ]
  if results.get("extra", {}).get("markdown"):
    lines += [results["extra"]["markdown"], ""]
  if hasattr(study, "report"):
    lines += [study.report(results), ""]
  if plots:
    lines += ["## Plots", ""] + [f"![{key}]({name})" for key, name in plots] + [""]
  lines += ["## Variants", "", f"Base config: `{study.BASE_CONFIG}` (relative to the study).", ""]
  for variant, numbers in results["variants"].items():
    overrides = ", ".join(f"`{k}={v}`" for k, v in numbers["overrides"].items()) or "base config"
    lines.append(f"- **{variant}**: {overrides}")
  files.write_text(os.path.join(out, "RESULTS.md"), "\n".join(lines) + "\n")


def plot_curves(results: Mapping, key: str, out: str) -> tuple[str, str]:
  """One line per variant of `key` against step; returns (key, file name)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  figure, axes = plt.subplots(figsize=(6.4, 4.0))
  for variant, numbers in results["variants"].items():
    curve = numbers["curves"].get(key, {})
    if curve.get("step"):
      axes.plot(curve["step"], curve["mean"], label=variant)
  axes.set_xlabel("step")
  axes.set_ylabel(key)
  axes.set_title(f"{results['study']}: {key}")
  axes.legend(fontsize="small")
  figure.tight_layout()
  name = key.replace("/", "_") + ".png"
  with files.replacing(os.path.join(out, name)) as temporary:
    figure.savefig(temporary, dpi=110, format="png")  # the temporary name has no .png
  plt.close(figure)
  return key, name
