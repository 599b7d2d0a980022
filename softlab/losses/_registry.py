"""The loss registry: every loss a config can name, with its kind.

A loss's kind is its calling convention, so a trainer can feed any loss of a
kind it knows without knowing the loss:
- classification: loss(logits [..., K], labels [...] integer classes), plus
  by keyword the entry's `inputs` (CLASSIFICATION_INPUTS: a per-step PRNG key,
  the training step) when it registers any.
- multilabel: loss(logits [..., K], label matrix [..., K] of targets in [0, 1]).
- margin: loss(cosines [N, C] or embeddings + class centers, labels [N]). The
  entry's `inputs` names every argument a trainer supplies, passed by keyword
  under these names (MARGIN_INPUTS); its other keyword arguments are
  hyperparameters. A learnable argument (SphereFace2's bias) comes from
  `logit_params`, a Flax module built with `num_classes` and the loss's
  hyperparameters of the same names, whose `loss_arguments()` gives it.
- pairwise: loss(zimg [b, d], ztxt [b, d], **logit_params, axis_name=...): two
  paired embedding sets; the entry names the Flax module of its learnable
  logit parameters (`logit_params`), whose `loss_arguments()` gives the keyword
  arguments (temperature t, bias b).
- vocab_head: loss(hidden [..., d], weight [d, V], labels [...]).
- regularizer: loss(logits [..., K]): a term added to another loss (z-loss).

A stateful loss (ALDR-KL's per-example lambda) also registers `stateful`, a
factory `stateful(**hyperparameters) -> StatefulLoss`: an optax-style
(init, apply) pair whose state the trainer keeps without knowing the loss.
`get(name)` returns the plain function in every case.
"""

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

from softlab.registry import Registry

KINDS = ("classification", "multilabel", "margin", "pairwise", "vocab_head", "regularizer")

# What a trainer can hand a margin loss, by argument name (LossInfo.inputs).
MARGIN_INPUTS = {
    "cos": "[N, C] cosines to the class centers ([N, C, K] with K sub-centers per class)",
    "labels": "[N] integer classes",
    "embeddings": "[N, d] embeddings before L2 normalization",
    "centers": "[C, d] (or [C, K, d]) class centers, split over the devices along C with "
               "`axis_name` (the loss then gets this device's rows of every batch input)",
    "norms": "[N] feature norms |e_n|",
    "key": "a PRNG key, new every step, the same on every device",
    "where": "[N] True for the batch's real examples (False: padding)",
    "quality": "[N] the model's quality-head predictions",
}

# What a trainer can hand a classification loss besides (logits, labels), by argument name.
CLASSIFICATION_INPUTS = {
    "key": "a PRNG key, new every step (Noisy Softmax's noise)",
    "step": "the training step (0 first), for a loss's own annealing schedule",
}
KIND_INPUTS = {"margin": MARGIN_INPUTS, "classification": CLASSIFICATION_INPUTS}


class StatefulLoss(NamedTuple):
  """A loss with per-example state, in the shape of optax's GradientTransformation.

  init(num_examples, dtype) -> state: a dict of arrays whose leading axis is
    the example (indexed by the example ids the trainer passes), or of scalars
    shared by every example (running statistics such as AdaFace's norm mean
    and std); its keys name what the trainer logs about it.
  apply(*inputs, state, ids, *, where=None) -> (values, new_state): the
    kind's inputs, the state and the batch's example ids [B]; ids outside
    [0, num_examples) (padding) read the initial state and write nothing.
  """

  init: Callable[..., dict[str, Any]]
  apply: Callable[..., tuple[Any, dict[str, Any]]]


@dataclasses.dataclass(frozen=True)
class LossInfo:
  """What a trainer needs to know about a registered loss besides the function.

  Attributes:
    kind: the calling convention, one of KINDS.
    stateful: for a stateful loss, (**hyperparameters) -> StatefulLoss.
    logit_params: for a pairwise loss, the Flax module of its learnable logit
      parameters (its fields are the config's loss options); for a margin
      loss, the module of its learnable arguments (see the module docstring).
    inputs: for a margin loss, the arguments a trainer supplies (MARGIN_INPUTS
      names), by keyword; ("cos", "labels") unless registered otherwise. For
      a classification loss, what it takes beyond (logits, labels)
      (CLASSIFICATION_INPUTS: a per-step key, the step); only trainers that
      supply them train it.
    inner: for a margin loss that runs another margin loss on cosines it
      computes itself (Partial FC), the hyperparameter naming that loss; a
      trainer then also supplies the inner loss's inputs
      (`softlab.losses.margin_inputs`).
    model_fields: (model option, the paper's value) for each option of the
      model that the loss's inputs depend on (sub-center ArcFace: the
      model's `subcenters`, 3); a config that trains the loss without
      setting one is told which.
  """

  kind: str
  stateful: Callable[..., StatefulLoss] | None = None
  logit_params: type | None = None
  inputs: tuple[str, ...] = ()
  inner: str | None = None
  model_fields: tuple[tuple[str, Any], ...] = ()

  def describe(self) -> str:
    """"classification", or "stateful classification"."""
    return f"stateful {self.kind}" if self.stateful else self.kind


class LossRegistry(Registry):
  """The loss registry: `register(name, kind=...)` records each loss's LossInfo."""

  def __init__(self):
    super().__init__("loss", plural="losses")
    self._info: dict[str, LossInfo] = {}

  def register(self, name: str, *, kind: str, stateful=None, logit_params=None, inputs=None,
               inner=None, model_fields=()):
    """Decorator adding a loss under `name` with its kind (and stateful form,
    logit parameters, a margin loss's inputs and inner loss, the model options
    its inputs need)."""
    if kind not in KINDS:
      raise ValueError(f"loss {name!r}: unknown kind {kind!r}; valid: {', '.join(KINDS)}")
    if inputs is None:
      inputs = ("cos", "labels") if kind == "margin" else ()
    valid = KIND_INPUTS.get(kind, {})
    unknown = sorted(set(inputs) - set(valid))
    if unknown:
      raise ValueError(f"loss {name!r}: unknown input(s) {', '.join(unknown)} for a {kind} "
                       f"loss; valid: {', '.join(valid) or 'none'}")
    self._info[name] = LossInfo(kind, stateful, logit_params, tuple(inputs), inner,
                                tuple(model_fields))
    return super().register(name)

  def info(self, name: str) -> LossInfo:
    """The LossInfo of `name`; ValueError listing valid names otherwise."""
    self.get(name)
    return self._info[name]

  def listing(self) -> tuple[str, ...]:
    """Names with their kinds, as `softlab list` prints them."""
    return tuple(f"{name} ({self._info[name].describe()})" for name in self.names())


REGISTRY = LossRegistry()
