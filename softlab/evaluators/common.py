"""The evaluator registry, the base class, and building evaluators from `config.evals`.

`config.evals` maps an entry name to an evaluator (as big_vision's
`config.evals`): `name` picks the evaluator from the registry, `every` is its
cadence in steps (default `train.eval_every`), `splits` the evaluation
splits it reads (default all), and the other fields are the evaluator's
keyword options. Evaluators see the model only through the trainer's
`Experiment.predict`; each returns {"<split>/<key>": value}.
"""

import inspect
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from softlab.registry import Registry
from softlab.experiment import ConfigError, Experiment
from softlab.sharding import shard, to_host

REGISTRY = Registry("evaluator")


def weighted_sums(metrics: Mapping, weight: jax.Array) -> dict:
  """Per-batch sums that combine across batches: sum(weight * m) and the total weight.

  Per-example metrics [B] are weighted by the batch's "weight" (0 for padding);
  scalars are batch averages and count with the batch's total weight. The
  loop and every evaluator report `sums[k] / sums["weight"]`.
  """
  total = jnp.sum(weight)
  sums = {k: (jnp.sum(weight * v) if jnp.ndim(v) else v * total) for k, v in metrics.items()}
  return {**sums, "weight": total}


def means(sums: Mapping[str, float]) -> dict:
  """Host means from `weighted_sums` totals."""
  return {k: v / sums["weight"] for k, v in sums.items() if k != "weight"}


class Evaluator:
  """Metrics averaged over the real examples of each split.

  A subclass implements `batch_metrics(params, predict, batch)`: per-example
  arrays or batch averages, from `predict(params, sown=...)` (the trainer's
  predictions for this batch). `run(params, extra)` returns
  {"<split>/<key>": mean} over `splits`.

  Attributes:
    every: the cadence in steps.
  """

  def __init__(self, experiment: Experiment, splits: Mapping[str, list], mesh, *, every: int):
    self.experiment, self.splits, self.mesh, self.every = experiment, splits, mesh, every
    self._sums = jax.jit(self._batch_sums)

  def batch_metrics(self, params, predict, batch) -> dict:
    raise NotImplementedError

  def _batch_sums(self, params, extra, batch):
    def predict(params, sown=()):
      return self.experiment.predict(params, extra, batch, sown=sown)
    return weighted_sums(self.batch_metrics(params, predict, batch), batch["weight"])

  def split_sums(self, params, extra, batches) -> dict:
    """Host totals of `weighted_sums` over `batches` (float64 on the host)."""
    totals = [to_host(self._sums(params, extra, shard(b, self.mesh))) for b in batches]
    return {k: sum(t[k] for t in totals) for k in totals[0]}

  def run(self, params, extra) -> dict[str, float]:
    results = {}
    for split, batches in self.splits.items():
      results.update({f"{split}/{k}": v
                      for k, v in means(self.split_sums(params, extra, batches)).items()})
    return results


def gather(fn, params, extra, batches, mesh) -> dict[str, np.ndarray]:
  """fn(params, extra, batch) per batch, concatenated on the host over the real examples."""
  parts = []
  for batch in batches:
    out = jax.device_get(fn(params, extra, shard(batch, mesh)))
    real = np.asarray(batch["weight"]) > 0
    parts.append({k: np.asarray(v)[: len(real)][real] for k, v in out.items()})
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def build(evals: Mapping, experiment: Experiment, dataset, mesh, *,
          default_every: int) -> dict[str, Evaluator]:
  """config.evals -> {entry name: Evaluator}; one-line ConfigErrors for bad entries."""
  built = {}
  for entry, section in evals.items():
    path = f"config.evals.{entry}"
    options = dict(section)
    if "name" not in options:
      raise ConfigError(f"{path}: missing field 'name'; valid: {', '.join(REGISTRY.names())}")
    try:
      cls = REGISTRY.get(options.pop("name"))
    except ValueError as error:
      raise ConfigError(f"{path}.name: {error}") from None
    every = options.pop("every", default_every)
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
      raise ConfigError(f"{path}.every must be an integer >= 1, got {every!r}")
    splits = select_splits(dataset.eval_splits, options.pop("splits", None), path)
    valid = [p for p, spec in inspect.signature(cls.__init__).parameters.items()
             if spec.kind is inspect.Parameter.KEYWORD_ONLY and p != "every"]
    unknown = sorted(set(options) - set(valid))
    if unknown:
      raise ConfigError(f"{path}: unknown field(s) {', '.join(unknown)} for evaluator "
                        f"{section['name']!r}; valid: {', '.join(['every', 'splits', *valid])}")
    try:
      built[entry] = cls(experiment, splits, mesh, every=every, **options)
    except (TypeError, ValueError) as error:
      raise ConfigError(f"{path}: {error}") from None
  return built


def select_splits(splits: Mapping[str, list], names: Sequence[str] | None, path: str) -> dict:
  """The evaluation splits named in `names` (all when None)."""
  if names is None:
    return dict(splits)
  if isinstance(names, str):
    names = (names,)
  unknown = [n for n in names if n not in splits]
  if unknown:
    raise ConfigError(f"{path}.splits: unknown split(s) {', '.join(unknown)}; valid: "
                      f"{', '.join(splits)}")
  return {n: splits[n] for n in names}
