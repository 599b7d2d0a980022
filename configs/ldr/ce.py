"""Cross-entropy on scikit-learn digits with 30% uniform label noise (train split only).

The tabular protocol of "Label Distributionally Robust Losses for Multi-class
Classification" (arXiv:2112.14869): tanh MLP with two hidden layers of width
min(dims, K) = 10, SGD with momentum 0.9, 100 epochs (19 steps of 64 each),
lr / 10 at epochs 50 and 75. The base of the LDR configs.
"""

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  config.trainer = "classification"
  config.seed = 0
  config.data = dict(name="digits", test_fraction=0.3, label_noise="uniform", noise_rate=0.3)
  config.model = dict(name="mlp", hidden=(10, 10), activation="tanh", use_bias=True)
  config.loss = dict(name="softmax_cross_entropy", dtype="float32")
  config.optimizer = dict(name="sgd", lr=0.1, momentum=0.9, schedule="step",
                          boundaries=(50 * 19, 75 * 19), decay_factor=0.1)
  config.train = dict(steps=100 * 19, batch_size=64, log_every=190, eval_every=190,
                      checkpoint_every=950, dtype="float32")
  config.evals = dict(classification=dict(name="classification"))
  return config
