"""Every config in configs/ builds and trains for 2 steps."""

import glob
import math
import os

import pytest

from softlab.config import load_config, override
from softlab.trainers import loop

CONFIGS = sorted(glob.glob("configs/**/*.py", recursive=True))


def test_the_config_folder_is_found():
  assert len(CONFIGS) >= 10


# The lm normalizer variants differ from lm/softmax.py only in model.normalizer; each
# normalizer's decoder runs in tests/models, so their 2-step runs are `slow`.
LM_VARIANTS = {"configs/lm/sigmoid.py", "configs/lm/softplus.py", "configs/lm/softpick.py",
               "configs/lm/ssmax.py"}
# classification/digits.py is ldr/ce.py's digits MLP with other model and optimizer fields;
# classification/clusters1000.py is the same trainer on gaussian_clusters (tests/data);
# contrastive/clip.py is contrastive/siglip.py with the CLIP loss (tests/losses);
# grokking/perpgrad.py is grokking/softmax.py with ⊥Grad (tests/test_optim.py);
# retrieval/max_item.py trains and evaluates at test lengths 16 and 64 in
# tests/trainers/test_trainers.py (its own lengths reach 1,024 items);
# classification/noisy_softmax.py runs 2 steps in tests/trainers/test_trainers.py.
SLOW = LM_VARIANTS | {"configs/classification/digits.py", "configs/classification/clusters1000.py",
                      "configs/contrastive/clip.py", "configs/grokking/perpgrad.py",
                      "configs/retrieval/max_item.py", "configs/classification/noisy_softmax.py"}
PARAMS = [pytest.param(p, id=os.path.relpath(p, "configs"),
                       marks=[pytest.mark.slow] if p in SLOW else []) for p in CONFIGS]


@pytest.mark.parametrize("path", PARAMS)
def test_config_runs_two_steps(path, tmp_path):
  config = override(load_config(path), {"train.steps": 2, "train.log_every": 1,
                                        "train.eval_every": 2, "train.checkpoint_every": 2})
  summary = loop.train(config, str(tmp_path))
  assert summary["step"] == 2
  assert math.isfinite(summary["train/loss"])
  assert any(not k.startswith("train/") and k != "step" for k in summary)  # evaluated
