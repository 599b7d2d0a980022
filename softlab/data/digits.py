"""scikit-learn's bundled 8x8 digits (real data, no download), and captions for them."""

import numpy as np

from softlab.data.base import (REGISTRY, Dataset, array_dataset, chunk, noisy_train_split,
                               reject_unknown, require_batch_size, rng_for, split_indices, train_indices,
                               with_weight)

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
CAPTION_WORDS = ("a", "the", "photo", "of", "digit", "number", "handwritten", "written",
                 "small", "large", "scan", "picture", "blurry", "clear", "ink", "mark")
# The four orientations of `digit_captions(orientations=True)`, in label order: as scanned,
# mirrored left-right, mirrored top-bottom, turned half a turn (both).
ORIENTATION_NAMES = ("upright", "mirrored", "flipped", "turned")
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


def caption_vocabulary(orientations: bool = False) -> tuple[str, ...]:
  """Token strings by id; id 0 is padding. The orientation words come last and
  only when asked, so the plain task keeps its vocabulary (and model shapes)."""
  return ("<pad>",) + DIGIT_NAMES + CAPTION_WORDS + (ORIENTATION_NAMES if orientations else ())


def caption_tokens(words: list[str], length: int, orientations: bool = False) -> np.ndarray:
  """Token ids of `words`, padded with PAD to `length`."""
  index = {w: i for i, w in enumerate(caption_vocabulary(orientations))}
  ids = [index[w] for w in words][:length]
  return np.array(ids + [PAD] * (length - len(ids)), np.int32)


def class_words(orientations: bool) -> tuple[tuple[str, ...], ...]:
  """The words naming each caption class: (digit,) per digit, or (digit,
  orientation) per class 4 * digit + orientation."""
  if not orientations:
    return tuple((name,) for name in DIGIT_NAMES)
  return tuple((name, turn) for name in DIGIT_NAMES for turn in ORIENTATION_NAMES)


def orient(inputs: np.ndarray, orientations: np.ndarray) -> np.ndarray:
  """Each 8x8 image (flat [N, 64] or [N, 8, 8, 1]) in its orientation (index
  into ORIENTATION_NAMES): bit 0 mirrors the columns, bit 1 the rows (both:
  half a turn)."""
  images = inputs.reshape(len(inputs), 8, 8, -1)
  column, row = ((orientations & bit).reshape(-1, 1, 1, 1) > 0 for bit in (1, 2))
  images = np.where(column, images[:, :, ::-1], images)
  return np.where(row, images[:, ::-1], images).reshape(inputs.shape)


def random_captions(rng, labels, *, length, noise_words, label_noise, orientations=False):
  """One caption per label: the class's words (`class_words`) among
  `noise_words` random filler words, in random order; with probability
  `label_noise` the class is a random one instead (a mismatched pair, as web
  captions have)."""
  index = {w: i for i, w in enumerate(caption_vocabulary(orientations))}
  filler = np.array([index[w] for w in CAPTION_WORDS], np.int32)
  classes = [np.array([index[w] for w in words], np.int32) for words in class_words(orientations)]
  shown = np.where(rng.random(len(labels)) < label_noise,
                   rng.integers(0, len(classes), len(labels)), labels)
  captions = np.full((len(labels), length), PAD, np.int32)
  for row, label in enumerate(shown):
    ids = rng.permutation(np.concatenate([rng.choice(filler, noise_words), classes[label]]))
    captions[row, :len(ids)] = ids[:length]
  return captions


@REGISTRY.register("digit_captions")
def digit_captions(options, *, batch_size, eval_batch_size, seed):
  """Digit images paired with generated captions, for two-tower training.

  Each step draws fresh captions for its images. Evaluation is zero-shot:
  `info["class_prompts"]` holds one caption per class ("a photo of the digit
  <name>") and a test image is classified by its most similar prompt; the test
  images also carry one fixed caption each ("tokens") for retrieval.

  `orientations=True` makes 40 caption classes: each image is shown in one of
  ORIENTATION_NAMES (drawn per example and step; fixed per test image), its
  caption names the digit and the orientation, its label is 4 * digit +
  orientation, and the prompts are "a photo of digit <name> <orientation>".
  Symmetric digits (0, 1, 8) look alike in several orientations, so the task
  stays short of perfect accuracy.
  """
  test_fraction = options.pop("test_fraction", 0.3)
  length = options.pop("caption_length", 6)
  noise_words = options.pop("noise_words", 3)
  label_noise = options.pop("caption_noise", 0.0)
  layout = options.pop("layout", "flat")
  orientations = options.pop("orientations", False)
  reject_unknown(options, "digit_captions")
  if not isinstance(orientations, bool):
    raise ValueError(f"orientations must be True or False, got {orientations!r}")
  words_of = class_words(orientations)
  if noise_words + len(words_of[0]) > length:
    raise ValueError(f"caption_length={length} cannot hold {noise_words} noise words + the class"
                     f" ({len(words_of[0])} word(s))")
  require_batch_size(batch_size, "digit_captions")
  inputs, labels = load_digits_arrays(layout)
  train, test = split_indices(len(labels), test_fraction, seed)
  train_inputs, train_labels = inputs[train], labels[train]
  test_inputs, test_labels = inputs[test], labels[test]
  if orientations:
    turns = rng_for(seed, 10).integers(0, len(ORIENTATION_NAMES), len(test_labels))
    test_inputs, test_labels = orient(test_inputs, turns), test_labels * 4 + turns
  caption = dict(length=length, noise_words=noise_words, label_noise=label_noise,
                 orientations=orientations)

  def train_batch(step):
    index = train_indices(len(train_labels), batch_size, seed, step)
    images, classes = train_inputs[index], train_labels[index]
    if orientations:
      turns = rng_for(seed, 11, step).integers(0, len(ORIENTATION_NAMES), len(index))
      images, classes = orient(images, turns), classes * 4 + turns
    captions = random_captions(rng_for(seed, 8, step), classes, **caption)
    return with_weight({"images": images, "tokens": captions, "labels": classes})

  prefix = ["a", "photo", "of", "digit"] if orientations else ["a", "photo", "of", "the", "digit"]
  prompts = np.stack([caption_tokens(prefix + list(words), length, orientations)
                      for words in words_of])
  info = {"num_classes": len(words_of), "input_shape": inputs.shape[1:],
          "vocab_size": len(caption_vocabulary(orientations)), "caption_length": length,
          "class_prompts": prompts}
  return Dataset(
      train_batch=train_batch,
      eval_splits={"test": chunk({"images": test_inputs, "labels": test_labels,
                                  "tokens": random_captions(rng_for(seed, 9), test_labels,
                                                            **caption)},
                                 eval_batch_size)},
      info=info,
  )
