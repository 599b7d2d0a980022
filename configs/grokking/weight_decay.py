"""Classic grokking: softmax CE with AdamW weight decay.

Weight decay keeps the logits from growing without bound (the Naive Loss
Minimization direction), so the model eventually generalizes after fitting
the training set ("Grokking at the Edge of Numerical Stability",
arXiv:2501.04697, and the grokking literature it builds on).
"""

import pathlib

from softlab.config import load_config


def get_config():
  config = load_config(pathlib.Path(__file__).with_name("softmax.py"))
  config.optimizer.weight_decay = 1.0
  config.optimizer.lr = 1e-3
  config.train.steps = 4000
  return config
