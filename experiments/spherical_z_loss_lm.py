"""The spherical-family Z-loss against softmax cross-entropy on the character LM's top-k scores.

The character half of experiments/spherical_z_loss.py (whose Z-loss settings and verdict rule
this study shares): the 2-layer transformer of configs/lm/softmax.py (d_model 128, RoPE,
length 64) over its 103 next-character classes, trained with softmax cross-entropy and with
`spherical_z_loss` at (a, b) = (0.1, 10) and (1, 5), with the run settings of
experiments/topk_softmax_lm.py (500 steps, evaluated at the training length), two seeds.
Reported: top-1 and top-5 next-character accuracy and the validation cross-entropy at the training length after the last step (the Z-loss does
not train a calibrated softmax, so its cross-entropy is shown, not judged).

Verdict, thresholds fixed before the runs, as the K = 1,000 half: supported when some Z-loss
setting's mean top-5 accuracy is >= cross-entropy's + 0.01; not supported when every Z-loss
setting's is <= cross-entropy's; inconclusive in between.
"""

from softlab.study import load_study

_K1000 = load_study(__file__.replace("_lm.py", ".py"))
_LM = load_study(__file__.replace("spherical_z_loss_lm.py", "topk_softmax_lm.py"))

TITLE = _K1000.TITLE
ARXIV = _K1000.ARXIV
CLAIM = "On a character LM, the Z-loss beats log-softmax (cross-entropy) on top-k scores."
BASE_CONFIG = "../configs/lm/softmax.py"
VARIANTS = {v: {**_LM.LM_RUN, **overrides} for v, overrides in _K1000.VARIANTS.items()}
SEEDS = (0, 1)
METRICS = {
    "val_64/accuracy": "top-1 next-character accuracy",
    "val_64/top5_accuracy": "top-5 next-character accuracy",
    "val_64/loss": "validation cross-entropy (nats/char)",
}
PLOTS = ("train/loss",)


def verdict(results):
  return _K1000.judge(results, top1="val_64/accuracy", top5="val_64/top5_accuracy")
