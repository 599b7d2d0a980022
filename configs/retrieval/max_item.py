"""Max-retrieval: one attention layer finds the highest-priority item of a set.

"softmax is not enough (for sharp out-of-distribution)" (arXiv:2410.01104):
train on sets of 5-16 items, test at 16 ... 1,024 items; softmax attention
fades as the set grows. `--config.model.normalizer=ssmax` (or sigmoid,
softplus, softpick) swaps the normalizer; `configs/retrieval/max_item.py:
adaptive_softmax` (any normalizer name after the colon) applies that
normalizer at test time only, e.g. adaptive temperature.
"""

import ml_collections


def get_config(eval_normalizer=None):
  config = ml_collections.ConfigDict()
  config.trainer = "classification"
  config.seed = 0
  config.data = dict(name="max_retrieval", num_classes=10, train_min_items=5, train_max_items=16,
                     test_lengths=(16, 64, 256, 1024), test_size=256)
  config.model = dict(name="set_attention", d_model=64, num_heads=1, normalizer="softmax")
  config.loss = dict(name="softmax_cross_entropy", dtype="float32")
  config.optimizer = dict(name="adam", lr=1e-3, schedule="constant")
  config.train = dict(steps=2000, batch_size=128, log_every=50, eval_every=500,
                      checkpoint_every=1000, eval_batch_size=256, dtype="float32")
  config.evals = dict(classification=dict(name="classification"),
                      attention=dict(name="attention_on_target"))
  if eval_normalizer:
    config.eval_model = dict(normalizer=eval_normalizer)
  return config
