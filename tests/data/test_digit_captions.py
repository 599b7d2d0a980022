"""digit_captions with `orientations`: images, labels, captions and prompts agree."""

import ml_collections
import numpy as np
import pytest

from softlab import data
from softlab.data import digits

# The four orientations as independent references: as is, mirrored left-right,
# mirrored top-bottom, half a turn.
REFERENCE = (lambda x: x, np.fliplr, np.flipud, lambda x: np.rot90(x, 2))


def build(batch_size=32, seed=0, **options):
  return data.build(ml_collections.ConfigDict({"name": "digit_captions", **options}),
                    batch_size=batch_size, eval_batch_size=1000, seed=seed)


def words(tokens, orientations=True):
  vocabulary = digits.caption_vocabulary(orientations)
  return [vocabulary[t] for t in tokens if t]


def check_pairs(oriented, plain, orientations=True):
  """Each oriented image is its plain image in the orientation its label names, and the
  caption (no caption noise) names the digit and the orientation."""
  np.testing.assert_array_equal(oriented["labels"] // 4, plain["labels"])
  for image, original, label, tokens in zip(oriented["images"], plain["images"],
                                            oriented["labels"], oriented["tokens"]):
    turn = REFERENCE[label % 4]
    np.testing.assert_array_equal(image.reshape(8, 8), turn(original.reshape(8, 8)))
    caption = words(tokens, orientations)
    assert digits.DIGIT_NAMES[label // 4] in caption
    assert digits.ORIENTATION_NAMES[label % 4] in caption
    assert sum(w in digits.ORIENTATION_NAMES for w in caption) == 1


@pytest.mark.parametrize("layout", ["flat", "image"])
def test_oriented_images_match_their_labels_and_captions(layout):
  options = dict(layout=layout, caption_length=7, noise_words=4)
  oriented, plain = build(orientations=True, **options), build(**options)
  for step in (0, 3):
    check_pairs(oriented.train_batch(step), plain.train_batch(step))
  check_pairs(oriented.eval_splits["test"][0], plain.eval_splits["test"][0])
  turns = np.concatenate([oriented.train_batch(s)["labels"] % 4 for s in range(8)])
  assert set(turns) == {0, 1, 2, 3}  # every orientation is drawn


def test_class_prompts_name_each_class_and_shapes():
  dataset = build(orientations=True)
  info = dataset.info
  assert info["num_classes"] == 40 and info["class_prompts"].shape == (40, 6)
  assert info["vocab_size"] == len(digits.caption_vocabulary()) + 4
  for label, prompt in enumerate(info["class_prompts"]):
    assert words(prompt) == ["a", "photo", "of", "digit", digits.DIGIT_NAMES[label // 4],
                             digits.ORIENTATION_NAMES[label % 4]]
  batch = dataset.train_batch(0)
  assert batch["images"].shape == (32, 64) and batch["tokens"].shape == (32, 6)
  assert batch["tokens"].max() < info["vocab_size"]
  assert batch["labels"].min() >= 0 and batch["labels"].max() < 40


def test_orientations_are_deterministic_and_drawn_per_step():
  first, again = build(orientations=True, seed=1), build(orientations=True, seed=1)
  for step in (0, 5):
    for key, value in first.train_batch(step).items():
      np.testing.assert_array_equal(value, again.train_batch(step)[key])
  test, test_again = first.eval_splits["test"][0], again.eval_splits["test"][0]
  for key in test:
    np.testing.assert_array_equal(test[key], test_again[key])
  # Full batch: the same examples every step, each drawn a fresh orientation.
  full = build(orientations=True, batch_size=2000)
  zero, one = full.train_batch(0)["labels"], full.train_batch(1)["labels"]
  np.testing.assert_array_equal(zero // 4, one // 4)
  assert 0.6 < np.mean(zero % 4 != one % 4) < 0.9  # 3/4 expected


def test_caption_noise_mismatches_the_whole_class():
  noise = 0.5
  dataset = build(orientations=True, caption_noise=noise, batch_size=256)
  matched = []
  for step in range(8):
    batch = dataset.train_batch(step)
    for tokens, label in zip(batch["tokens"], batch["labels"]):
      caption = words(tokens)
      matched.append(digits.DIGIT_NAMES[label // 4] in caption
                     and digits.ORIENTATION_NAMES[label % 4] in caption)
  # A mismatched caption names a uniformly random class, its own with probability 1/40.
  expected = 1 - noise + noise / 40
  assert abs(np.mean(matched) - expected) < 4 * np.sqrt(expected * (1 - expected) / len(matched))


def test_orientation_errors():
  with pytest.raises(ValueError, match="orientations must be True or False"):
    build(orientations="yes")
  with pytest.raises(ValueError, match="caption_length=5 cannot hold 4 noise words"):
    build(orientations=True, caption_length=5, noise_words=4)
  build(caption_length=5, noise_words=4)  # the plain class is one word: fits
