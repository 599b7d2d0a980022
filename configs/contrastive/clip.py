"""Two-tower CLIP (softmax InfoNCE) on digit images and captions, t' = log 10 for parity
with SigLIP ("Learning Transferable Visual Models From Natural Language Supervision",
arXiv:2103.00020, as the baseline of arXiv:2303.15343)."""

import pathlib

from softlab.config import load_config


def get_config():
  config = load_config(pathlib.Path(__file__).with_name("siglip.py"))
  config.loss = dict(name="clip_loss", t_prime_init=config.loss.t_prime_init)
  return config
