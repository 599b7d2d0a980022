"""Modular addition mod 113 with softmax CE and no regularization.

"Grokking at the Edge of Numerical Stability" (arXiv:2501.04697): all 12,769
pairs, 40% for training, concatenated one-hots, MLP [200, 200] without bias,
full batch, AdamW betas (0.9, 0.99), eps 1e-25, no weight decay, float32. The
paper's claim: it fits the training set, then Softmax Collapse stops learning.
The base config of every other grokking config.
"""

import ml_collections
from ml_collections import config_dict


def get_config():
  config = ml_collections.ConfigDict()
  config.trainer = "classification"
  config.seed = 0
  config.data = dict(name="modular_arithmetic", op="add", p=113, train_fraction=0.4,
                     encoding="one_hot")
  config.model = dict(name="mlp", hidden=(200, 200), use_bias=False, activation="relu")
  config.loss = dict(name="softmax_cross_entropy", dtype="float32")
  config.optimizer = dict(name="adamw", lr=0.01, b1=0.9, b2=0.99, eps=1e-25, weight_decay=0.0,
                          schedule="constant", perpgrad=False)
  config.train = dict(steps=2000, batch_size=config_dict.placeholder(int), log_every=20,
                      eval_every=100, checkpoint_every=500, dtype="float32")
  config.evals = dict(classification=dict(name="classification"))
  return config
