"""LSSA: softplus attention with the (ln d)(ln n) scale, l1-normalized (arXiv:2501.13428)."""

import pathlib

from softlab.config import load_config


def get_config():
  config = load_config(pathlib.Path(__file__).with_name("softmax.py"))
  config.model.normalizer = "softplus"
  return config
