"""The generic training loop every experiment trainer runs.

Read top to bottom: config -> mesh -> data -> model & optimizer -> shard ->
step fn (jit, donated state) -> restore checkpoint -> loop (log, eval,
checkpoint) -> final summary. Experiment trainers (classification, lm,
contrastive) only say how a batch becomes a loss and metrics.
"""

import contextlib
import json
import math
import os
import signal
import time
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from softlab import data, optim
from softlab.trainers.base import (REGISTRY, ConfigError, Experiment, building, field, integer,
                                   lookup)
from softlab.trainers.reporting import MetricsWriter, Progress, read_records

TIMING_KEYS = ("train/steps_per_second",)


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
  float64 = "float64" in (field(config, "train").get("dtype"), field(config, "loss").get("dtype"))
  with jax.enable_x64(float64):
    return _train(config, workdir, distributed, show_progress)


def _train(config, workdir, distributed, show_progress):
  # ------------------------------------------------------------------ config
  make_experiment = lookup(REGISTRY.get, field(config, "trainer"), "trainer")
  seed = integer(config, "seed")
  steps = integer(config, "train.steps", minimum=1)
  log_every = integer(config, "train.log_every", max(1, steps // 100), minimum=1)
  eval_every = integer(config, "train.eval_every", max(1, steps // 10), minimum=1)
  checkpoint_every = integer(config, "train.checkpoint_every", eval_every, minimum=1)
  if distributed is not None:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU hosts only
    jax.distributed.initialize(**{k: v for k, v in distributed.items() if v is not None})
  is_main = jax.process_index() == 0
  checkpoints = ocp.CheckpointManager(
      os.path.abspath(os.path.join(workdir, "checkpoints")),
      options=ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=False),
  )
  start = checkpoints.latest_step() or 0
  if start > steps:
    raise ConfigError(f"config.train.steps={steps} is below step {start} of the checkpoint in"
                      f" {workdir}; set train.steps >= {start} or use a new --workdir")
  prepare_workdir(config, workdir, write=is_main)
  summary_path = os.path.join(workdir, "summary.json")
  if start == steps and os.path.exists(summary_path):
    with open(summary_path) as f:
      return json.load(f)

  # -------------------------------------------------------------------- mesh
  mesh = make_mesh(integer(config, "train.num_devices", minimum=1))
  replicated = NamedSharding(mesh, P())

  # -------------------------------------------------------------------- data
  with building("data"):
    dataset = data.build(
        field(config, "data"),
        batch_size=integer(config, "train.batch_size", minimum=1),
        eval_batch_size=integer(config, "train.eval_batch_size", 1024, minimum=1),
        seed=integer(config, "data.seed", seed),
    )

  # ---------------------------------------------------- model & optimizer
  experiment: Experiment = make_experiment(config, dataset, mesh)
  with building("optimizer"):
    optimizer_config = field(config, "optimizer")
    tx = optim.make_optimizer(optimizer_config)
    schedule = optim.make_schedule(optimizer_config)

  # ------------------------------------------------------------------- shard
  def init_state():
    params = experiment.init_params(jax.random.key(seed))
    return {"step": jnp.zeros((), jnp.int32), "params": params,
            "opt_state": tx.init(params), "extra": experiment.init_extra(params)}

  state = jax.jit(init_state, out_shardings=replicated)()

  # ----------------------------------------------------------------- step fn
  def train_step(state, batch):
    rng = jax.random.fold_in(jax.random.key(seed), state["step"])

    def objective(params):
      return experiment.loss(params, state["extra"], batch, rng)

    (loss, (metrics, extra)), grads = jax.value_and_grad(objective, has_aux=True)(
        state["params"])
    # SAM asks for the gradient elsewhere on this batch; other optimizers ignore it.
    grad_fn = lambda params, _: jax.grad(lambda p: objective(p)[0])(params)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"], grad_fn=grad_fn)
    params = optax.apply_updates(state["params"], updates)
    logged = {f"train/{k}": v for k, v in weighted_means(metrics, batch["weight"]).items()}
    logged.update({
        "train/loss": loss,
        "train/grad_norm": optax.tree.norm(grads),
        "train/weight_norm": optax.tree.norm(params),
        "train/learning_rate": schedule(state["step"]),
    })
    new_state = {"step": state["step"] + 1, "params": params, "opt_state": opt_state,
                 "extra": extra}
    return new_state, logged

  def eval_step(state, batch):
    metrics = experiment.evaluate(state["params"], state["extra"], batch)
    return weighted_sums(metrics, batch["weight"])

  train_step = jax.jit(train_step, donate_argnums=0, out_shardings=replicated)
  eval_step = jax.jit(eval_step, out_shardings=replicated)

  # ------------------------------------------------------ restore checkpoint
  if checkpoints.latest_step() is not None:
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    state = checkpoints.restore(start, args=ocp.args.StandardRestore(abstract))
  writer = MetricsWriter(workdir, resume_from=start, enabled=is_main)

  def evaluate(step):
    metrics = {}
    for split, batches in dataset.eval_splits.items():
      totals = [to_host(eval_step(state, shard(b, mesh))) for b in batches]
      weight = sum(t.pop("weight") for t in totals)
      for key in totals[0]:
        metrics[f"{split}/{key}"] = sum(t[key] for t in totals) / weight
    if experiment.describe_extra is not None:
      described = to_host(jax.jit(experiment.describe_extra)(state["extra"]))
      metrics.update({f"train/{k}": v for k, v in described.items()})
    return metrics

  # -------------------------------------------------------------------- loop
  progress = Progress(total=steps, start=start, enabled=is_main and show_progress)
  if start == 0:
    initial = evaluate(0)
    writer.write(0, initial)
    progress.update(0, initial)
  last_train, last_eval = {}, {}
  if start == steps:  # finished, but stopped before summary.json was written
    last_train = final_train_metrics(writer.path, steps)
    last_eval = evaluate(steps)
  tick, ticked_step = time.perf_counter(), start
  recorded = start  # the last step whose records are in metrics.jsonl
  try:
    with interrupt_on_sigterm():
      for step in range(start, steps):
        state, metrics = train_step(state, shard(dataset.train_batch(step), mesh))
        done = step + 1
        metrics = to_host(metrics)
        if not math.isfinite(metrics["train/loss"]):
          last_good = checkpoints.latest_step()
          raise FloatingPointError(
              f"non-finite train/loss ({metrics['train/loss']}) at step {done}; last good"
              f" checkpoint: {'none' if last_good is None else f'step {last_good}'} in {workdir}")
        logged = {}
        if done % log_every == 0 or done == steps:
          now = time.perf_counter()
          metrics["train/steps_per_second"] = (done - ticked_step) / max(now - tick, 1e-9)
          tick, ticked_step = now, done
          logged.update(metrics)
          last_train = metrics
        if done % eval_every == 0 or done == steps:
          last_eval = evaluate(done)
          logged.update(last_eval)
        if logged:
          writer.write(done, logged)
          progress.update(done, logged)
        recorded = done
        if done % checkpoint_every == 0 or done == steps:
          checkpoints.save(done, args=ocp.args.StandardSave(state))
  except KeyboardInterrupt:
    # Keep the last completed step if its records are written: not when the
    # interrupt hit a step in flight (its donated input is gone) or came before
    # that step's records, which a resume from it would never write. Metrics
    # past the checkpoint are replayed.
    intact = not any(x.is_deleted() for x in jax.tree.leaves(state))
    if intact and int(to_host(state["step"])) == recorded != checkpoints.latest_step():
      checkpoints.save(recorded, args=ocp.args.StandardSave(state))
    checkpoints.wait_until_finished()
    raise
  finally:
    progress.close()
    writer.close()
  checkpoints.wait_until_finished()

  # ----------------------------------------------------------------- summary
  summary = {"step": steps, **last_train, **last_eval}
  if is_main:
    with open(summary_path, "w") as f:
      json.dump(summary, f, indent=2, sort_keys=True)
  return summary


def final_train_metrics(metrics_path: str, steps: int) -> dict:
  """The train/ metrics recorded at the last step, which evaluating again cannot give."""
  final = [r for r in read_records(metrics_path) if r["step"] == steps]
  return {k: v for k, v in final[-1].items() if k.startswith("train/")} if final else {}


@contextlib.contextmanager
def interrupt_on_sigterm():
  """Treats SIGTERM (preemption, `kill`) like Ctrl-C, so the run can checkpoint."""

  def interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")

  previous = signal.signal(signal.SIGTERM, interrupt)
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, previous)


def make_mesh(num_devices: int | None):
  """A 1-D mesh with a "data" axis over the first `num_devices` devices (all by default)."""
  devices = jax.devices()
  if num_devices:
    if num_devices > len(devices):
      raise ConfigError(f"config.train.num_devices={num_devices}, but only {len(devices)} exist")
    devices = devices[:num_devices]
  # Auto axes: XLA propagates the batch sharding through the model (GSPMD).
  return jax.make_mesh((len(devices),), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices)


def shard(batch: Mapping[str, np.ndarray], mesh) -> dict[str, jax.Array]:
  """The global host batch as arrays split over the mesh's "data" axis.

  The batch is padded with zero-weight examples to a multiple of the number of
  devices. Each process only transfers the rows its own devices hold, so on
  many hosts every process feeds its shard of the same global batch.
  """
  size = len(batch["weight"])
  padded = -(-size // mesh.size) * mesh.size
  sharded = {}
  for key, value in batch.items():
    value = np.asarray(value)
    if padded != size:
      value = np.concatenate([value, np.zeros((padded - size,) + value.shape[1:], value.dtype)])
    sharding = NamedSharding(mesh, P("data", *([None] * (value.ndim - 1))))
    sharded[key] = jax.make_array_from_callback(value.shape, sharding, lambda index, v=value: v[index])
  return sharded


def weighted_means(metrics, weight):
  """Per-example metrics averaged over real examples; scalars pass through."""
  total = jnp.sum(weight)
  return {k: (jnp.sum(weight * v) / total if jnp.ndim(v) else v) for k, v in metrics.items()}


def weighted_sums(metrics, weight):
  """Sums that combine across eval batches: sum(weight * m), and the total weight."""
  total = jnp.sum(weight)
  sums = {k: (jnp.sum(weight * v) if jnp.ndim(v) else v * total) for k, v in metrics.items()}
  return {**sums, "weight": total}


def to_host(tree) -> dict:
  """Replicated device scalars as Python floats (works on any process)."""
  return jax.tree.map(lambda x: float(np.asarray(x.addressable_data(0))), tree)


def prepare_workdir(config, workdir: str, *, write: bool) -> None:
  """Creates `workdir` and its config.json, or checks that it holds this config.

  Only train.steps may differ from a previous run's config, so a finished run
  can be continued for longer.
  """
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "config.json")
  current = json.loads(config.to_json_best_effort(sort_keys=True))
  if os.path.exists(path):
    with open(path) as f:
      previous = json.load(f)
    difference = first_difference(previous, current, ignore=("train.steps",))
    if difference:
      raise ConfigError(
          f"workdir {workdir} holds a different config ({difference}); use a new --workdir")
  if write:
    with open(path, "w") as f:
      json.dump(current, f, indent=2, sort_keys=True)


def first_difference(old, new, *, ignore=(), prefix="") -> str | None:
  """'config.a.b: old != new' for the first differing field, or None."""
  if isinstance(old, dict) and isinstance(new, dict):
    for key in sorted(set(old) | set(new)):
      path = f"{prefix}{key}"
      if path in ignore:
        continue
      if key not in old or key not in new:
        return f"config.{path} only in the {'new' if key in new else 'old'} config"
      found = first_difference(old[key], new[key], ignore=ignore, prefix=f"{path}.")
      if found:
        return found
    return None
  return None if old == new else f"config.{prefix.rstrip('.')}: {old!r} != {new!r}"


def main_summary_line(summary: Mapping[str, float]) -> str:
  """The line printed at the end of a run: losses and accuracies (the rest is in summary.json)."""
  keys = [k for k in sorted(summary) if k.endswith(("loss", "accuracy"))]
  return f"step {summary['step']}: " + "  ".join(f"{k}={summary[k]:.4g}" for k in keys)

