"""A character-level corpus that ships with Python: the text of `pydoc_data.topics`."""

import numpy as np

from softlab.data.base import REGISTRY, Dataset, chunk, reject_unknown, require_batch_size, rng_for, with_weight


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
  text = corpus_text()
  vocab = sorted(set(text))
  tokens = np.searchsorted(np.array(vocab), np.array(list(text))).astype(np.int32)
  cut = int(len(tokens) * (1 - val_fraction))
  train, val = tokens[:cut], tokens[cut:]
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
