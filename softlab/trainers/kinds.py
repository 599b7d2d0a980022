"""Which loss kinds each trainer feeds, and the one-line error for the others.

Every trainer declares the loss kinds (softlab.losses.KINDS) it has an adapter
for with `feeds(trainer, kinds, stateful=...)` when its module is imported;
`choose_loss(config, trainer)` then returns the configured loss's function and
LossInfo, or a ConfigError naming the trainers that can train it. No trainer
looks at a loss's name.
"""

import jax.numpy as jnp

from softlab import losses
from softlab.experiment import ConfigError
from softlab.trainers.base import field, lookup

# trainer -> (loss kinds it has an adapter for, whether it keeps a stateful loss's state,
# the loss inputs (LossInfo.inputs) it supplies)
_FED: dict[str, tuple[tuple[str, ...], bool, tuple[str, ...]]] = {}

# Loss kinds no trainer feeds yet, and why.
NO_TRAINER_YET = {
    "regularizer": "a regularizer is a term added to a loss, and config.loss names one loss",
}


def feeds(trainer: str, kinds, *, stateful: bool = False, inputs=()) -> None:
  """Declares that `trainer` has adapters for `kinds` (and keeps stateful losses' state, and
  supplies the loss inputs `inputs`, softlab.losses.KIND_INPUTS names)."""
  _FED[trainer] = (tuple(kinds), stateful, tuple(inputs))


def trainers_for(info: losses.LossInfo) -> tuple[str, ...]:
  """The trainers that can train a loss with this LossInfo."""
  return tuple(sorted(name for name, (kinds, stateful, inputs) in _FED.items()
                      if info.kind in kinds and (stateful or info.stateful is None)
                      and set(info.inputs) <= set(inputs)))


def choose_loss(config, trainer: str):
  """(loss function, LossInfo) of config.loss.name, checked against what `trainer` feeds."""
  name = field(config, "loss.name")
  loss_fn = lookup(losses.get, name, "loss.name")
  info = losses.info(name)
  if trainer not in trainers_for(info):
    kinds, stateful, inputs = _FED[trainer]
    takes = f"{', '.join(kinds)} losses" + (" (no stateful ones)" if info.stateful else "")
    missing = sorted(set(info.inputs) - set(inputs))
    if info.kind in kinds and missing:
      takes += f" but supplies no {', '.join(missing)}"
    able = ", ".join(trainers_for(info))
    if not able:
      able = f"none yet ({NO_TRAINER_YET[info.kind]})" if info.kind in NO_TRAINER_YET else "none"
    raise ConfigError(f"config.loss.name: {name!r} is a {info.describe()} loss; the {trainer} "
                      f"trainer takes {takes}; trainers for {info.describe()} losses: {able}")
  for model_field, paper_value in info.model_fields:
    if model_field not in field(config, "model"):
      raise ConfigError(f"config.loss.name: {name!r} needs config.model.{model_field}; set it"
                        f" (the paper's value: {paper_value!r})")
  return loss_fn, info


def stateful_dry_run(factory):
  """(*example, **hyper) -> one apply of factory(**hyper) from a fresh state.

  The `call` of `base.loss_options` for a stateful loss: bad hyperparameters
  fail on a tiny example before any compilation.
  """

  def call(*example, **hyper):
    stateful = factory(**hyper)
    count = example[0].shape[0]
    return stateful.apply(*example, stateful.init(count), jnp.arange(count))

  return call
