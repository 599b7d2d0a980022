"""Every registered loss trains for 2 steps with a trainer of its kind.

The runs are chosen from the loss registry: each loss through the first
trainer that feeds its kind, and every (trainer, kind) adapter at least once.
Losses of a kind no trainer feeds yet are pending: computed from the registry
and `kinds.NO_TRAINER_YET`, listed in `test_pending_losses_*` and checked to
fail with the one-line "none yet" error. The default suite trains one loss
per (trainer, kind) adapter; the other losses' runs are `slow` (each of them
is also checked against its NumPy reference in tests/losses).
"""

import inspect
import math

import pytest

from softlab import losses
from softlab.config import load_config, override
from softlab.trainers import ConfigError, kinds, loop

QUICK = {"train.steps": 2, "train.log_every": 1, "train.eval_every": 2,
         "train.checkpoint_every": 2, "train.num_devices": 1}
# Each trainer's config, shrunk to seconds.
BASES = {
    "classification": ("configs/ldr/ce.py", {}),
    "lm": ("configs/lm/softmax.py", {
        "train.batch_size": 4, "data.seq_len": 16, "data.eval_lengths": (16,),
        "data.eval_windows": 4, "train.eval_batch_size": 4, "model.d_model": 16,
        "model.num_layers": 1, "model.num_heads": 2}),
    "contrastive": ("configs/contrastive/siglip.py", {
        "train.batch_size": 8, "model.image_hidden": (16,), "model.text_width": 16,
        "model.embed_dim": 8}),
    "metric": ("configs/metric/arcface.py", {
        "train.batch_size": 16, "train.eval_batch_size": 64, "data.num_identities": 16,
        "data.heldout_identities": 4, "data.per_identity": 2, "data.heldout_per_identity": 2,
        "data.closed_per_identity": 1, "model.backbone.hidden": (8,),
        "model.embedding_dim": 8}),
}
# Model fields a loss needs besides its trainer's config's and its registered model_fields.
MODEL_FOR = {"cr_fiqa": {"model.quality_head": True}}
# Hyperparameters without a default, by loss (digits: 10 classes, about balanced).
REQUIRED = {"ldam": {"margins": tuple(float(m) for m in losses.ldam_margins([126] * 10))}}


def runs():
  """(loss name, trainer): every trainable loss once, every trainer's kinds once."""
  chosen, covered = [], set()
  for name in losses.names():
    info = losses.info(name)
    able = kinds.trainers_for(info)
    if able:
      chosen.append((name, able[0]))
      covered.add((able[0], info.describe()))
  for name in losses.names():
    info = losses.info(name)
    for trainer in kinds.trainers_for(info):
      if (trainer, info.describe()) not in covered:
        chosen.append((name, trainer))
        covered.add((trainer, info.describe()))
  return chosen


def pending():
  """The losses no trainer feeds yet."""
  return [name for name in losses.names() if not kinds.trainers_for(losses.info(name))]


def config_for(name, trainer):
  path, updates = BASES[trainer]
  config = override(load_config(path), {**QUICK, **updates})
  fields = {"name": name, **REQUIRED.get(name, {})}
  if trainer not in ("contrastive", "metric"):
    fields["dtype"] = "float32"
  model = {f"model.{key}": value for key, value in losses.info(name).model_fields}
  return override(override(config, {"loss": fields}), {**model, **MODEL_FOR.get(name, {})})


def test_required_hyperparameters_are_supplied():
  for name, _ in runs():
    info = losses.info(name)
    # a stateful loss's hyperparameters are its factory's; a margin loss's inputs come
    # from the trainer; learnable arguments from logit_params
    parameters = inspect.signature(info.stateful or losses.get(name)).parameters.values()
    required = {p.name for p in parameters if p.kind is p.KEYWORD_ONLY and p.default is p.empty}
    if info.logit_params is None:
      assert required - set(info.inputs) <= set(REQUIRED.get(name, {})), name


def adapter_runs():
  """The first run of each (trainer, kind) adapter: the default suite's share of the walk."""
  first = {}
  for name, trainer in runs():
    first.setdefault((trainer, losses.info(name).describe()), (name, trainer))
  return set(first.values())


@pytest.mark.parametrize("name, trainer", [
    pytest.param(n, t, id=f"{t}-{n}", marks=[] if (n, t) in adapter_runs() else [pytest.mark.slow])
    for n, t in runs()])
def test_every_loss_trains_two_steps(name, trainer, tmp_path):
  summary = loop.train(config_for(name, trainer), str(tmp_path))
  assert summary["step"] == 2
  assert math.isfinite(summary["train/loss"])
  if losses.info(name).stateful and trainer == "classification":
    assert {"train/lambda_noisy", "train/lambda_clean"} <= set(summary)


def test_pending_losses_are_the_kinds_without_a_trainer():
  names = pending()
  print("pending (no trainer feeds their kind yet):",
        {name: losses.info(name).kind for name in names})
  assert {losses.info(name).kind for name in names} == set(kinds.NO_TRAINER_YET)
  assert set(names) | {name for name, _ in runs()} == set(losses.names())


ONE_PENDING_PER_KIND = sorted({losses.info(name).kind: name for name in pending()}.values())


@pytest.mark.parametrize("name", ONE_PENDING_PER_KIND)
def test_pending_losses_fail_with_a_one_line_error(name, tmp_path):
  with pytest.raises(ConfigError, match=rf"'{name}' is a \w+ loss; the classification trainer "
                                        r"takes classification, multilabel losses; trainers for "
                                        r"\w+ losses: none yet \("):
    loop.train(config_for(name, "classification"), str(tmp_path))
