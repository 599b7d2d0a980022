"""Softmax CE computed in float64: Softmax Collapse comes later than in float32.

"Grokking at the Edge of Numerical Stability" (arXiv:2501.04697): the onset
of SC moves from a logit gap of ~19.3 (float32) to ~40.1 (float64), so the
loss keeps giving gradient for longer. The model stays float32; only the loss
(and the collapse metric) use float64; `train.x64` turns on 64-bit JAX.
"""

import pathlib

from softlab.config import load_config


def get_config():
  config = load_config(pathlib.Path(__file__).with_name("softmax.py"))
  config.loss.dtype = "float64"
  config.train.x64 = True
  config.train.steps = 4000
  return config
