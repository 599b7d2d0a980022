"""The spherical-family Z-loss against softmax cross-entropy on top-k accuracy, 1,000 classes.

The MLP of configs/classification/clusters1000.py on gaussian_clusters with K = 1000 classes,
trained with softmax cross-entropy and with `spherical_z_loss` (softplus(a (b - z_y)) / a on
the standardized logits) at two (a, b) settings fixed before the runs: softlab's default
(a = 0.1, b = 10) and a sharper one (a = 1, b = 5); the paper tunes (a, b) per task. Two
seeds. Reported: top-1 and top-5 test accuracy. The character LM half is
experiments/spherical_z_loss_lm.py.

Verdict, thresholds fixed before the runs: supported when some Z-loss setting's mean top-5
test accuracy is >= cross-entropy's + 0.01; not supported when every Z-loss setting's is <=
cross-entropy's; inconclusive in between.
"""

TITLE = "The Z-loss: a shift and scale invariant classification loss belonging to the Spherical Family"
ARXIV = "1604.08859"
CLAIM = "The Z-loss beats log-softmax (cross-entropy) on top-k scores."
BASE_CONFIG = "../configs/classification/clusters1000.py"
VARIANTS = {
    "ce": {},
    "zloss_a0.1_b10": {"loss.name": "spherical_z_loss", "loss.a": 0.1, "loss.b": 10.0},
    "zloss_a1_b5": {"loss.name": "spherical_z_loss", "loss.a": 1.0, "loss.b": 5.0},
}
SEEDS = (0, 1)
METRICS = {
    "test/accuracy": "top-1 test accuracy",
    "test/top5_accuracy": "top-5 test accuracy",
}
PLOTS = ("test/top5_accuracy",)
MARGIN = 0.01


def judge(results, *, top1, top5):
  """(status, text) on the seeds' means; `top1` / `top5` name the accuracy metrics."""
  mean = {v: numbers["mean"] for v, numbers in results["variants"].items()}
  top5s = {v: m[top5] for v, m in mean.items()}
  zloss = [v for v in mean if v != "ce"]
  best = max(zloss, key=top5s.get)
  numbers = "; ".join(f"{v}: top-1 {m[top1]:.4f}, top-5 {m[top5]:.4f}" for v, m in mean.items())
  text = f"{numbers}. Best Z-loss top-5 ({best}) - ce = {top5s[best] - top5s['ce']:+.4f}."
  if top5s[best] >= top5s["ce"] + MARGIN:
    return "supported", text
  if all(top5s[v] <= top5s["ce"] for v in zloss):
    return "not supported", text
  return "inconclusive", text


def verdict(results):
  return judge(results, top1="test/accuracy", top5="test/top5_accuracy")
