"""scikit-learn's bundled 8x8 digits (real data, no download), and captions for them."""

import numpy as np

from softlab.data.base import (REGISTRY, Dataset, array_dataset, chunk, noisy_train_split,
                               reject_unknown, require_batch_size, rng_for, split_indices, train_indices,
                               with_weight)

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
CAPTION_WORDS = ("a", "the", "photo", "of", "digit", "number", "handwritten", "written",
                 "small", "large", "scan", "picture", "blurry", "clear", "ink", "mark")
PAD = 0


def load_digits_arrays(layout: str) -> tuple[np.ndarray, np.ndarray]:
  """(inputs in [0, 1], labels): flat [N, 64] or images [N, 8, 8, 1]."""
  from sklearn.datasets import load_digits  # heavy import, only when used

  digits = load_digits()
  images = (digits.images / 16.0).astype(np.float32)
  if layout == "flat":
    return images.reshape(len(images), -1), digits.target.astype(np.int32)
  if layout == "image":
    return images[..., None], digits.target.astype(np.int32)
  raise ValueError(f"layout {layout!r}; valid: flat, image")


@REGISTRY.register("digits")
def digits(options, *, batch_size, eval_batch_size, seed):
  """1,797 8x8 digit images, 10 classes, seeded train/test split; optional label
  noise on the training split only (`label_noise`: none | uniform |
  class_dependent, `noise_rate`) and a validation split held out of it
  (`val_fraction`, noisy labels; see `base.noisy_train_split`)."""
  layout = options.pop("layout", "flat")
  test_fraction = options.pop("test_fraction", 0.3)
  inputs, labels = load_digits_arrays(layout)
  train, test = split_indices(len(labels), test_fraction, seed)
  train_split, val_split = noisy_train_split(inputs[train], labels[train], 10, options, seed)
  reject_unknown(options, "digits")
  return array_dataset(
      train_split,
      {"test": {"inputs": inputs[test], "labels": labels[test]}, **val_split},
      {"num_classes": 10, "input_shape": inputs.shape[1:]},
      batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed,
  )


def caption_vocabulary() -> tuple[str, ...]:
  """Token strings by id; id 0 is padding."""
  return ("<pad>",) + DIGIT_NAMES + CAPTION_WORDS


def caption_tokens(words: list[str], length: int) -> np.ndarray:
  """Token ids of `words`, padded with PAD to `length`."""
  index = {w: i for i, w in enumerate(caption_vocabulary())}
  ids = [index[w] for w in words][:length]
  return np.array(ids + [PAD] * (length - len(ids)), np.int32)


def random_captions(rng, labels, *, length, noise_words, label_noise):
  """One caption per label: the class word among `noise_words` random filler
  words, in random order; with probability `label_noise` the class word is
  another class's (a mismatched pair, as web captions have)."""
  names = np.array(DIGIT_NAMES)
  shown = np.where(rng.random(len(labels)) < label_noise,
                   rng.integers(0, 10, len(labels)), labels)
  captions = []
  for digit in shown:
    words = list(rng.choice(CAPTION_WORDS, noise_words)) + [names[digit]]
    captions.append(caption_tokens(list(rng.permutation(words)), length))
  return np.stack(captions)


@REGISTRY.register("digit_captions")
def digit_captions(options, *, batch_size, eval_batch_size, seed):
  """Digit images paired with generated captions, for two-tower training.

  Each step draws fresh captions for its images. Evaluation is zero-shot:
  `info["class_prompts"]` holds one caption per class ("a photo of the digit
  <name>") and a test image is classified by its most similar prompt; the test
  images also carry one fixed caption each ("tokens") for retrieval.
  """
  test_fraction = options.pop("test_fraction", 0.3)
  length = options.pop("caption_length", 6)
  noise_words = options.pop("noise_words", 3)
  label_noise = options.pop("caption_noise", 0.0)
  layout = options.pop("layout", "flat")
  reject_unknown(options, "digit_captions")
  if noise_words + 1 > length:
    raise ValueError(f"caption_length={length} cannot hold {noise_words} noise words + the class")
  require_batch_size(batch_size, "digit_captions")
  inputs, labels = load_digits_arrays(layout)
  train, test = split_indices(len(labels), test_fraction, seed)
  train_inputs, train_labels = inputs[train], labels[train]

  def train_batch(step):
    index = train_indices(len(train_labels), batch_size, seed, step)
    captions = random_captions(rng_for(seed, 8, step), train_labels[index], length=length,
                               noise_words=noise_words, label_noise=label_noise)
    return with_weight({"images": train_inputs[index], "tokens": captions,
                        "labels": train_labels[index]})

  prompts = np.stack([caption_tokens(["a", "photo", "of", "the", "digit", name], length)
                      for name in DIGIT_NAMES])
  info = {"num_classes": 10, "input_shape": inputs.shape[1:], "vocab_size": len(caption_vocabulary()),
          "caption_length": length, "class_prompts": prompts}
  return Dataset(
      train_batch=train_batch,
      eval_splits={"test": chunk({"images": inputs[test], "labels": labels[test],
                                  "tokens": random_captions(rng_for(seed, 9), labels[test],
                                                            length=length, noise_words=noise_words,
                                                            label_noise=label_noise)},
                                 eval_batch_size)},
      info=info,
  )
