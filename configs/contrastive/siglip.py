"""Two-tower SigLIP on digit images and generated captions; zero-shot accuracy.

"Sigmoid Loss for Language Image Pre-Training" (arXiv:2303.15343): t' = log 10,
b = -10, learnable; the loss is sharded over all devices (ring of text blocks).
Evaluated by zero-shot accuracy and image <-> caption retrieval R@1, R@5.
"""

import math

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  config.trainer = "contrastive"
  config.seed = 0
  config.data = dict(name="digit_captions", caption_length=6, noise_words=3, caption_noise=0.1)
  config.model = dict(name="two_tower", image_hidden=(128,), text_width=64, embed_dim=32)
  config.loss = dict(name="siglip_loss", t_prime_init=math.log(10.0), bias_init=-10.0)
  config.optimizer = dict(name="adamw", lr=1e-3, weight_decay=1e-4, schedule="constant")
  config.train = dict(steps=1000, batch_size=64, log_every=50, eval_every=200,
                      checkpoint_every=500, dtype="float32")
  config.evals = dict(zero_shot=dict(name="zero_shot"), retrieval=dict(name="retrieval", ks=(1, 5)))
  return config
