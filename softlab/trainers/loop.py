"""The generic training loop every experiment trainer runs.

Top-level pieces, each callable on its own (tests run one `train_step`):
  setup(config)                   config -> mesh -> data -> model & optimizer -> evaluators
  init_state(run)                 fresh train state, replicated but for Experiment.param_specs
  train_step(run, state, batch)   one optimizer step -> (state, weighted metric sums)
  step_functions(run, state)      train_step jitted, the state donated and kept in place
  eval_step(evaluator, state, batch)  one evaluation batch -> weighted metric sums
  evaluate(run, state, step)      every evaluator due at `step` -> metrics
  restore_or_init(run, checkpoints)   the newest checkpoint that verifies, or a fresh state
`train` runs them: restore -> loop (log, eval, checkpoint) -> final summary;
`config.train.early_stop` (EarlyStop) ends a run before train.steps when an
evaluation metric stops improving or reaches a target.
Experiment trainers (classification, lm, contrastive) only say how a batch
becomes a loss and predictions; evaluators (`config.evals`) turn predictions
into metrics. Train and eval metrics share one convention: weighted sums over
the real examples plus their total weight, divided on the host.

The host never waits for the device between log steps: the loss of each step
stays on the device until the next log, evaluation or checkpoint step, where a
non-finite loss stops the run naming its first bad step; a checkpoint is
written only for a state whose every value is finite (`checkpoints`).

Nothing a run has is lost to a fault: one process holds the workdir (an OS
lock), config.json and summary.json are replaced atomically, metrics.jsonl is
only appended to (a resume cuts the lines past its checkpoint in place), and
SIGTERM / Ctrl-C end the step in flight, save it and raise `Interrupted`.
"""

import contextlib
import dataclasses
import functools
import math
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from softlab import data, evaluators, files, optim
from softlab.config import as_json, first_difference
from softlab.evaluators.common import means, weighted_sums
from softlab.experiment import ConfigError, Experiment
from softlab.trainers.base import REGISTRY, building, field, integer, lookup
from softlab.trainers.checkpoints import Checkpoints
from softlab.trainers.reporting import MetricsWriter, Progress, read_records
from softlab.trainers import warm_start
from softlab.sharding import make_mesh, shard, to_host

TIMING_KEYS = ("train/steps_per_second",)
# Every field config.train may hold; anything else is a typo.
TRAIN_FIELDS = ("steps", "batch_size", "eval_batch_size", "log_every", "eval_every",
                "checkpoint_every", "dtype", "num_devices", "x64", "early_stop", "init_from",
                "init_fresh", "trainable")
EARLY_STOP_FIELDS = ("metric", "mode", "patience", "min_delta", "target")
EARLY_STOP_MODES = ("max", "min")
TOP_FIELDS = ("trainer", "seed", "data", "model", "loss", "optimizer", "train", "evals",
              "eval_model", "linearize")


@dataclasses.dataclass(frozen=True)
class Run:
  """Everything built from a config that the steps need."""

  config: Any
  experiment: Experiment
  dataset: data.Dataset
  mesh: Any
  tx: optax.GradientTransformation
  schedule: Callable
  evaluators: Mapping[str, evaluators.Evaluator]
  seed: int
  steps: int
  log_every: int
  eval_every: int
  checkpoint_every: int


def x64_enabled(config) -> bool:
  """config.train.x64: the one switch for 64-bit JAX (float64 dtypes need it)."""
  train = field(config, "train")
  enabled = train.get("x64", False)
  if not isinstance(enabled, bool):
    raise ConfigError(f"config.train.x64 must be True or False, got {enabled!r}")
  for path in ("train.dtype", "loss.dtype"):
    section, _, key = path.partition(".")
    if config.get(section, {}).get(key) == "float64" and not enabled:
      raise ConfigError(f"config.{path}=float64 needs config.train.x64=True")
  return enabled


def check_fields(config) -> None:
  """A field the loop does not know at the top level, in config.train or in
  config.train.early_stop is a typo."""
  for path, node, valid in (("config", config, TOP_FIELDS),
                            ("config.train", field(config, "train"), TRAIN_FIELDS)):
    for key in node:
      if key not in valid:
        raise ConfigError(f"{path}.{key} names a field the config does not have; valid: "
                          f"{', '.join(valid)}")
  early_stop(config)


class EarlyStop:
  """config.train.early_stop: ends a run when an evaluation metric stops improving.

  Fields: `metric` (an evaluation metric, e.g. "test/accuracy"), `mode` ("max":
  higher is better, the default; "min"), `patience` (evaluations), `min_delta`
  (default 0), `target`; at least one of patience and target. Checked at every
  evaluation that reports `metric` (step 0's included): a value better than the
  best so far by more than min_delta is an improvement; the run stops after
  `patience` evaluations in a row without one, or as soon as the metric reaches
  `target`. The stop step gets a full evaluation and a checkpoint, and
  summary.json says why the run ended ("stop_reason"). The state is a function
  of the evaluations alone, so a resumed run rebuilds it from metrics.jsonl.
  """

  def __init__(self, *, metric: str, mode: str = "max", patience: int | None = None,
               min_delta: float = 0.0, target: float | None = None):
    self.metric, self.mode, self.patience = metric, mode, patience
    self.min_delta, self.target = min_delta, target
    self.best, self.best_step, self.waited = None, 0, 0
    self.reason = None

  def better(self, value: float, than: float, *, by: float = 0.0) -> bool:
    return value > than + by if self.mode == "max" else value < than - by

  def observe(self, step: int, metrics: Mapping[str, float]) -> str | None:
    """Takes one evaluation's metrics; the reason to stop at `step`, or None."""
    if self.reason is not None or self.metric not in metrics:
      return self.reason
    value = float(metrics[self.metric])
    if self.best is None or self.better(value, self.best, by=self.min_delta):
      self.best, self.best_step, self.waited = value, step, 0
    else:
      self.waited += 1
    if self.target is not None and not self.better(self.target, value):
      self.reason = f"early_stop: {self.metric} reached the target {self.target:g} at step {step}"
    elif self.patience is not None and self.waited >= self.patience:
      self.reason = (f"early_stop: {self.metric} did not improve by more than {self.min_delta:g}"
                     f" in {self.patience} evaluations (best {self.best:.4g} at step"
                     f" {self.best_step})")
    return self.reason

  def replay(self, records: list[Mapping]) -> str | None:
    """Observes a run's metrics.jsonl records in order; the reason it stopped, or None."""
    for record in records:
      self.observe(record["step"], record)
    return self.reason

  def check_metric(self, metrics: Mapping[str, float]) -> None:
    """A ConfigError unless the first full evaluation (`metrics`) reports the metric."""
    if self.metric not in metrics:
      valid = ", ".join(sorted(k for k in metrics if k != "step"))
      raise ConfigError(f"config.train.early_stop.metric={self.metric!r} is not an evaluation"
                        f" metric of this run; valid: {valid}")


def early_stop(config) -> EarlyStop | None:
  """The EarlyStop that config.train.early_stop asks for (None without one), checked."""
  options = field(config, "train").get("early_stop")
  if options is None:
    return None
  path = "config.train.early_stop"
  if not isinstance(options, (Mapping, ml_collections.ConfigDict)):
    raise ConfigError(f"{path} must be a dict with fields {', '.join(EARLY_STOP_FIELDS)}")
  for key in options:
    if key not in EARLY_STOP_FIELDS:
      raise ConfigError(f"{path}.{key} names a field early_stop does not have; valid: "
                        f"{', '.join(EARLY_STOP_FIELDS)}")
  metric, mode = options.get("metric"), options.get("mode", "max")
  if not isinstance(metric, str) or not metric:
    raise ConfigError(f"{path}.metric must name an evaluation metric (e.g. 'test/accuracy')")
  if mode not in EARLY_STOP_MODES:
    raise ConfigError(f"{path}.mode={mode!r} is not valid; valid: {', '.join(EARLY_STOP_MODES)}")
  patience = integer(config, "train.early_stop.patience", minimum=1)
  numbers = {}
  for key, default in (("min_delta", 0.0), ("target", None)):
    value = options.get(key, default)
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                              or not math.isfinite(value) or (key == "min_delta" and value < 0)):
      kind = "number >= 0" if key == "min_delta" else "number"
      raise ConfigError(f"{path}.{key} must be a {kind}, got {value!r}")
    numbers[key] = None if value is None else float(value)
  if patience is None and numbers["target"] is None:
    raise ConfigError(f"{path} needs patience (evaluations without improvement) or a target")
  return EarlyStop(metric=metric, mode=mode, patience=patience, **numbers)


def setup(config) -> Run:
  """config -> mesh -> data -> model & optimizer -> evaluators (call inside `x64_scope`)."""
  # ------------------------------------------------------------------ config
  check_fields(config)
  make_experiment = lookup(REGISTRY.get, field(config, "trainer"), "trainer")
  seed = integer(config, "seed")
  steps = integer(config, "train.steps", minimum=1)
  eval_every = integer(config, "train.eval_every", max(1, steps // 10), minimum=1)

  # -------------------------------------------------------------------- mesh
  mesh = make_mesh(integer(config, "train.num_devices", minimum=1))

  # -------------------------------------------------------------------- data
  with building("data"):
    dataset = data.build(
        field(config, "data"),
        batch_size=integer(config, "train.batch_size", minimum=1),
        eval_batch_size=integer(config, "train.eval_batch_size", 1024, minimum=1),
        seed=integer(config, "data.seed", seed),  # the data seed is resolved here only
    )

  # ---------------------------------------------------- model & optimizer
  experiment: Experiment = make_experiment(config, dataset, mesh)
  with building("optimizer"):
    optimizer_config = field(config, "optimizer")
    tx = optim.make_optimizer(optimizer_config)
    trainable = _trainable(experiment.trainable, field(config, "train").get("trainable"))
    if trainable is not None:
      tx = optim.freeze(tx, trainable)
    schedule = optim.make_schedule(optimizer_config)

  # -------------------------------------------------------------- evaluators
  built = evaluators.build(config.get("evals", {}), experiment, dataset, mesh,
                           default_every=eval_every)
  return Run(config=config, experiment=experiment, dataset=dataset, mesh=mesh, tx=tx,
             schedule=schedule, evaluators=built, seed=seed, steps=steps,
             log_every=integer(config, "train.log_every", max(1, steps // 100), minimum=1),
             eval_every=eval_every,
             checkpoint_every=integer(config, "train.checkpoint_every", eval_every, minimum=1))


def _trainable(chosen_by_experiment, prefixes):
  """The trained parameters: those the experiment trains (all when None) that lie under a
  path prefix of `config.train.trainable` (all when unset)."""
  if not prefixes:
    return chosen_by_experiment
  if isinstance(prefixes, str):
    raise ConfigError("config.train.trainable must be a list of parameter path prefixes, got"
                      f" the string {prefixes!r}")
  by_prefix = lambda params: warm_start.prefix_mask(params, prefixes, field="train.trainable")
  if chosen_by_experiment is None:
    return by_prefix
  return lambda params: jax.tree.map(lambda a, b: a and b, chosen_by_experiment(params),
                                     by_prefix(params))


def init_state(run: Run) -> dict:
  """Step 0: parameters from the seed (the shared ones from `config.train.init_from`'s newest
  checkpoint when set, see `warm_start`), optimizer and extra state, placed by
  `state_shardings`."""
  init_from = field(run.config, "train").get("init_from")
  init_fresh = field(run.config, "train").get("init_fresh")
  if init_fresh and not init_from:
    raise ConfigError("config.train.init_fresh needs config.train.init_from (the run whose"
                      " other parameters are loaded)")
  trained = warm_start.trained_params(init_from) if init_from else None

  def init():
    params = run.experiment.init_params(jax.random.key(run.seed))
    if trained is not None:
      keep = (warm_start.prefix_mask(params, init_fresh, field="train.init_fresh")
              if init_fresh else None)
      params = warm_start.merge(params, trained, keep_fresh=keep)
    return {"step": jnp.zeros((), jnp.int32), "params": params,
            "opt_state": run.tx.init(params), "extra": run.experiment.init_extra(params)}

  return jax.jit(init, out_shardings=state_shardings(run, jax.eval_shape(init)))()


def state_shardings(run: Run, state) -> dict:
  """The train state's placement on the mesh: parameters split as the experiment's
  `param_specs` say, each parameter's optimizer state (Adam's moments, ...) split
  like it (optax.tree_utils.tree_map_params), everything else replicated."""
  replicated = NamedSharding(run.mesh, P())
  placed = jax.tree.map(lambda _: replicated, state)
  if run.experiment.param_specs is None:
    return placed
  params = jax.tree.map(lambda spec: NamedSharding(run.mesh, spec),
                        run.experiment.param_specs(state["params"]),
                        is_leaf=lambda x: isinstance(x, P))
  opt_state = optax.tree_utils.tree_map_params(
      run.tx, lambda _, sharding: sharding, state["opt_state"], params,
      transform_non_params=lambda _: replicated)
  return {**placed, "params": params, "opt_state": opt_state}


def train_step(run: Run, state: dict, batch: Mapping[str, jax.Array], *,
               with_metrics: bool = True) -> tuple[dict, dict]:
  """One optimizer step on `batch`; metrics as weighted sums (see `train_metrics`).

  With with_metrics=False only the loss comes back, and XLA drops the metrics'
  computation: the loop steps this way between log steps.
  """
  rng = jax.random.fold_in(jax.random.key(run.seed), state["step"])

  def objective(params):
    return run.experiment.loss(params, state["extra"], batch, rng)

  (loss, (metrics, extra)), grads = jax.value_and_grad(objective, has_aux=True)(state["params"])
  # SAM asks for the gradient elsewhere on this batch; other optimizers ignore it.
  grad_fn = lambda params, _: jax.grad(lambda p: objective(p)[0])(params)
  updates, opt_state = run.tx.update(grads, state["opt_state"], state["params"], grad_fn=grad_fn)
  params = optax.apply_updates(state["params"], updates)
  new_state = {"step": state["step"] + 1, "params": params, "opt_state": opt_state,
               "extra": extra}
  if not with_metrics:
    return new_state, {"loss": loss}
  return new_state, {
      "sums": weighted_sums({**metrics, "loss": loss}, batch["weight"]),
      "loss": loss,
      "grad_norm": optax.tree.norm(grads),
      "weight_norm": optax.tree.norm(params),
      "learning_rate": run.schedule(state["step"]),
  }


def step_functions(run: Run, state: dict) -> dict[bool, Callable]:
  """with_metrics -> `train_step` jitted with the state donated and kept where it is
  (`state_shardings`), metrics replicated."""
  placement = (state_shardings(run, state), NamedSharding(run.mesh, P()))
  return {logging: jax.jit(functools.partial(train_step, run, with_metrics=logging),
                           donate_argnums=0, out_shardings=placement)
          for logging in (False, True)}


def train_metrics(step_metrics: Mapping) -> dict[str, float]:
  """A train_step's metrics on the host: "train/<key>" means plus the step's norms and rate."""
  host = to_host(step_metrics)
  logged = {f"train/{k}": v for k, v in means(host.pop("sums")).items()}
  host.pop("loss")
  return {**logged, **{f"train/{k}": v for k, v in host.items()}}


def eval_step(evaluator: evaluators.Evaluator, state: dict, batch) -> dict[str, float]:
  """One evaluation batch (host arrays): the evaluator's weighted sums on the host."""
  return evaluator.split_sums(state["params"], state["extra"], [batch])


def evaluate(run: Run, state: dict, step: int, *, every: bool = False) -> dict[str, float]:
  """The metrics of every evaluator due at `step` (all of them with every=True) and the
  trainer's description of its extra state."""
  metrics = {}
  for evaluator in run.evaluators.values():
    if every or step % evaluator.every == 0 or step == run.steps:
      metrics.update(evaluator.run(state["params"], state["extra"]))
  if run.experiment.describe_extra is not None and (every or step % run.eval_every == 0
                                                    or step == run.steps):
    described = to_host(jax.jit(run.experiment.describe_extra)(state["extra"]))
    metrics.update({f"train/{k}": v for k, v in described.items()})
  return metrics


def restore_or_init(run: Run, checkpoints: Checkpoints, *,
                    report: Callable[[str], None] = lambda line: print(line, file=sys.stderr)
                    ) -> tuple[dict, int]:
  """(state, its step): the newest checkpoint that verifies, else a fresh state at step 0.

  A damaged checkpoint is moved aside with a one-line report and the previous
  one is tried; one that does not fit this run's state is a ConfigError (see
  `checkpoints.Checkpoints.restore_newest`).
  """
  state = init_state(run)
  restored = checkpoints.restore_newest(state, report=report)
  return restored if restored is not None else (state, 0)


def train(config, workdir: str, *, distributed: Mapping | None = None,
          show_progress: bool = True) -> dict:
  """Runs (or resumes) the experiment `config` in `workdir`; returns the summary.

  Args:
    config: the experiment's ConfigDict.
    workdir: where config.json, metrics.jsonl, checkpoints and summary.json go.
    distributed: keyword arguments for `jax.distributed.initialize` (None
      values are auto-detected) to run as one process of many; None for one.
    show_progress: a progress bar (terminal) or log lines; off for batch runs.
  """
  with jax.enable_x64(x64_enabled(config)):
    return _train(config, workdir, distributed, show_progress)


PROCESS_BARRIER_TIMEOUT_S = 600


def wait_for_processes(name: str) -> None:
  """Multi-process runs: blocks until every process has reached this point.

  The coordination service's barrier, which waits up to
  PROCESS_BARRIER_TIMEOUT_S. The first collective sets up the CPU (Gloo)
  context, which gives up after 30 s, so without the barrier a process still
  building its data or compiling on a loaded host makes the others fail.
  """
  if jax.process_count() > 1:
    ocp.multihost.get_barrier_sync_fn()(key=name, timeout_ms=PROCESS_BARRIER_TIMEOUT_S * 1000)


def _train(config, workdir, distributed, show_progress):
  if distributed is not None:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU hosts only
    jax.distributed.initialize(**{k: v for k, v in distributed.items() if v is not None})
  is_main = jax.process_index() == 0
  check_workdir(workdir)
  # One process trains in a workdir at a time (the main one holds the lock for all).
  with (files.WorkdirLock(workdir, what="softlab train") if is_main
        else contextlib.nullcontext()):
    return _train_in(config, workdir, is_main, show_progress)


def _train_in(config, workdir, is_main, show_progress):
  steps = integer(config, "train.steps", minimum=1)
  checkpoints = Checkpoints(workdir)
  latest = checkpoints.latest_step() or 0
  if latest > steps:
    raise ConfigError(f"config.train.steps={steps} is below step {latest} of the checkpoint in"
                      f" {workdir}; set train.steps >= {latest} or use a new --workdir")
  saved_config = prepare_workdir(config, workdir, write=is_main, checkpoints=checkpoints)
  summary_path = os.path.join(workdir, "summary.json")
  if ((latest == steps or stopped_early(config, workdir, latest))
      and os.path.exists(summary_path)):
    try:
      return files.read_json(summary_path)
    except files.FileError as error:
      print(f"softlab: {error}; writing it again", file=sys.stderr)
  run = setup(config)
  wait_for_processes("softlab_setup_done")
  state, start = restore_or_init(run, checkpoints)
  step_fns = step_functions(run, state)
  next_batch = batch_source(run)
  writer = MetricsWriter(workdir, resume_from=start, enabled=is_main)
  progress = Progress(total=steps, start=start, enabled=is_main and show_progress)
  stopper = early_stop(config)
  stop_reason = None
  if stopper is not None and start > 0:
    replayed = [r for r in read_records(writer.path) if r["step"] <= start]
    if not replayed:
      raise ConfigError(f"{writer.path} has no records up to the checkpoint at step {start}:"
                        " config.train.early_stop rebuilds its state from them; put the file"
                        " back or use a new --workdir")
    stopper.check_metric({k: v for r in replayed for k, v in r.items()})
    stop_reason = stopper.replay(replayed)

  if start == 0:
    initial = evaluate(run, state, 0, every=True)
    writer.write(0, initial)
    progress.update(0, initial)
    if stopper is not None:
      stopper.check_metric(initial)
      stop_reason = stopper.observe(0, initial)
  last_train, last_eval = {}, {}
  if start == steps or stop_reason:  # finished, but stopped before summary.json was written
    last_train = final_train_metrics(writer.path, start)
    last_eval = evaluate(run, state, start, every=True)
  save = functools.partial(checkpoints.save, config=saved_config)
  tick, ticked_step = time.perf_counter(), start
  recorded = start  # the last step whose records are in metrics.jsonl
  unchecked = []  # (step, device loss) not yet checked for finiteness
  try:
    with stop_signals() as signals:
      for step in range(start, start if stop_reason else steps):
        done = step + 1
        evaluating = done % run.eval_every == 0 or done == steps or any(
            done % e.every == 0 for e in run.evaluators.values())
        # An early-stopping run logs at every evaluation: the summary of the step
        # it stops at then has that step's train metrics.
        log = (done % run.log_every == 0 or done == steps
               or (stopper is not None and evaluating))
        state, metrics = step_fns[log](state, next_batch(step))
        unchecked.append((done, metrics["loss"]))
        saving = done % run.checkpoint_every == 0 or done == steps
        if not (log or evaluating or saving or signals.received):
          recorded = done
          continue
        check_finite(unchecked, checkpoints, workdir)
        unchecked = []
        logged = {}
        if log:
          metrics = train_metrics(metrics)
          now = time.perf_counter()
          metrics["train/steps_per_second"] = (done - ticked_step) / max(now - tick, 1e-9)
          tick, ticked_step = now, done
          logged.update(metrics)
          last_train = metrics
        if evaluating:
          evaluated = evaluate(run, state, done)
          if stopper is not None:
            stop_reason = stopper.observe(done, evaluated)
            if stop_reason:  # the last evaluation is a full one, as at train.steps
              evaluated = evaluate(run, state, done, every=True)
          last_eval.update(evaluated)
          logged.update(evaluated)
        if logged:
          writer.write(done, logged)
          progress.update(done, logged)
        recorded = done
        if saving or stop_reason or signals.received:
          save(done, state)
        if signals.received:
          raise Interrupted(signals.received, done)
        if stop_reason:
          break
  except KeyboardInterrupt:
    # Keep the last completed step if its records are written and its state is
    # finite: not when the interrupt hit a step in flight (its donated input is
    # gone) or came before that step's records, which a resume from it would
    # never write. Metrics past the checkpoint are replayed.
    intact = not any(x.is_deleted() for x in jax.tree.leaves(state))
    if (intact and int(to_host(state["step"])) == recorded
        and recorded != checkpoints.latest_step()):
      with contextlib.suppress(FloatingPointError):
        check_finite(unchecked, checkpoints, workdir)
        save(recorded, state)
    raise
  finally:
    progress.close()
    writer.close()

  # ----------------------------------------------------------------- summary
  summary = {"step": recorded, **last_train, **last_eval}
  if stopper is not None:
    summary["stop_reason"] = stop_reason or f"train.steps={steps} reached"
  if is_main:
    files.write_json(summary_path, summary)
  return summary


def stopped_early(config, workdir: str, step: int) -> bool:
  """Whether the run in `workdir` met its early-stopping criterion by `step` (its metrics.jsonl)."""
  stopper = early_stop(config)
  path = os.path.join(workdir, "metrics.jsonl")
  if stopper is None or not os.path.exists(path):
    return False
  return stopper.replay([r for r in read_records(path) if r["step"] <= step]) is not None


def batch_source(run: Run) -> Callable[[int], dict]:
  """step -> the sharded training batch; a full-batch dataset is placed on the devices once."""
  train = run.dataset.train_arrays
  batch_size = field(run.config, "train").get("batch_size")
  if train is not None and (batch_size is None or batch_size >= len(train["labels"])):
    fixed = shard(run.dataset.train_batch(0), run.mesh)
    return lambda step: fixed
  return lambda step: shard(run.dataset.train_batch(step), run.mesh)


def check_finite(unchecked: list, checkpoints: Checkpoints, workdir: str) -> None:
  """Raises FloatingPointError naming the first step whose train/loss is not finite."""
  losses = jax.device_get([loss for _, loss in unchecked])
  for (step, _), loss in zip(unchecked, losses):
    loss = float(np.asarray(loss))
    if not math.isfinite(loss):
      last_good = checkpoints.latest_step()
      raise FloatingPointError(
          f"non-finite train/loss ({loss}) at step {step}; last good checkpoint:"
          f" {'none' if last_good is None else f'step {last_good}'} in {workdir}")


def final_train_metrics(metrics_path: str, steps: int) -> dict:
  """The train/ metrics recorded at the last step, which evaluating again cannot give."""
  final = [r for r in read_records(metrics_path) if r["step"] == steps]
  return {k: v for k, v in final[-1].items() if k.startswith("train/")} if final else {}


class Interrupted(Exception):
  """The run stopped on SIGTERM or SIGINT after saving its last completed step."""

  def __init__(self, signum: int, step: int):
    self.signum, self.step = signum, step
    super().__init__(f"stopped by {signal.Signals(signum).name} after step {step}, saved as its"
                     " checkpoint; rerun the same command to resume")


class _Signals:
  """The first SIGTERM / SIGINT received (`received`, a signal number or None)."""

  def __init__(self):
    self.received = None

  def handle(self, signum, frame):
    if self.received is not None:  # a second signal: stop at once
      raise KeyboardInterrupt(f"signal {signum}")
    self.received = signum


@contextlib.contextmanager
def stop_signals():
  """SIGTERM (preemption, `kill`) and SIGINT (Ctrl-C) ask the loop to stop: it finishes
  the step in flight, saves it and raises Interrupted. A second signal interrupts at once.
  A signal the process ignores stays ignored; outside the main thread (where Python cannot
  handle signals) nothing changes."""
  signals = _Signals()
  if threading.current_thread() is not threading.main_thread():
    yield signals
    return
  previous = {signum: signal.signal(signum, signals.handle)
              for signum in (signal.SIGTERM, signal.SIGINT)
              if signal.getsignal(signum) is not signal.SIG_IGN}  # e.g. a study's workers
  try:
    yield signals
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)


def check_workdir(workdir: str) -> None:
  """Creates `workdir`; a ConfigError in one line if it is a file or cannot be written."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ConfigError(f"--workdir {workdir} is a file, not a folder")
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=workdir):
      pass
  except OSError as error:
    reason = error.strerror or error
    raise ConfigError(f"--workdir {workdir} cannot be written ({reason})") from None


def prepare_workdir(config, workdir: str, *, write: bool, checkpoints: Checkpoints) -> dict:
  """Writes the workdir's config.json, or checks that the run there had this config;
  returns the config as saved (JSON).

  Only train.steps may differ from a previous run's config, so a finished run
  can be continued for longer. A run whose config.json is missing or damaged is
  checked against the config saved with its newest readable checkpoint (and
  config.json is written again); without one, a workdir holding a run's
  metrics or checkpoints is refused, since nothing says which config made them.
  """
  path = os.path.join(workdir, "config.json")
  current = as_json(config)
  previous = recorded_config(workdir, path, checkpoints)
  if previous is not None:
    difference = first_difference(previous, current, ignore=("train.steps",))
    if difference:
      raise ConfigError(
          f"workdir {workdir} holds a different config ({difference}); use a new --workdir")
  if write:
    files.write_json(path, current)
  return current


def recorded_config(workdir: str, path: str, checkpoints: Checkpoints) -> dict | None:
  """The config of the run in `workdir`: its config.json, else the one saved with its newest
  readable checkpoint; None for a workdir with no run in it."""
  try:
    return files.read_json(path)
  except files.FileError as error:
    problem = error if os.path.exists(path) else f"{path} is missing"
  for step in reversed(checkpoints.steps()):
    saved = checkpoints.config_of(step)
    if saved is not None:
      print(f"softlab: {problem}; checking against the config saved with the checkpoint at"
            f" step {step}", file=sys.stderr)
      return saved
  if checkpoints.steps() or os.path.exists(os.path.join(workdir, "metrics.jsonl")):
    raise ConfigError(f"{problem}, and no checkpoint in {workdir} says which config made its"
                      " run; put config.json back or use a new --workdir")
  return None


def main_summary_line(summary: Mapping[str, float]) -> str:
  """The line printed at the end of a run: losses and accuracies (the rest is in summary.json)."""
  keys = [k for k in sorted(summary) if k.endswith(("loss", "accuracy"))]
  return f"step {summary['step']}: " + "  ".join(f"{k}={summary[k]:.4g}" for k in keys)
