"""Scalable-Softmax attention: s learned per head (arXiv:2501.19399)."""

import math
import pathlib

from softlab.config import load_config


def get_config():
  config = load_config(pathlib.Path(__file__).with_name("softmax.py"))
  config.model.normalizer = "ssmax"
  config.model.ssmax_s_init = 1 / math.log(64)  # = softmax at the training length
  return config
