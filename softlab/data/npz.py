"""User data from a `.npz` file, so real datasets plug into the classification trainer."""

import os

import numpy as np

from softlab.data.base import REGISTRY, array_dataset, noisy_train_split, reject_unknown

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


@REGISTRY.register("npz")
def npz(options, *, batch_size, eval_batch_size, seed):
  """Arrays x_train, y_train, x_test, y_test (integer labels) from `path`.

  Loaded with allow_pickle=False. num_classes defaults to max label + 1.
  Label noise and validation options as for `digits` apply to the training split.
  """
  path = options.pop("path", None)
  if not path or not os.path.isfile(path):
    raise ValueError(f"path: no such .npz file: {path!r}")
  with np.load(path, allow_pickle=False) as archive:
    missing = [k for k in NPZ_KEYS if k not in archive]
    if missing:
      raise ValueError(f"path: {path} lacks array(s) {', '.join(missing)}; needs {', '.join(NPZ_KEYS)}")
    x_train, y_train, x_test, y_test = (archive[k] for k in NPZ_KEYS)
  num_classes = options.pop("num_classes", int(max(y_train.max(), y_test.max())) + 1)
  train, val = noisy_train_split(x_train.astype(np.float32), y_train.astype(np.int32),
                            num_classes, options, seed)
  reject_unknown(options, "npz")
  return array_dataset(
      train, {"test": {"inputs": x_test.astype(np.float32), "labels": y_test.astype(np.int32)},
              **val},
      {"num_classes": num_classes, "input_shape": x_train.shape[1:]},
      batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed,
  )
