"""An MLP on 1,000 Gaussian clusters: the high-class-count base (top-k softmax, Z-loss studies).

gaussian_clusters with K = 1000 classes in 32 dimensions, class means
N(0, 0.8^2 I), 20 training and 5 test examples per class; one hidden ReLU
layer of 256 units; Adam lr 3e-3, batch 256, 600 steps (about 8 epochs).
Evaluations report top-1 and top-5 test accuracy.
"""

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  config.trainer = "classification"
  config.seed = 0
  config.data = dict(name="gaussian_clusters", num_classes=1000, dim=32, separation=0.8,
                     train_per_class=20, test_per_class=5)
  config.model = dict(name="mlp", hidden=(256,), activation="relu", use_bias=True)
  config.loss = dict(name="softmax_cross_entropy", dtype="float32")
  config.optimizer = dict(name="adam", lr=3e-3, schedule="constant")
  config.train = dict(steps=600, batch_size=256, log_every=50, eval_every=300,
                      checkpoint_every=600, eval_batch_size=1000, dtype="float32")
  config.evals = dict(classification=dict(name="classification", top_k=(5,)))
  return config
