"""User data from a `.npz` file, so real datasets plug into the classification trainer."""

import os
import zipfile
import zlib

import numpy as np

from softlab.data.base import (REGISTRY, array_dataset, check_labelled_split, class_count,
                               noisy_train_split, reject_unknown)
from softlab.validation import check_integer

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def read_arrays(path: str) -> dict[str, np.ndarray]:
  """The arrays NPZ_KEYS of the archive at `path` (allow_pickle=False).

  A file that is no .npz archive (empty, truncated, another format) or whose
  arrays cannot be read is one ValueError "path: <file> is not a readable .npz
  archive (<why>)", never numpy's advice to unpickle it.
  """
  if not path or not os.path.isfile(path):
    raise ValueError(f"path: no such .npz file: {path!r}")
  unreadable = lambda why: ValueError(f"path: {path} is not a readable .npz archive ({why})")
  if not os.path.getsize(path):
    raise unreadable("the file is empty")
  if not zipfile.is_zipfile(path):
    raise unreadable("not a zip archive as np.savez writes: another format, or truncated")
  with np.load(path, allow_pickle=False) as archive:
    missing = [k for k in NPZ_KEYS if k not in archive]
    if missing:
      raise ValueError(f"path: {path} lacks array(s) {', '.join(missing)}; needs "
                       f"{', '.join(NPZ_KEYS)}")
    arrays = {}
    for key in NPZ_KEYS:
      try:
        arrays[key] = archive[key]
      except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as error:
        raise unreadable(f"{key}: {type(error).__name__}: {error}") from None
  return arrays


@REGISTRY.register("npz")
def npz(options, *, batch_size, eval_batch_size, seed):
  """Arrays x_train, y_train, x_test, y_test (integer labels) from `path`.

  Loaded with allow_pickle=False and checked before anything is built
  (`base.check_labelled_split`, `base.class_count`): a bad array is one line
  naming the file, the array and its first bad entry. num_classes defaults to
  max label + 1. Label noise and validation options as for `digits` apply to
  the training split.
  """
  path = options.pop("path", None)
  num_classes = options.pop("num_classes", None)
  if num_classes is not None:
    check_integer(num_classes, "num_classes")
  arrays = read_arrays(path)
  try:
    splits = {split: check_labelled_split(arrays[f"x_{split}"], arrays[f"y_{split}"], split)
              for split in ("train", "test")}
    if splits["train"][0].shape[1:] != splits["test"][0].shape[1:]:
      raise ValueError(f"x_test rows have shape {splits['test'][0].shape[1:]}, x_train rows "
                       f"{splits['train'][0].shape[1:]}; they must match")
    num_classes = class_count({f"y_{s}": y for s, (_, y) in splits.items()}, num_classes)
  except ValueError as error:
    raise ValueError(f"{path}: {error}") from None
  (x_train, y_train), (x_test, y_test) = splits["train"], splits["test"]
  train, val = noisy_train_split(x_train, y_train.astype(np.int32), num_classes, options, seed)
  reject_unknown(options, "npz")
  return array_dataset(
      train, {"test": {"inputs": x_test, "labels": y_test.astype(np.int32)}, **val},
      {"num_classes": num_classes, "input_shape": x_train.shape[1:]},
      batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed,
  )
