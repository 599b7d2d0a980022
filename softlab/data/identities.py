"""synthetic_identities: a face-recognition-like set of identities with known sample quality."""

import numpy as np

from softlab.data.base import REGISTRY, array_dataset, noisy_train_split, reject_unknown, rng_for


@REGISTRY.register("synthetic_identities")
def synthetic_identities(options, *, batch_size, eval_batch_size, seed):
  """Identities as Gaussian means seen through nuisance factors, each sample with its own noise.

  A sample of identity k with quality noise sigma_i is x = R [mu_k + sigma_i eps ; nu],
  mu_k ~ N(0, separation^2 I_dim), eps ~ N(0, I_dim), nu ~ N(0, nuisance_scale^2
  I_nuisance_dim) (pose, light: variation that carries no identity), R a fixed
  random rotation mixing the two parts; sigma_i ~ U[sigma_min, sigma_max] is known
  (batches carry it as "sigma"), so a quality estimate can be checked against it.

  Training set: `num_identities` labels, `per_identity` samples each on average;
  `long_tail` = a > 0 gives counts proportional to (rank + 1)^-a (ranks a seeded
  permutation, at least one sample each, mean `per_identity`); `conflict_rate` =
  the share of labels that are a second label of another identity (the same mean
  under two labels, as the same person filed twice in a web-crawled set);
  `label_noise` / `noise_rate` as in `base.noisy_train_split`.
  Splits: "closed" (`closed_per_identity` clean samples of every training label:
  closed-set accuracy) and "test" (`heldout_identities` new identities,
  `heldout_per_identity` samples each, labels 0..H-1: verification and retrieval
  on identities never trained on) and "test_low" (new samples of the same
  held-out identities, all at the lowest quality, sigma = sigma_max).
  """
  num_identities = options.pop("num_identities", 1000)
  heldout_identities = options.pop("heldout_identities", 200)
  dim = options.pop("dim", 16)
  nuisance_dim = options.pop("nuisance_dim", 16)
  nuisance_scale = options.pop("nuisance_scale", 2.0)
  separation = options.pop("separation", 1.0)
  per_identity = options.pop("per_identity", 8)
  closed_per_identity = options.pop("closed_per_identity", 2)
  heldout_per_identity = options.pop("heldout_per_identity", 4)
  sigma_min = options.pop("sigma_min", 0.2)
  sigma_max = options.pop("sigma_max", 1.2)
  long_tail = options.pop("long_tail", 0.0)
  conflict_rate = options.pop("conflict_rate", 0.0)
  for name, value, low in (("num_identities", num_identities, 2),
                           ("heldout_identities", heldout_identities, 2),
                           ("dim", dim, 1), ("nuisance_dim", nuisance_dim, 0),
                           ("per_identity", per_identity, 1),
                           ("closed_per_identity", closed_per_identity, 1),
                           ("heldout_per_identity", heldout_per_identity, 2)):
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
      raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
  if not 0 <= sigma_min <= sigma_max:
    raise ValueError(f"sigma_min, sigma_max must satisfy 0 <= sigma_min <= sigma_max, got "
                     f"{sigma_min}, {sigma_max}")
  for name, value in (("separation", separation), ("nuisance_scale", nuisance_scale)):
    if not value > 0:
      raise ValueError(f"{name} must be > 0, got {value}")
  if not long_tail >= 0:
    raise ValueError(f"long_tail must be >= 0, got {long_tail}")
  if not 0 <= conflict_rate < 0.5:
    raise ValueError(f"conflict_rate must be in [0, 0.5), got {conflict_rate}")

  rotation = np.linalg.qr(rng_for(seed, 30).standard_normal((dim + nuisance_dim,) * 2))[0]
  means = separation * rng_for(seed, 31).standard_normal((num_identities, dim))
  duplicates = int(round(conflict_rate * num_identities))
  originals = rng_for(seed, 32).permutation(num_identities - duplicates)[:duplicates]
  means[num_identities - duplicates:] = means[originals]
  heldout_means = separation * rng_for(seed, 33).standard_normal((heldout_identities, dim))

  def samples(rng, means_, labels, low=sigma_min):
    sigma = rng.uniform(low, sigma_max, len(labels))
    identity = means_[labels] + sigma[:, None] * rng.standard_normal((len(labels), dim))
    nuisance = nuisance_scale * rng.standard_normal((len(labels), nuisance_dim))
    inputs = np.concatenate([identity, nuisance], axis=1) @ rotation.T
    return inputs.astype(np.float32), sigma.astype(np.float32)

  weights = (rng_for(seed, 34).permutation(num_identities) + 1.0) ** -long_tail
  counts = np.maximum(1, np.round(per_identity * weights / weights.mean())).astype(int)
  train_labels = np.repeat(np.arange(num_identities), counts).astype(np.int32)
  train_inputs, train_sigma = samples(rng_for(seed, 35), means, train_labels)
  if options.get("val_fraction", 0.0):
    raise ValueError("val_fraction: synthetic_identities has none (its held-out identities "
                     "are the validation)")
  train, _ = noisy_train_split(train_inputs, train_labels, num_identities, options, seed)
  reject_unknown(options, "synthetic_identities")
  train["sigma"] = train_sigma
  closed_labels = np.repeat(np.arange(num_identities), closed_per_identity).astype(np.int32)
  closed_inputs, closed_sigma = samples(rng_for(seed, 36), means, closed_labels)
  test_labels = np.repeat(np.arange(heldout_identities), heldout_per_identity).astype(np.int32)
  test_inputs, test_sigma = samples(rng_for(seed, 37), heldout_means, test_labels)
  low_inputs, low_sigma = samples(rng_for(seed, 38), heldout_means, test_labels, low=sigma_max)
  return array_dataset(
      train,
      {"closed": {"inputs": closed_inputs, "labels": closed_labels, "sigma": closed_sigma},
       "test": {"inputs": test_inputs, "labels": test_labels, "sigma": test_sigma},
       "test_low": {"inputs": low_inputs, "labels": test_labels, "sigma": low_sigma}},
      {"num_classes": num_identities, "input_shape": (dim + nuisance_dim,),
       "duplicated_labels": duplicates},
      batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed,
  )
