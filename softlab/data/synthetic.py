"""Synthetic tasks: modular arithmetic, sparse parity, max-retrieval, associative recall,
Gaussian clusters."""

import numpy as np

from softlab.data.base import (REGISTRY, Dataset, array_dataset, chunk, noisy_train_split,
                               reject_unknown, require_batch_size, rng_for, split_indices,
                               with_weight)
from softlab.validation import check_integer

MODULAR_OPS = {
    "add": lambda a, b, p: (a + b) % p,
    "sub": lambda a, b, p: (a - b) % p,
    "mul": lambda a, b, p: (a * b) % p,
}
ENCODINGS = ("one_hot", "tokens")


@REGISTRY.register("modular_arithmetic")
def modular_arithmetic(options, *, batch_size, eval_batch_size, seed):
  """All pairs (a, b) in [0, p)^2 labelled (a op b) mod p, split by `train_fraction`.

  encoding "one_hot": the concatenated one-hots of a and b (2p inputs, as in
  "Grokking at the Edge of Numerical Stability", arXiv:2501.04697);
  "tokens": the pair of token ids, for a transformer predicting at the last token.
  """
  op = options.pop("op", "add")
  p = options.pop("p", 113)
  train_fraction = options.pop("train_fraction", 0.4)
  encoding = options.pop("encoding", "one_hot")
  reject_unknown(options, "modular_arithmetic")
  check_integer(p, "p", minimum=2)
  if op not in MODULAR_OPS:
    raise ValueError(f"op {op!r}; valid: {', '.join(MODULAR_OPS)}")
  if encoding not in ENCODINGS:
    raise ValueError(f"encoding {encoding!r}; valid: {', '.join(ENCODINGS)}")
  a, b = (g.ravel() for g in np.meshgrid(np.arange(p), np.arange(p), indexing="ij"))
  labels = MODULAR_OPS[op](a, b, p).astype(np.int32)
  if encoding == "one_hot":
    eye = np.eye(p, dtype=np.float32)
    inputs = np.concatenate([eye[a], eye[b]], axis=1)
    info = {"num_classes": p, "input_shape": (2 * p,)}
  else:
    inputs = np.stack([a, b], axis=1).astype(np.int32)
    info = {"num_classes": p, "input_shape": (2,), "vocab_size": p}
  train, test = split_indices(p * p, train_fraction, seed, name="train_fraction", held_out=False)
  return array_dataset(
      {"inputs": inputs[train], "labels": labels[train]},
      {"test": {"inputs": inputs[test], "labels": labels[test]}},
      info, batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed,
  )


@REGISTRY.register("sparse_parity")
def sparse_parity(options, *, batch_size, eval_batch_size, seed):
  """Random bit strings labelled by the parity of their first `parity_bits` bits."""
  num_bits = options.pop("num_bits", 43)
  parity_bits = options.pop("parity_bits", 3)
  num_samples = options.pop("num_samples", 2000)
  test_fraction = options.pop("test_fraction", 0.5)
  reject_unknown(options, "sparse_parity")
  check_integer(num_bits, "num_bits")
  check_integer(num_samples, "num_samples", minimum=2)
  if not 0 < parity_bits <= num_bits:
    raise ValueError(f"parity_bits must be in [1, num_bits={num_bits}], got {parity_bits}")
  bits = rng_for(seed, 3).integers(0, 2, (num_samples, num_bits))
  labels = (bits[:, :parity_bits].sum(1) % 2).astype(np.int32)
  inputs = bits.astype(np.float32)
  train, test = split_indices(num_samples, test_fraction, seed)
  return array_dataset(
      {"inputs": inputs[train], "labels": labels[train]},
      {"test": {"inputs": inputs[test], "labels": labels[test]}},
      {"num_classes": 2, "input_shape": (num_bits,)},
      batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed,
  )


def max_retrieval_sample(rng, num_examples, lengths, max_length, num_classes):
  """Sets of items (class one-hot, priority in U[0, 1]); the label is the class
  of the highest-priority item. Items beyond each set's length are padding."""
  classes = rng.integers(0, num_classes, (num_examples, max_length))
  priority = rng.random((num_examples, max_length)).astype(np.float32)
  mask = np.arange(max_length)[None, :] < lengths[:, None]
  target = np.argmax(np.where(mask, priority, -1.0), axis=1).astype(np.int32)
  features = np.concatenate(
      [np.eye(num_classes, dtype=np.float32)[classes], priority[..., None]], axis=-1
  )
  features = np.where(mask[..., None], features, 0.0).astype(np.float32)
  labels = classes[np.arange(num_examples), target].astype(np.int32)
  return {"inputs": features, "mask": mask, "labels": labels, "target": target}


@REGISTRY.register("max_retrieval")
def max_retrieval(options, *, batch_size, eval_batch_size, seed):
  """Predict the class of the highest-priority item of a set.

  Train on sets of `train_min_items`..`train_max_items` items (fresh samples
  every step; with `train_size` = N, on N sets drawn once, so a batch of at
  least N is full-batch gradient descent on a fixed training set); evaluate out
  of distribution at each of `test_lengths`. From "softmax is not enough (for
  sharp out-of-distribution)", arXiv:2410.01104.
  """
  num_classes = options.pop("num_classes", 10)
  low = options.pop("train_min_items", 5)
  high = options.pop("train_max_items", 16)
  test_lengths = tuple(options.pop("test_lengths", (16, 64, 256, 1024)))
  test_size = options.pop("test_size", 512)
  train_size = options.pop("train_size", None)
  reject_unknown(options, "max_retrieval")
  require_batch_size(batch_size, "max_retrieval")
  check_integer(num_classes, "num_classes")
  check_integer(test_size, "test_size")
  for i, length in enumerate(test_lengths):
    check_integer(length, f"test_lengths[{i}]")
  if not 1 <= low <= high:
    raise ValueError(f"need 1 <= train_min_items <= train_max_items, got {low}, {high}")
  if train_size is not None and (not isinstance(train_size, int) or train_size < 1):
    raise ValueError(f"train_size must be an integer >= 1 or None, got {train_size!r}")

  def train_batch(step):
    rng = rng_for(seed, 4, step)
    lengths = rng.integers(low, high + 1, batch_size)
    return with_weight(max_retrieval_sample(rng, batch_size, lengths, high, num_classes))

  splits = {}
  for length in test_lengths:
    rng = rng_for(seed, 5, length)
    lengths = np.full(test_size, length)
    splits[f"test_{length}"] = max_retrieval_sample(rng, test_size, lengths, length, num_classes)
  info = {"num_classes": num_classes, "input_shape": (high, num_classes + 1),
          "feature_dim": num_classes + 1}
  if train_size is not None:
    rng = rng_for(seed, 6)
    train = max_retrieval_sample(rng, train_size, rng.integers(low, high + 1, train_size), high,
                                 num_classes)
    return array_dataset(train, splits, info, batch_size=batch_size,
                         eval_batch_size=eval_batch_size, seed=seed)
  eval_splits = {name: chunk(split, eval_batch_size) for name, split in splits.items()}
  return Dataset(train_batch=train_batch, eval_splits=eval_splits, info=info)


def associative_recall_sample(rng, num_examples, num_pairs, num_keys, num_values):
  """Sequences k1 v1 ... kn vn q; the label is the value stored under key q.

  Keys are tokens [0, num_keys), values [num_keys, num_keys + num_values).
  """
  keys = np.argsort(rng.random((num_examples, num_keys)), axis=1)[:, :num_pairs]
  values = rng.integers(0, num_values, (num_examples, num_pairs)) + num_keys
  pick = rng.integers(0, num_pairs, num_examples)
  rows = np.arange(num_examples)
  tokens = np.empty((num_examples, 2 * num_pairs + 1), np.int32)
  tokens[:, 0:-1:2], tokens[:, 1:-1:2] = keys, values
  tokens[:, -1] = keys[rows, pick]
  return {"tokens": tokens, "labels": (values[rows, pick] - num_keys).astype(np.int32)}


@REGISTRY.register("associative_recall")
def associative_recall(options, *, batch_size, eval_batch_size, seed):
  """Key-value associative recall with a length knob (the needle task).

  Trains on `train_pairs` pairs and evaluates at each of `test_pairs`; the
  model reads the whole sequence and predicts (one of `num_values` classes)
  at the last token.
  """
  num_keys = options.pop("num_keys", 64)
  num_values = options.pop("num_values", 16)
  train_pairs = options.pop("train_pairs", 8)
  test_pairs = tuple(options.pop("test_pairs", (8, 16, 32)))
  test_size = options.pop("test_size", 512)
  reject_unknown(options, "associative_recall")
  require_batch_size(batch_size, "associative_recall")
  for name, value in (("num_keys", num_keys), ("num_values", num_values),
                      ("train_pairs", train_pairs), ("test_size", test_size),
                      *((f"test_pairs[{i}]", pairs) for i, pairs in enumerate(test_pairs))):
    check_integer(value, name)
  if max(train_pairs, *test_pairs) > num_keys:
    raise ValueError(f"pairs per sequence cannot exceed num_keys={num_keys}")

  def train_batch(step):
    return with_weight(associative_recall_sample(
        rng_for(seed, 6, step), batch_size, train_pairs, num_keys, num_values))

  splits = {
      f"test_{pairs}": chunk(associative_recall_sample(
          rng_for(seed, 7, pairs), test_size, pairs, num_keys, num_values), eval_batch_size)
      for pairs in test_pairs
  }
  info = {"num_classes": num_values, "vocab_size": num_keys + num_values,
          "input_shape": (2 * train_pairs + 1,)}
  return Dataset(train_batch=train_batch, eval_splits=splits, info=info)


def gaussian_cluster_arrays(rng, means, per_class):
  """`per_class` draws of N(mean_k, I) for every class k, in class order (balanced)."""
  num_classes, dim = means.shape
  labels = np.repeat(np.arange(num_classes, dtype=np.int32), per_class)
  inputs = means[labels] + rng.standard_normal((len(labels), dim))
  return inputs.astype(np.float32), labels


def multilabel_cluster_arrays(rng, means, per_class, max_labels):
  """Like `gaussian_cluster_arrays`, with 1 to max_labels classes per example.

  Example i's first class is i's balanced class (per_class examples each), and
  L - 1 further distinct classes join it, L ~ uniform{1, ..., max_labels};
  x = sum of the chosen classes' means + N(0, I). Labels: a [N, K] float32
  0/1 label matrix.
  """
  inputs, first = gaussian_cluster_arrays(rng, means, per_class)
  num_classes = means.shape[0]
  counts = rng.integers(1, max_labels + 1, len(first))
  label_matrix = np.zeros((len(first), num_classes), np.float32)
  for i, (k, count) in enumerate(zip(first, counts)):
    others = rng.permutation(np.delete(np.arange(num_classes), k))[: count - 1]
    label_matrix[i, k] = 1.0
    label_matrix[i, others] = 1.0
    inputs[i] += means[others].sum(0).astype(np.float32)
  return inputs, label_matrix


@REGISTRY.register("gaussian_clusters")
def gaussian_clusters(options, *, batch_size, eval_batch_size, seed):
  """K classes of isotropic Gaussian clusters, x = mu_y + N(0, I_dim), with class
  means mu_k ~ N(0, separation^2 I_dim) drawn once per seed.

  Balanced: `train_per_class` training and `test_per_class` test examples per
  class. A classification task whose number of classes is a free knob (the
  scikit-learn tabular sets stop at K = 10). Label noise and a validation split
  as for `digits` (`label_noise`, `noise_rate`, `val_fraction`; see
  `base.noisy_train_split`); the test split stays clean.

  `max_labels` > 1 makes it multi-label: every example carries 1 to
  max_labels distinct classes (the number uniform), x = the sum of their
  means + N(0, I_dim), and "labels" is a [N, K] 0/1 label matrix
  (info["multilabel"] = True; no label noise).
  """
  num_classes = options.pop("num_classes", 10)
  dim = options.pop("dim", 16)
  separation = options.pop("separation", 1.0)
  train_per_class = options.pop("train_per_class", 50)
  test_per_class = options.pop("test_per_class", 20)
  max_labels = options.pop("max_labels", 1)
  for name, value, low in (("num_classes", num_classes, 2), ("dim", dim, 1),
                           ("train_per_class", train_per_class, 1),
                           ("test_per_class", test_per_class, 1), ("max_labels", max_labels, 1)):
    check_integer(value, name, minimum=low)
  if not separation > 0:
    raise ValueError(f"separation must be > 0, got {separation}")
  if max_labels > num_classes:
    raise ValueError(f"max_labels must be <= num_classes = {num_classes}, got {max_labels}")
  multilabel = max_labels > 1
  if multilabel and options.get("label_noise", "none") != "none":
    raise ValueError("label_noise needs single labels; with max_labels > 1 use 'none'")
  means = separation * rng_for(seed, 20).standard_normal((num_classes, dim))
  if multilabel:
    draw = lambda stream, count: multilabel_cluster_arrays(rng_for(seed, stream), means, count,
                                                          max_labels)
  else:
    draw = lambda stream, count: gaussian_cluster_arrays(rng_for(seed, stream), means, count)
  train_inputs, train_labels = draw(21, train_per_class)
  test_inputs, test_labels = draw(22, test_per_class)
  train, val = noisy_train_split(train_inputs, train_labels, num_classes, options, seed)
  reject_unknown(options, "gaussian_clusters")
  info = {"num_classes": num_classes, "input_shape": (dim,)}
  return array_dataset(
      train, {"test": {"inputs": test_inputs, "labels": test_labels}, **val},
      {**info, "multilabel": True} if multilabel else info,
      batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed,
  )
