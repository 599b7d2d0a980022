"""ALDR-KL on noisy digits: per-example adaptive lambda (lam0 10, alpha 2, margin 0.1).

"Label Distributionally Robust Losses for Multi-class Classification"
(arXiv:2112.14869); logits normalized by their mean absolute value as in the
released code. Each training example's lambda is kept in the train state.
"""

import pathlib

from softlab.config import load_config


def get_config():
  config = load_config(pathlib.Path(__file__).with_name("ce.py"))
  config.loss = dict(name="aldr_kl", lam0=10.0, alpha=2.0, margin=0.1,
                     normalize_logits="mean_abs", dtype="float32")
  return config
