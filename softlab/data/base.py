"""The dataset interface, the registry, and batching shared by every dataset."""

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from softlab.registry import Registry
from softlab.validation import FieldError, check_finite, check_number, first_index

REGISTRY = Registry("dataset")

Batch = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A training stream and fixed evaluation splits, all host-side NumPy.

  Attributes:
    train_batch: step -> the global training batch at that step; a pure
      function of (seed, step). Every batch has a float "weight" entry (1 for
      real examples), so padding with weight-0 examples leaves means unchanged.
    eval_splits: split name -> list of batches covering the split once.
    info: what models need to know (num_classes, input_shape, vocab_size, ...).
    train_arrays: the full training set for datasets that have one (per-example
      state such as ALDR-KL's lambda is indexed by its "ids").
  """

  train_batch: Callable[[int], Batch]
  eval_splits: Mapping[str, list[Batch]]
  info: Mapping[str, Any]
  train_arrays: Batch | None = None


def build(config, *, batch_size: int | None, eval_batch_size: int, seed: int) -> Dataset:
  """The dataset named by `config.name`, built from the rest of `config`.

  `config.seed`, if present, is the caller's business (it arrives as `seed`).
  """
  builder, options = REGISTRY.from_config(config)
  options.pop("seed", None)
  return builder(options, batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed)


def rng_for(seed: int, *stream: int) -> np.random.Generator:
  """A NumPy generator determined by (seed, *stream) alone."""
  return np.random.default_rng([seed, *stream])


def train_indices(num_examples: int, batch_size: int | None, seed: int, step: int) -> np.ndarray:
  """Example indices of the training batch at `step`.

  None (or a batch at least the size of the set) means full batch: every
  example, in order, every step. Otherwise epochs are seeded permutations and
  the batch is the step's slice (the last partial slice of an epoch is dropped).
  """
  if batch_size is None or batch_size >= num_examples:
    return np.arange(num_examples)
  per_epoch = num_examples // batch_size
  epoch, position = divmod(step, per_epoch)
  order = rng_for(seed, 1, epoch).permutation(num_examples)
  return order[position * batch_size : (position + 1) * batch_size]


def with_weight(batch: Batch) -> Batch:
  """`batch` with a "weight" of ones (one per example)."""
  size = len(next(iter(batch.values())))
  return {**batch, "weight": np.ones(size, np.float32)}


def array_dataset(
    train: Batch,
    splits: Mapping[str, Batch],
    info: Mapping[str, Any],
    *,
    batch_size: int | None,
    eval_batch_size: int,
    seed: int,
) -> Dataset:
  """A Dataset over in-memory arrays; adds "ids" (row numbers) to the train set."""
  num = len(train["labels"])
  train = {**train, "ids": np.arange(num, dtype=np.int32)}

  def train_batch(step: int) -> Batch:
    index = train_indices(num, batch_size, seed, step)
    return with_weight({k: v[index] for k, v in train.items()})

  return Dataset(
      train_batch=train_batch,
      eval_splits={name: chunk(split, eval_batch_size) for name, split in splits.items()},
      info=info,
      train_arrays=train,
  )


def chunk(arrays: Batch, batch_size: int) -> list[Batch]:
  """Consecutive batches covering `arrays` once, each with a "weight"."""
  num = len(next(iter(arrays.values())))
  return [
      with_weight({k: v[start : start + batch_size] for k, v in arrays.items()})
      for start in range(0, num, batch_size)
  ]


def split_indices(num: int, fraction: float, seed: int, *, stream: int = 0,
                  name: str = "test_fraction", held_out: bool = True
                  ) -> tuple[np.ndarray, np.ndarray]:
  """A seeded (train, held-out) partition of range(num); `stream` tells apart
  partitions of the same seed (e.g. test, then validation).

  `fraction` is the option `name`: the held-out share, or the training share
  when not `held_out` (modular arithmetic's train_fraction). It must lie in
  (0, 1) and leave both parts at least one example (FieldError naming it).
  """
  check_number(fraction, name, lambda v: 0 < v < 1, "in (0, 1)", required=True)
  order = rng_for(seed, stream).permutation(num)
  num_test = int(round(num * (fraction if held_out else 1 - fraction)))
  if not 0 < num_test < num:
    raise FieldError(name, f"={fraction} splits {num} examples into {num - num_test} for "
                           f"training and {num_test} held out; both need at least one")
  return np.sort(order[num_test:]), np.sort(order[:num_test])


def check_labelled_split(inputs: np.ndarray, labels: np.ndarray, split: str
                         ) -> tuple[np.ndarray, np.ndarray]:
  """(float32 features, integer labels) of one split of user data, x_<split>, y_<split>.

  Checked so that bad data stops here, not in a silent run: both non-empty,
  features numbers finite in float32, labels one integer class index per
  example (float labels are refused, not truncated; one-hot rows get a hint),
  as many labels as feature rows. ValueError naming the array and its first
  bad entry.
  """
  x_name, y_name = f"x_{split}", f"y_{split}"
  for name, array in ((x_name, inputs), (y_name, labels)):
    if array.ndim == 0 or len(array) == 0:
      raise ValueError(f"{name} has no examples (shape {array.shape}); every split needs one")
  if inputs.dtype.kind not in "biuf":
    raise ValueError(f"{x_name} must hold numbers, got dtype {inputs.dtype}")
  features = check_finite(inputs, x_name)
  if labels.ndim == 2:
    raise ValueError(f"{y_name} of shape {labels.shape} looks like one-hot rows; labels are one "
                     f"class index per example: save {y_name}.argmax(axis=1)")
  if labels.ndim != 1:
    raise ValueError(f"{y_name} must be one class index per example, shape (N,), got shape "
                     f"{labels.shape}")
  if labels.dtype.kind not in "iu":
    fractional = np.flatnonzero(labels != np.round(labels)) if labels.dtype.kind == "f" else []
    example = (f" ({y_name}[{fractional[0]}]={labels[fractional[0]].item()!r})"
               if len(fractional) else "")
    raise ValueError(f"{y_name} must hold integer class indices, got dtype {labels.dtype}"
                     f"{example}: float labels are not rounded, save them as integers")
  if len(features) != len(labels):
    raise ValueError(f"{x_name} has {len(features)} rows but {y_name} has {len(labels)} labels;"
                     " every example needs one")
  return features, labels


def class_count(labels: Mapping[str, np.ndarray], num_classes: int | None) -> int:
  """The number of classes of integer `labels` (by array name), checked before
  anything sized by it (one-hots, an output layer) is allocated.

  Every label must lie in [0, num_classes) when the config sets num_classes;
  otherwise the count is the largest label + 1, which may not exceed the
  number of labelled examples: a stray label of 10**9 is a mistake, not a
  request for a 10**9-way output layer (setting num_classes allows classes
  without examples). ValueError naming the array and the first bad label.
  """
  bound = f"num_classes={num_classes} (set in the config)"
  for name, values in labels.items():
    bad = values < 0 if num_classes is None else (values < 0) | (values >= num_classes)
    if bad.any():
      i = first_index(bad)[0]
      valid = "labels are class indices >= 0" if num_classes is None else (
          f"labels must lie in [0, {num_classes}) for {bound}")
      raise ValueError(f"{name}[{i}]={values[i]} is not a class index: {valid}")
  if num_classes is not None:
    return num_classes
  name, values = max(labels.items(), key=lambda item: item[1].max())
  i = int(np.argmax(values))
  examples = sum(len(v) for v in labels.values())
  if values[i] >= examples:
    raise ValueError(f"{name}[{i}]={values[i]} would make {values[i] + 1} classes for {examples} "
                     "labelled examples; labels must be class indices 0..K-1 (set "
                     "data.num_classes=K for classes without examples)")
  return int(values[i]) + 1


NOISE_KINDS = ("none", "uniform", "class_dependent")


def apply_label_noise(
    labels: np.ndarray, num_classes: int, *, kind: str, rate: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
  """(noisy labels, is_noisy) for the training split only.

  uniform: with probability `rate` the label is redrawn uniformly over all
  classes (it may land on the true class). class_dependent: with probability
  `rate` the label y becomes (y + 1) mod K. Seeded, so runs repeat exactly.
  """
  if kind not in NOISE_KINDS:
    raise ValueError(f"label noise kind {kind!r}; valid: {', '.join(NOISE_KINDS)}")
  if not 0 <= rate <= 1:
    raise ValueError(f"label noise rate must be in [0, 1], got {rate}")
  if kind == "none" or rate == 0:
    return labels.copy(), np.zeros(len(labels), bool)
  rng = rng_for(seed, 2)
  flip = rng.random(len(labels)) < rate
  if kind == "uniform":
    replacement = rng.integers(0, num_classes, len(labels))
  else:
    replacement = (labels + 1) % num_classes
  noisy = np.where(flip, replacement, labels).astype(labels.dtype)
  return noisy, noisy != labels


VALIDATION_STREAM = 10


def noisy_train_split(
    inputs: np.ndarray, labels: np.ndarray, num_classes: int, options: dict, seed: int
) -> tuple[Batch, dict[str, Batch]]:
  """(training arrays, extra evaluation splits): the configured label noise
  (`label_noise`, `noise_rate`; clean labels kept) and, when `val_fraction` > 0,
  a seeded "val" split held out of the training rows.

  The noise is drawn before the hold-out, so validation labels are exactly as
  noisy as training labels: a model is selected on the data one has, as in the
  LDR paper's released protocol (k-fold cross-validation on the noisy training
  set; only the test split is clean). With `val_fraction` 0 (the default) the
  training arrays are what they were without the option.
  """
  noisy, is_noisy = apply_label_noise(
      labels, num_classes, kind=options.pop("label_noise", "none"),
      rate=options.pop("noise_rate", 0.0), seed=seed,
  )
  train = {"inputs": inputs, "labels": noisy, "clean_labels": labels, "is_noisy": is_noisy}
  val_fraction = options.pop("val_fraction", 0.0)
  if val_fraction == 0:
    return train, {}
  if not 0 < val_fraction < 1:
    raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
  kept, held = split_indices(len(labels), val_fraction, seed, stream=VALIDATION_STREAM,
                             name="val_fraction")
  return ({k: v[kept] for k, v in train.items()},
          {"val": {"inputs": inputs[held], "labels": noisy[held]}})


reject_unknown = REGISTRY.reject_unknown


def require_batch_size(batch_size: int | None, dataset: str) -> None:
  """Streaming datasets have no full batch: they need an explicit batch size."""
  if batch_size is None:
    raise ValueError(f"dataset {dataset!r} streams fresh examples; set train.batch_size")
