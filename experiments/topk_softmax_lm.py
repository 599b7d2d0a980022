"""Top-k (sparse-softmax) cross-entropy against cross-entropy on the character LM's output head.

The character half of experiments/topk_softmax.py (whose K = 1,000 half, the verdict rule
and k values this study shares): the 2-layer transformer of configs/lm/softmax.py (d_model
128, RoPE, length 64) over its 103 next-character classes,
trained with softmax cross-entropy and with `topk_cross_entropy` for k in {5, 20, 100}; 500
steps (the step budget of experiments/taylor_orders.py, sized to the shared 2-core CPU), two
seeds. Reported: top-1 and top-5 next-character accuracy and the validation loss (softmax
cross-entropy, nats/char) at the training length after the last step, and the step time: the
fastest logged interval's 1000 / train/steps_per_second (compilation excluded; the fastest
interval is the one least disturbed by other jobs on the shared CPU).

Verdict, thresholds fixed before the runs, as the K = 1,000 half: "at least as accurate" when
the best top-k variant's mean top-1 accuracy is >= cross-entropy's - 0.01; "faster" when the
fastest top-k variant's mean step time is below 0.95x cross-entropy's (here the head is a
small part of the step, so a 5% margin keeps timing noise from deciding). Supported when both
hold, not supported when either fails.
"""

from softlab.study import load_study

_K1000 = load_study(__file__.replace("_lm.py", ".py"))

TITLE = _K1000.TITLE
ARXIV = _K1000.ARXIV
CLAIM = ("On a character LM's output head, sparse-softmax (top-k cross-entropy) is faster than "
         "softmax cross-entropy and at least as accurate.")
BASE_CONFIG = "../configs/lm/softmax.py"
STEPS = 500
LM_RUN = {"train.steps": STEPS, "optimizer.total_steps": STEPS, "train.eval_every": STEPS,
         "train.log_every": 50, "train.checkpoint_every": STEPS, "data.eval_lengths": (64,),
         "evals.lm.top_k": (5,)}
VARIANTS = {v: {**LM_RUN, **overrides} for v, overrides in _K1000.VARIANTS.items()}
SEEDS = (0, 1)
METRICS = {
    "val_64/accuracy": "top-1 next-character accuracy",
    "val_64/top5_accuracy": "top-5 next-character accuracy",
    "val_64/loss": "validation cross-entropy (nats/char)",
    "step_ms": "milliseconds per training step (fastest logged interval)",
}
PLOTS = ("train/loss",)
SPEEDUP = 0.05


def analyze(history):
  rates = [r["train/steps_per_second"] for r in history if "train/steps_per_second" in r]
  return {"step_ms": 1000.0 / max(rates)}


def verdict(results):
  return _K1000.judge(results, top1="val_64/accuracy", top5="val_64/top5_accuracy",
                      speedup=SPEEDUP)
