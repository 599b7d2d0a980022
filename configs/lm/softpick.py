"""Softpick attention: rectified softmax, rows need not sum to 1 (arXiv:2504.20966)."""

import pathlib

from softlab.config import load_config


def get_config():
  config = load_config(pathlib.Path(__file__).with_name("softmax.py"))
  config.model.normalizer = "softpick"
  return config
