"""Sigmoid attention with b = -log n and QK-norm (arXiv:2409.04431)."""

import pathlib

from softlab.config import load_config


def get_config():
  config = load_config(pathlib.Path(__file__).with_name("softmax.py"))
  config.model.normalizer = "sigmoid"
  config.model.qk_norm = True
  return config
