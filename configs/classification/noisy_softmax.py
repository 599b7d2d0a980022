"""The digits MLP of classification/digits.py trained with Noisy Softmax.

The classification trainer hands the loss a new PRNG key every step and the
step; alpha = 0.1 (the paper's best) decays linearly to 0 over the first 20
of the 30 epochs (`anneal_steps`, softlab's schedule; the logits-only trainer
gives the paper's "free noise" form, see `noisy_softmax_cross_entropy`).
"""

import os

from softlab.config import load_config

HERE = os.path.dirname(__file__)


def get_config():
  config = load_config(os.path.join(HERE, "digits.py"))
  steps_per_epoch = 19
  config.loss = dict(name="noisy_softmax_cross_entropy", alpha=0.1,
                     anneal_steps=20 * steps_per_epoch, dtype="float32")
  return config
