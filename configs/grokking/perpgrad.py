"""⊥AdamW with softmax CE: generalizes with no overfitting phase, in hundreds of steps.

"Grokking at the Edge of Numerical Stability" (arXiv:2501.04697): ⊥Grad keeps
only the gradient component orthogonal to the weights, which removes Naive
Loss Minimization (growing the weights along their own direction), so softmax
CE keeps learning and the model generalizes (paper: ⊥AdamW, lr 0.01, 300 steps).
"""

import pathlib

from softlab.config import load_config


def get_config():
  config = load_config(pathlib.Path(__file__).with_name("softmax.py"))
  config.optimizer.perpgrad = True
  config.train.steps = 400
  config.train.eval_every = 50
  return config
