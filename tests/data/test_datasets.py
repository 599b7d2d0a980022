"""Datasets: contents, determinism in (seed, step), splits, label noise, errors."""


import ml_collections
import numpy as np
import pytest

from softlab import data
from softlab.data import base, digits


def build(batch_size=32, eval_batch_size=256, seed=0, **options):
  return data.build(ml_collections.ConfigDict(options), batch_size=batch_size,
                    eval_batch_size=eval_batch_size, seed=seed)


def test_modular_arithmetic_labels_and_split():
  dataset = build(name="modular_arithmetic", p=13, train_fraction=0.4, batch_size=None)
  train = dataset.train_arrays
  test = dataset.eval_splits["test"][0]
  assert len(train["labels"]) + len(test["labels"]) == 169
  assert len(train["labels"]) == round(169 * 0.4)
  for split in (train, test):
    a, b = split["inputs"][:, :13].argmax(1), split["inputs"][:, 13:].argmax(1)
    np.testing.assert_array_equal(split["labels"], (a + b) % 13)
  pairs = lambda s: {tuple(r) for r in s["inputs"].astype(int)}
  assert not pairs(train) & pairs(test)
  full = dataset.train_batch(7)
  np.testing.assert_array_equal(full["labels"], train["labels"])  # full batch every step
  tokens = build(name="modular_arithmetic", p=7, op="mul", encoding="tokens", batch_size=None)
  t = tokens.train_arrays
  np.testing.assert_array_equal(t["labels"], (t["inputs"][:, 0] * t["inputs"][:, 1]) % 7)


def test_minibatches_depend_only_on_seed_and_step():
  one = build(name="digits", batch_size=64)
  two = build(name="digits", batch_size=64)
  for step in (0, 5, 100):
    a, b = one.train_batch(step), two.train_batch(step)
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  assert not np.array_equal(one.train_batch(0)["ids"], one.train_batch(1)["ids"])
  other = build(name="digits", batch_size=64, seed=1)
  assert not np.array_equal(one.train_batch(0)["ids"], other.train_batch(0)["ids"])
  # An epoch visits every example at most once.
  per_epoch = len(one.train_arrays["labels"]) // 64
  ids = np.concatenate([one.train_batch(s)["ids"] for s in range(per_epoch)])
  assert len(np.unique(ids)) == len(ids)


@pytest.mark.parametrize("kind, rate", [("uniform", 0.3), ("uniform", 0.6), ("class_dependent", 0.3)])
def test_label_noise_rates_and_train_only(kind, rate):
  labels = np.random.default_rng(0).integers(0, 10, 20000)
  noisy, is_noisy = base.apply_label_noise(labels, 10, kind=kind, rate=rate, seed=0)
  flipped = rate * (0.9 if kind == "uniform" else 1.0)  # uniform may redraw the true class
  assert abs(is_noisy.mean() - flipped) < 0.015
  np.testing.assert_array_equal(is_noisy, noisy != labels)
  if kind == "class_dependent":
    np.testing.assert_array_equal(noisy[is_noisy], (labels[is_noisy] + 1) % 10)
  dataset = build(name="digits", label_noise=kind, noise_rate=rate)
  train = dataset.train_arrays
  assert train["is_noisy"].any()
  np.testing.assert_array_equal(train["labels"] != train["clean_labels"], train["is_noisy"])
  clean = build(name="digits")
  np.testing.assert_array_equal(dataset.eval_splits["test"][0]["labels"],
                                clean.eval_splits["test"][0]["labels"])


def test_gaussian_clusters_shapes_balance_and_determinism():
  options = dict(name="gaussian_clusters", num_classes=26, dim=5, train_per_class=30,
                 test_per_class=4)
  dataset = build(**options)
  train, test = dataset.train_arrays, dataset.eval_splits["test"][0]
  assert dataset.info == {"num_classes": 26, "input_shape": (5,)}
  assert train["inputs"].shape == (780, 5) and train["inputs"].dtype == np.float32
  assert test["inputs"].shape == (104, 5) and list(dataset.eval_splits) == ["test"]
  np.testing.assert_array_equal(np.bincount(train["labels"]), np.full(26, 30))
  np.testing.assert_array_equal(np.bincount(test["labels"]), np.full(26, 4))
  again = build(**options).train_arrays
  np.testing.assert_array_equal(again["inputs"], train["inputs"])
  assert not np.array_equal(build(**options, seed=1).train_arrays["inputs"], train["inputs"])
  # Examples lie around their class mean: the nearest class centroid of the training set
  # labels well-separated test data correctly.
  far = build(**{**options, "separation": 20.0})
  x, y = far.train_arrays["inputs"], far.train_arrays["labels"]
  centroids = np.stack([x[y == k].mean(0) for k in range(26)])
  t = far.eval_splits["test"][0]
  nearest = np.argmin(((t["inputs"][:, None] - centroids[None]) ** 2).sum(-1), axis=1)
  np.testing.assert_array_equal(nearest, t["labels"])
  # Within-class spread is the unit normal.
  np.testing.assert_allclose((x - centroids[y]).std(), 1.0, atol=0.05)


@pytest.mark.parametrize("name", ["digits", "gaussian_clusters"])
def test_validation_split_is_held_out_of_train_with_its_noisy_labels(name):
  noise = dict(label_noise="uniform", noise_rate=0.4)
  full = build(name=name, **noise).train_arrays
  dataset = build(name=name, val_fraction=0.2, **noise)
  train, val = dataset.train_arrays, dataset.eval_splits["val"][0]
  assert len(val["labels"]) == round(0.2 * len(full["labels"]))
  assert len(train["labels"]) + len(val["labels"]) == len(full["labels"])
  rows = lambda arrays: {row.tobytes() for row in arrays["inputs"]}
  assert not rows(train) & rows(val) and rows(train) | rows(val) == rows(full)
  # The noise is drawn before the hold-out: every row keeps its (noisy) label.
  label_of = {row.tobytes(): label for row, label in zip(full["inputs"], full["labels"])}
  for split in (train, val):
    np.testing.assert_array_equal([label_of[r.tobytes()] for r in split["inputs"]], split["labels"])
  clean_of = {row.tobytes(): label for row, label in zip(full["inputs"], full["clean_labels"])}
  assert any(clean_of[r.tobytes()] != label for r, label in zip(val["inputs"], val["labels"]))
  np.testing.assert_array_equal(train["labels"] != train["clean_labels"], train["is_noisy"])
  # The test split does not move.
  np.testing.assert_array_equal(dataset.eval_splits["test"][0]["inputs"],
                                build(name=name).eval_splits["test"][0]["inputs"])
  # Seeded: the same hold-out every time.
  again = build(name=name, val_fraction=0.2, **noise).eval_splits["val"][0]
  np.testing.assert_array_equal(again["inputs"], val["inputs"])


def test_digits_are_real_images():
  dataset = build(name="digits", layout="image", batch_size=None)
  x = dataset.train_arrays["inputs"]
  assert x.shape[1:] == (8, 8, 1) and 0 <= x.min() and x.max() <= 1
  total = len(dataset.train_arrays["labels"]) + sum(len(b["labels"]) for b in dataset.eval_splits["test"])
  assert total == 1797


def test_max_retrieval_label_is_class_of_highest_priority():
  dataset = build(name="max_retrieval", test_lengths=(16, 64), test_size=100)
  batch = dataset.train_batch(3)
  lengths = batch["mask"].sum(1)
  assert lengths.min() >= 5 and lengths.max() <= 16
  priority = np.where(batch["mask"], batch["inputs"][..., -1], -1)
  target = priority.argmax(1)
  np.testing.assert_array_equal(target, batch["target"])
  np.testing.assert_array_equal(batch["inputs"][np.arange(32), target, :10].argmax(1), batch["labels"])
  assert dataset.eval_splits["test_64"][0]["inputs"].shape == (100, 64, 11)


def test_max_retrieval_fixed_training_set_is_full_batch_gradient_descent():
  fresh = build(name="max_retrieval", test_lengths=(16,), test_size=20)
  fixed = build(name="max_retrieval", test_lengths=(16,), test_size=20, train_size=32)
  first, later = fixed.train_batch(0), fixed.train_batch(5)
  for key in ("inputs", "mask", "labels"):
    np.testing.assert_array_equal(first[key], later[key])  # the same 32 sets every step
    np.testing.assert_array_equal(first[key], fixed.train_arrays[key])
  np.testing.assert_array_equal(first["inputs"][np.arange(32), first["target"], :10].argmax(1),
                                first["labels"])
  assert not np.array_equal(fresh.train_batch(0)["inputs"], fresh.train_batch(5)["inputs"])
  for key in ("inputs", "labels"):  # the test split does not depend on train_size
    np.testing.assert_array_equal(fixed.eval_splits["test_16"][0][key],
                                  fresh.eval_splits["test_16"][0][key])
  shuffled = build(name="max_retrieval", test_lengths=(16,), test_size=20, train_size=64)
  assert len(shuffled.train_batch(0)["labels"]) == 32  # batches of 32 out of 64 sets


def test_associative_recall_answer_is_stored_value():
  dataset = build(name="associative_recall", num_keys=20, num_values=5, train_pairs=4, test_pairs=(4, 8))
  batch = dataset.train_batch(0)
  tokens = batch["tokens"]
  for row, label in zip(tokens, batch["labels"]):
    keys, values = row[0:-1:2], row[1:-1:2]
    assert len(set(keys)) == len(keys)
    assert values[list(keys).index(row[-1])] - 20 == label


def test_text_corpus_windows_and_eval_lengths():
  dataset = build(name="text_corpus", seq_len=32, eval_lengths=(32, 128), eval_windows=4, batch_size=8)
  batch = dataset.train_batch(0)["tokens"]
  assert batch.shape == (8, 33) and batch.max() < dataset.info["vocab_size"]
  vocabulary = dataset.info["vocabulary"]
  text = "".join(vocabulary[t] for t in batch[0])
  assert text in data.corpus.corpus_text()
  assert dataset.eval_splits["val_128"][0]["tokens"].shape == (4, 129)


def test_text_corpus_bos_starts_every_window_and_shifts_targets():
  options = dict(name="text_corpus", seq_len=32, eval_lengths=(32, 64), eval_windows=4,
                 batch_size=8, eval_batch_size=3)
  plain, bos = build(**options), build(**options, bos=True)
  characters = plain.info["vocab_size"]
  assert bos.info["vocab_size"] == characters + 1 and bos.info["bos_id"] == characters
  assert "bos_id" not in plain.info
  text = data.corpus.corpus_text()
  vocabulary = bos.info["vocabulary"]
  batch = bos.train_batch(0)["tokens"]
  assert batch.shape == (8, 33)  # BOS + 32 characters: inputs [BOS, c1..c31], targets c1..c32
  np.testing.assert_array_equal(batch[:, 0], characters)
  assert batch[:, 1:].max() < characters
  for row in batch:
    assert "".join(vocabulary[t] for t in row[1:]) in text
  inputs, targets = batch[:, :-1], batch[:, 1:]
  assert (inputs[:, 0] == characters).all() and not (targets == characters).any()
  np.testing.assert_array_equal(inputs[:, 1:], targets[:, :-1])
  np.testing.assert_array_equal(batch, build(**options, bos=True).train_batch(0)["tokens"])
  assert not np.array_equal(batch, bos.train_batch(1)["tokens"])
  for length in (32, 64):
    windows = np.concatenate([b["tokens"] for b in bos.eval_splits[f"val_{length}"]])
    assert windows.shape == (4, length + 1)
    np.testing.assert_array_equal(windows[:, 0], characters)
    assert windows[:, 1:].max() < characters
    chunks = ["".join(vocabulary[t] for t in row[1:]) for row in windows]
    assert "".join(chunks) in text  # consecutive, non-overlapping windows of the validation text
  with pytest.raises(ValueError, match="text_corpus bos must be True or False"):
    build(**options, bos="yes")


def test_digit_captions_name_the_digit_and_prompts_exist():
  dataset = build(name="digit_captions", batch_size=16)
  batch = dataset.train_batch(0)
  vocabulary = digits.caption_vocabulary()
  for tokens, label in zip(batch["tokens"], batch["labels"]):
    words = [vocabulary[t] for t in tokens if t]
    assert digits.DIGIT_NAMES[label] in words
  assert dataset.info["class_prompts"].shape == (10, 6)
  test = dataset.eval_splits["test"][0]  # fixed captions of the test images, for retrieval
  assert test["tokens"].shape == (len(test["labels"]), 6)
  for tokens, label in zip(test["tokens"], test["labels"]):
    assert digits.DIGIT_NAMES[label] in [vocabulary[t] for t in tokens if t]
  again = build(name="digit_captions", batch_size=16).eval_splits["test"][0]["tokens"]
  np.testing.assert_array_equal(again, test["tokens"])


def test_npz_loader(tmp_path):
  rng = np.random.default_rng(0)
  path = tmp_path / "toy.npz"
  np.savez(path, x_train=rng.normal(size=(50, 3)), y_train=rng.integers(0, 4, 50),
           x_test=rng.normal(size=(20, 3)), y_test=rng.integers(0, 4, 20))
  dataset = build(name="npz", path=str(path))
  assert dataset.info["num_classes"] == 4 and dataset.train_batch(0)["inputs"].shape == (32, 3)
  with pytest.raises(ValueError, match="no such .npz file"):
    build(name="npz", path=str(tmp_path / "missing.npz"))
  np.savez(tmp_path / "partial.npz", x_train=np.zeros((2, 2)))
  with pytest.raises(ValueError, match="lacks array"):
    build(name="npz", path=str(tmp_path / "partial.npz"))


@pytest.mark.parametrize("options, message", [
    ({"name": "nope"}, "unknown dataset 'nope'; valid: .*digits"),
    ({"name": "digits", "colour": 1}, "unknown field.*colour"),
    ({"name": "digits", "label_noise": "gaussian"}, "label noise kind 'gaussian'; valid"),
    ({"name": "modular_arithmetic", "op": "pow"}, "op 'pow'; valid: add, sub, mul"),
    ({"name": "max_retrieval", "batch_size": None}, "set train.batch_size"),
    ({"name": "max_retrieval", "train_size": 0}, "train_size must be an integer >= 1 or None, got 0"),
    ({"name": "digits", "val_fraction": 1.0}, r"val_fraction must be in \[0, 1\), got 1.0"),
    ({"name": "gaussian_clusters", "num_classes": 1}, "num_classes must be an integer >= 2, got 1"),
    ({"name": "gaussian_clusters", "separation": 0.0}, "separation must be > 0, got 0.0"),
    ({"name": "gaussian_clusters", "radius": 1}, "unknown field.*radius"),
])
def test_bad_options_raise_one_line_errors(options, message):
  options = dict(options)
  batch_size = options.pop("batch_size", 32)
  with pytest.raises(ValueError, match=message):
    build(batch_size=batch_size, **options)


def test_gaussian_clusters_multilabel_option():
  options = dict(name="gaussian_clusters", num_classes=12, dim=6, train_per_class=10,
                 test_per_class=3, max_labels=5, separation=20.0)
  dataset = build(**options)
  train = dataset.train_arrays
  assert dataset.info == {"num_classes": 12, "input_shape": (6,), "multilabel": True}
  labels = train["labels"]
  assert labels.shape == (120, 12) and labels.dtype == np.float32
  assert set(np.unique(labels)) == {0.0, 1.0}
  counts = labels.sum(1)
  assert counts.min() == 1 and counts.max() == 5 and len(np.unique(counts)) == 5
  np.testing.assert_array_equal(labels[np.arange(120), np.repeat(np.arange(12), 10)], 1.0)
  # x = sum of the label set's means + unit noise: the means solve x ~ labels @ means.
  means, *_ = np.linalg.lstsq(labels, train["inputs"], rcond=None)
  np.testing.assert_allclose((train["inputs"] - labels @ means).std(), 1.0, atol=0.1)
  assert dataset.eval_splits["test"][0]["labels"].shape == (36, 12)
  np.testing.assert_array_equal(build(**options).train_arrays["inputs"], train["inputs"])
  with pytest.raises(ValueError, match="label_noise needs single labels"):
    build(**options, label_noise="uniform", noise_rate=0.2)
  with pytest.raises(ValueError, match="max_labels must be <= num_classes = 12, got 13"):
    build(**{**options, "max_labels": 13})
