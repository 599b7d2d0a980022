"""bigram_backcopy: BOS first, the back-copy rule after triggers, corpus bigrams elsewhere."""

import collections

import ml_collections
import numpy as np
import pytest

from softlab import data
from softlab.data.corpus import corpus_text


def build(seed=0, batch_size=512, **options):
  return data.build(ml_collections.ConfigDict({"name": "bigram_backcopy", **options}),
                    batch_size=batch_size, eval_batch_size=32, seed=seed)


@pytest.fixture(scope="module")
def dataset():
  return build(seq_len=48)


@pytest.fixture(scope="module")
def batch(dataset):
  return dataset.train_batch(0)["tokens"]


def test_triggers_are_the_most_frequent_characters(dataset):
  counts = collections.Counter(corpus_text())
  assert dataset.info["triggers"] == "".join(c for c, _ in counts.most_common(3))
  assert dataset.info["vocab_size"] == len(counts) + 1 == dataset.info["bos_id"] + 1


def test_every_sequence_is_bos_then_characters(dataset, batch):
  assert batch.shape == (512, 49) and batch.dtype == np.int32
  assert (batch[:, 0] == dataset.info["bos_id"]).all()
  assert (batch[:, 1:] < dataset.info["bos_id"]).all()
  first = {dataset.info["vocabulary"][t] for t in batch[:, 1]}
  assert not first & set(dataset.info["triggers"])


def test_the_token_after_a_trigger_copies_the_token_before_it(dataset, batch):
  vocabulary, triggers = dataset.info["vocabulary"], set(dataset.info["triggers"])
  copies = 0
  for row in batch[:, 1:]:
    text = [vocabulary[t] for t in row]
    for t in range(1, len(text) - 1):
      if text[t] in triggers:
        assert text[t + 1] == text[t - 1]
        copies += 1
  assert copies > 1000


def test_other_tokens_follow_the_corpus_bigrams(dataset, batch):
  """Next-character frequencies after 'a' (no trigger) against the corpus's bigram counts."""
  text = corpus_text()
  after_a = collections.Counter(b for a, b in zip(text, text[1:]) if a == "a")
  vocabulary = dataset.info["vocabulary"]
  sampled = collections.Counter()
  for row in batch[:, 1:]:
    for x, nxt in zip(row[:-1], row[1:]):
      if vocabulary[x] == "a":
        sampled[vocabulary[nxt]] += 1
  total, expected_total = sum(sampled.values()), sum(after_a.values())
  assert total > 500
  for char in ("n", "t", "l", "s"):
    expected = after_a[char] / expected_total
    assert abs(sampled[char] / total - expected) < 4 * np.sqrt(expected / total) + 1e-3


def test_batches_depend_only_on_seed_and_step(batch):
  again = build(seq_len=48).train_batch(0)["tokens"]
  np.testing.assert_array_equal(again, batch)
  assert not np.array_equal(build(seq_len=48).train_batch(1)["tokens"], batch)
  assert not np.array_equal(build(seq_len=48, seed=1).train_batch(0)["tokens"], batch)


def test_validation_is_fixed_sequences_at_the_training_length():
  split = build(seq_len=16, eval_windows=40, batch_size=8).eval_splits["val_16"]
  tokens = np.concatenate([b["tokens"] for b in split])
  assert tokens.shape == (40, 17)


@pytest.mark.parametrize("options, message", [
    ({"num_triggers": 0}, r"bigram_backcopy num_triggers must be an integer in \[1, "),
    ({"triggers": 3}, "unknown field.*triggers"),
])
def test_bad_options_raise_one_line_errors(options, message):
  with pytest.raises(ValueError, match=message):
    build(**options)
