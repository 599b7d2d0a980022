"""synthetic_identities: determinism, splits, long tail, conflicting identities, known quality."""

import ml_collections
import numpy as np
import pytest

from softlab import data


def build(batch_size=32, seed=0, **options):
  config = ml_collections.ConfigDict({"name": "synthetic_identities", "num_identities": 50,
                                      "heldout_identities": 10, **options})
  return data.build(config, batch_size=batch_size, eval_batch_size=1000, seed=seed)


def split(dataset, name):
  (batch,) = dataset.eval_splits[name]
  return batch


def test_splits_shapes_and_determinism():
  a, b = build(), build()
  np.testing.assert_array_equal(a.train_batch(3)["inputs"], b.train_batch(3)["inputs"])
  assert not np.array_equal(build(seed=1).train_batch(0)["inputs"], a.train_batch(0)["inputs"])
  train = a.train_arrays
  assert train["inputs"].shape == (400, 32) and a.info["num_classes"] == 50
  assert set(a.eval_splits) == {"closed", "test", "test_low"}
  closed, test, low = (split(a, k) for k in ("closed", "test", "test_low"))
  assert closed["labels"].tolist() == np.repeat(np.arange(50), 2).tolist()
  assert test["labels"].tolist() == np.repeat(np.arange(10), 4).tolist()
  assert np.all((train["sigma"] >= 0.2) & (train["sigma"] <= 1.2))
  np.testing.assert_allclose(low["sigma"], 1.2)


def test_samples_are_rotated_means_plus_their_own_noise():
  """Undoing the rotation, a sample's identity part minus its mean has spread sigma_i and
  the nuisance part spread nuisance_scale (checked on 400 samples)."""
  dataset = build(per_identity=8, nuisance_scale=3.0)
  train = dataset.train_arrays
  plain = train["inputs"].astype(np.float64)
  # the identity part's within-class deviations scale with sigma, the nuisance does not:
  # a class's mean of x is R [mu; 0]; deviations d = R [sigma eps; nu]
  means = np.stack([plain[train["labels"] == k].mean(0) for k in range(50)])
  deviations = plain - means[train["labels"]]
  total = np.mean(np.sum(deviations**2, axis=1) / (16 * train["sigma"] ** 2 + 16 * 9.0))
  assert 0.75 < total < 0.95  # (n - 1) / n = 7 / 8 of the expected square, up to noise


def test_long_tail_counts_and_conflicting_identities():
  dataset = build(long_tail=1.0, conflict_rate=0.2)
  counts = np.bincount(dataset.train_arrays["labels"], minlength=50)
  assert counts.min() >= 1 and counts.max() > 5 * np.median(counts)
  assert dataset.info["duplicated_labels"] == 10
  # without noise a sample is its identity's rotated mean: a duplicated label's samples
  # equal those of the label it duplicates
  exact = build(conflict_rate=0.2, sigma_min=0.0, sigma_max=0.0, nuisance_dim=0)
  closed = split(exact, "closed")
  first = {int(k): closed["inputs"][closed["labels"] == k][0] for k in range(50)}
  for k in range(40, 50):
    assert any(np.allclose(first[k], first[j]) for j in range(40)), k
  assert not any(np.allclose(first[a], first[b]) for a in range(40) for b in range(a))


def test_label_noise_and_bad_options():
  dataset = build(label_noise="uniform", noise_rate=0.4)
  train = dataset.train_arrays
  assert 0.3 < train["is_noisy"].mean() < 0.45
  np.testing.assert_array_equal(train["labels"] != train["clean_labels"], train["is_noisy"])
  for options, message in [({"conflict_rate": 0.6}, "conflict_rate"),
                           ({"val_fraction": 0.1}, "val_fraction"),
                           ({"sigma_min": 2.0}, "sigma_min"), ({"bogus": 1}, "bogus")]:
    with pytest.raises(ValueError, match=message):
      build(**options)
