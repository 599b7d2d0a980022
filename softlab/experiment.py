"""What every layer above the models shares about a training run: the experiment a
trainer builds (`Experiment`: how batches become a loss and predictions) and the
one-line error for a mistake in the user's config (`ConfigError`).

Below both the trainers and the evaluators: a trainer returns an Experiment, an
evaluator reads its `predict`, and neither imports the other.
"""

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax

Params = Any
Extra = Any  # per-run state beside the parameters (e.g. a stateful loss's state)
Metrics = dict[str, jax.Array]


class ConfigError(ValueError):
  """A mistake in the user's config: printed as one line, no traceback."""


@dataclasses.dataclass(frozen=True)
class Experiment:
  """How batches become a loss and predictions; everything else is the loop's job.

  Training metric values are either per-example arrays [B] or scalars that are
  already averages over the batch's real examples; the loop reports both as
  weighted sums over the real examples divided by their total weight
  (softlab.evaluators.weighted_sums), as evaluators do.

  Attributes:
    init_params: rng -> parameters.
    init_extra: parameters -> extra state (an empty dict when there is none).
    loss: (params, extra, batch, rng) -> (scalar loss, (metrics, new extra)).
    predict: (params, extra, batch, *, sown=()) -> the evaluation model's outputs
      on a batch, for evaluators: "loss" (per-example evaluation loss) and, as
      the trainer has them, "logits" and "labels" / "targets",
      "image_embeddings", "text_embeddings", "class_embeddings"; "sown" maps
      each name in `sown` to the values the model sowed under it, in layer order.
    describe_extra: extra -> scalar metrics logged at eval time (may be None).
    param_specs: params -> a like-structured tree of PartitionSpecs over the
      mesh for parameters split across devices (e.g. class centers over
      "data"), P() for the replicated ones; the optimizer state of a parameter
      is split like it. None: everything replicated.
    trainable: params -> a tree of bools like params (True = trained); None
      trains everything. The loop gives frozen parameters no update and no
      optimizer state, so they stay bit-identical.
  """

  init_params: Callable[[jax.Array], Params]
  init_extra: Callable[[Params], Extra]
  loss: Callable[[Params, Extra, Mapping[str, jax.Array], jax.Array], tuple[jax.Array, tuple[Metrics, Extra]]]
  predict: Callable[..., dict[str, Any]]
  describe_extra: Callable[[Extra], Metrics] | None = None
  param_specs: Callable[[Params], Any] | None = None
  trainable: Callable[[Params], Any] | None = None
