"""Cross-entropy on scikit-learn digits with 30% uniform label noise (train split only).

The tabular protocol of the released code of "Label Distributionally Robust
Losses for Multi-class Classification" (arXiv:2112.14869,
github.com/Optimization-AI/ICML2023_LDR, experiment.py): a tanh MLP with two
hidden layers of width min(dims, K) = 10, weights Xavier-normal and biases
PyTorch's default U(+-1/sqrt(fan_in)); SGD with momentum 0.9, weight decay 5e-3
added to the gradient, batch 64, 100 epochs, lr / 10 at epochs 50 and 75.
1,258 training examples: 19 steps of 64 per epoch. The base of the LDR configs;
experiments/ldr_noise.py adds a validation split (`data.val_fraction`) for
tuning the baselines, as the released code tunes them by cross-validation.
"""

import ml_collections

STEPS_PER_EPOCH = 19


def get_config():
  config = ml_collections.ConfigDict()
  config.trainer = "classification"
  config.seed = 0
  config.data = dict(name="digits", test_fraction=0.3, label_noise="uniform", noise_rate=0.3)
  config.model = dict(name="mlp", hidden=(10, 10), activation="tanh", use_bias=True,
                      kernel_init="xavier_normal", bias_init="fan_in_uniform")
  config.loss = dict(name="softmax_cross_entropy", dtype="float32")
  config.optimizer = dict(name="sgd", lr=0.01, momentum=0.9, weight_decay=5e-3, schedule="step",
                          boundaries=(50 * STEPS_PER_EPOCH, 75 * STEPS_PER_EPOCH),
                          decay_factor=0.1)
  config.train = dict(steps=100 * STEPS_PER_EPOCH, batch_size=64, log_every=10 * STEPS_PER_EPOCH,
                      eval_every=10 * STEPS_PER_EPOCH, checkpoint_every=100 * STEPS_PER_EPOCH,
                      dtype="float32")
  config.evals = dict(classification=dict(name="classification"))
  return config
