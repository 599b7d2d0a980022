"""An MLP on scikit-learn digits (clean labels): the base of the SVM-head study.

One hidden ReLU layer of 64 units; Adam, lr 3e-3 / 10 after 20 epochs, with
the L2 penalty 1e-4 added to the gradient (the L2-SVM papers' ||w||^2 term),
batch 64, 30 epochs of the 1,258 training images.
"""

import ml_collections

STEPS_PER_EPOCH = 19


def get_config():
  config = ml_collections.ConfigDict()
  config.trainer = "classification"
  config.seed = 0
  config.data = dict(name="digits", test_fraction=0.3)
  config.model = dict(name="mlp", hidden=(64,), activation="relu", use_bias=True)
  config.loss = dict(name="softmax_cross_entropy", dtype="float32")
  config.optimizer = dict(name="adam", lr=3e-3, weight_decay=1e-4, schedule="step",
                          boundaries=(20 * STEPS_PER_EPOCH,), decay_factor=0.1)
  config.train = dict(steps=30 * STEPS_PER_EPOCH, batch_size=64, log_every=10 * STEPS_PER_EPOCH,
                      eval_every=10 * STEPS_PER_EPOCH, checkpoint_every=30 * STEPS_PER_EPOCH,
                      dtype="float32")
  config.evals = dict(classification=dict(name="classification"))
  return config
