"""StableMax CE without regularization: groks while the weight norm grows.

"Grokking at the Edge of Numerical Stability" (arXiv:2501.04697): StableMax
replaces exp by a linear/reciprocal s(x), so the probabilities cannot round
to one-hot (no Softmax Collapse) and learning continues after the training
set is fit (paper: lr 0.01, beta2 0.999, 80k steps; here shorter).
"""

import pathlib

from softlab.config import load_config


def get_config():
  config = load_config(pathlib.Path(__file__).with_name("softmax.py"))
  config.loss.name = "stablemax_cross_entropy"
  config.optimizer.b2 = 0.999
  config.train.steps = 4000
  return config
