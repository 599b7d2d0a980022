"""A character-level corpus that ships with Python: the text of `pydoc_data.topics`."""

import numpy as np

from softlab.data.base import REGISTRY, Dataset, chunk, reject_unknown, require_batch_size, rng_for, with_weight
from softlab.validation import FieldError, check_integer, check_number


def corpus_text() -> str:
  """About 465k characters of English (Python's help topics), in a fixed order."""
  from pydoc_data import topics

  return "\n".join(topics.topics[key] for key in sorted(topics.topics))


def windows(tokens: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
  """tokens[s : s + length] for every start s."""
  return tokens[starts[:, None] + np.arange(length)[None, :]]


@REGISTRY.register("text_corpus")
def text_corpus(options, *, batch_size, eval_batch_size, seed):
  """Character-level language modelling on Python's help text.

  The last `val_fraction` of the text is validation. Training batches are
  random windows of seq_len + 1 tokens (inputs and shifted targets);
  validation at each of `eval_lengths` uses `eval_windows` fixed
  non-overlapping windows, so length extrapolation is measured in one run.

  With `bos=True` every training and validation window starts with a
  beginning-of-sequence token (id = the number of characters, so the
  vocabulary grows by one) followed by seq_len (or the eval length)
  characters: the model sees the same token at position 0 of every window,
  where attention sinks form ("When Attention Sink Emerges in Language
  Models", arXiv:2410.10781), and the loss, on the shifted targets, never
  predicts the BOS itself.
  """
  seq_len = options.pop("seq_len", 64)
  val_fraction = options.pop("val_fraction", 0.1)
  eval_lengths = tuple(options.pop("eval_lengths", (seq_len,)))
  eval_windows = options.pop("eval_windows", 32)
  bos = options.pop("bos", False)
  reject_unknown(options, "text_corpus")
  require_batch_size(batch_size, "text_corpus")
  if not isinstance(bos, bool):
    raise ValueError(f"text_corpus bos must be True or False, got {bos!r}")
  for name, value in (("seq_len", seq_len), ("eval_windows", eval_windows),
                      *((f"eval_lengths[{i}]", n) for i, n in enumerate(eval_lengths))):
    check_integer(value, name)
  check_number(val_fraction, "val_fraction", lambda v: 0 < v < 1, "in (0, 1)", required=True)
  text = corpus_text()
  vocab = sorted(set(text))
  tokens = np.searchsorted(np.array(vocab), np.array(list(text))).astype(np.int32)
  cut = int(len(tokens) * (1 - val_fraction))
  train, val = tokens[:cut], tokens[cut:]
  if seq_len > len(train) - 2:
    raise FieldError("seq_len", f" must be at most {len(train) - 2} (the training text has "
                                f"{len(train)} characters), got {seq_len}")
  longest = max(eval_lengths)
  if (longest + 1) * eval_windows > len(val):
    raise ValueError(
        f"validation text has {len(val)} characters, too few for {eval_windows} windows of"
        f" {longest + 1}")

  bos_id = len(vocab)

  def with_bos(chars):
    """[BOS, chars...] per window when bos is on, the characters as they are otherwise."""
    if not bos:
      return chars
    return np.concatenate([np.full((len(chars), 1), bos_id, chars.dtype), chars], axis=1)

  def train_batch(step):
    starts = rng_for(seed, 9, step).integers(0, len(train) - seq_len - 1, batch_size)
    return with_weight({"tokens": with_bos(windows(train, starts, seq_len + 1 - bos))})

  def val_windows(length):
    chars = length + 1 - bos
    return with_bos(windows(val, np.arange(eval_windows) * chars, chars))

  splits = {f"val_{length}": chunk({"tokens": val_windows(length)}, eval_batch_size)
            for length in eval_lengths}
  info = {"vocab_size": len(vocab) + bos, "seq_len": seq_len, "vocabulary": "".join(vocab)}
  if bos:
    info["bos_id"] = bos_id
  return Dataset(train_batch=train_batch, eval_splits=splits, info=info)


def bigram_statistics(tokens: np.ndarray, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
  """The corpus's character frequencies and bigram transition matrix (row x -> next-token
  probabilities; a character that never precedes another gets the marginal as its row)."""
  marginal = np.bincount(tokens, minlength=vocab_size).astype(np.float64)
  marginal /= marginal.sum()
  counts = np.zeros((vocab_size, vocab_size))
  np.add.at(counts, (tokens[:-1], tokens[1:]), 1.0)
  totals = counts.sum(axis=1, keepdims=True)
  transition = np.where(totals > 0, counts / np.maximum(totals, 1.0), marginal[None, :])
  return marginal, transition


def sample_rows(rng: np.random.Generator, probabilities: np.ndarray) -> np.ndarray:
  """One categorical draw per row of `probabilities` [n, V] (inverse CDF)."""
  cdf = np.cumsum(probabilities, axis=1)
  draws = rng.random((len(probabilities), 1)) * cdf[:, -1:]
  return np.minimum((cdf < draws).sum(axis=1), probabilities.shape[1] - 1)


def bigram_backcopy_sequences(rng, num, length, *, marginal, transition, triggers, bos_id):
  """`num` Bigram-Backcopy sequences of `length` + 1 tokens: [BOS, x_1, ..., x_length].

  x_1 is drawn from the marginal without the trigger characters (so the BOS
  is never copied); after that x_{t+1} copies x_{t-1} when x_t is a trigger
  and follows the bigram transition of x_t otherwise (the generator of the
  paper's released code).
  """
  start = marginal.copy()
  start[triggers] = 0.0
  tokens = np.empty((num, length + 1), np.int32)
  tokens[:, 0] = bos_id
  tokens[:, 1] = sample_rows(rng, np.broadcast_to(start, (num, len(start))))
  is_trigger = np.zeros(len(marginal), bool)
  is_trigger[triggers] = True
  for t in range(2, length + 1):
    previous = tokens[:, t - 1]
    bigram = sample_rows(rng, transition[previous])
    tokens[:, t] = np.where(is_trigger[previous], tokens[:, t - 2], bigram)
  return tokens


@REGISTRY.register("bigram_backcopy")
def bigram_backcopy(options, *, batch_size, eval_batch_size, seed):
  """The Bigram-Backcopy task, where attention sinks form in small transformers.

  Guo et al., "Active-Dormant Attention Heads: Mechanistically Demystifying
  Extreme-Token Phenomena in LLMs" (arXiv:2410.13835), Section 2: every
  sequence starts with a BOS token; tokens follow the bigram statistics of a
  character corpus, except after one of the `num_triggers` most frequent
  characters (the triggers), where the next token copies the one before the
  trigger. A head that implements the copy is active on triggers and, with
  softmax attention, dumps its weight on the BOS everywhere else: an
  attention sink, with the value-state drain and residual-state peak that go
  with it. The paper builds the bigram statistics from Shakespeare; here they
  come from Python's help text (`text_corpus`), and the BOS id is the number
  of characters. The released code uses 3 or 5 triggers and length 256.

  Training batches are fresh sequences per step; `val_{seq_len}` holds
  `eval_windows` fixed sequences. The loss (on shifted targets) never
  predicts the BOS.
  """
  seq_len = options.pop("seq_len", 64)
  num_triggers = options.pop("num_triggers", 3)
  eval_windows = options.pop("eval_windows", 64)
  reject_unknown(options, "bigram_backcopy")
  require_batch_size(batch_size, "bigram_backcopy")
  check_integer(seq_len, "seq_len")
  check_integer(eval_windows, "eval_windows")
  text = corpus_text()
  vocab = sorted(set(text))
  if not isinstance(num_triggers, int) or not 1 <= num_triggers < len(vocab):
    raise ValueError(
        f"bigram_backcopy num_triggers must be an integer in [1, {len(vocab) - 1}], got"
        f" {num_triggers!r}")
  tokens = np.searchsorted(np.array(vocab), np.array(list(text))).astype(np.int32)
  marginal, transition = bigram_statistics(tokens, len(vocab))
  triggers = np.argsort(-marginal, kind="stable")[:num_triggers]
  bos_id = len(vocab)

  def sequences(rng, num):
    return bigram_backcopy_sequences(rng, num, seq_len, marginal=marginal,
                                     transition=transition, triggers=triggers, bos_id=bos_id)

  def train_batch(step):
    return with_weight({"tokens": sequences(rng_for(seed, 10, step), batch_size)})

  val = {"tokens": sequences(rng_for(seed, 11), eval_windows)}
  info = {"vocab_size": len(vocab) + 1, "seq_len": seq_len, "bos_id": bos_id,
          "vocabulary": "".join(vocab), "triggers": "".join(vocab[i] for i in triggers)}
  return Dataset(train_batch=train_batch, eval_splits={f"val_{seq_len}": chunk(val, eval_batch_size)},
                 info=info)
