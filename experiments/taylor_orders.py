"""Taylor-series attention of orders 1-4 against softmax attention on a character LM.

Softmax attention's numerator exp(q.k / sqrt(d)) is the infinite sum over n of
(q.k / sqrt(d))^n / n!; keeping orders 0..n gives linear attention with the
Taylor feature map phi_n(x) = [x^{(x)m} / sqrt(m!)]_{m <= n}
(softlab.attention.linear_attention, feature_map="taylor"; order 1 is linear
attention with phi(x) = [1, x]). The model is configs/lm/softmax.py (2
layers, d_model 128, 4 heads of dimension 32, RoPE, length 64) with only its
attention swapped (`model.attention = "linear"`), computed in the parallel
form with the closed-form kernel sum_{m<=n} s^m / m! (the features would have
1 + 32 + ... + 32^4 ~ 1.1M entries at order 4). 500 steps (sized to the study's 25
core-minutes on the shared 2-core CPU), two seeds; the
validation loss at the training length after the last step, and the time per
training step (1 / steps per second of the run's last log interval; on a
shared CPU this is noisy and only indicative).

Verdict thresholds, fixed before the run. With gap_n = loss(Taylor order n)
- loss(softmax), each a mean over seeds, and spread_n the sum of the two
standard deviations:
- inconclusive when order 1 is already within 0.02 nats of softmax
  (gap_1 <= 0.02: nothing for higher orders to close);
- supported when order 4 closes at least half of order 1's gap
  (gap_4 <= gap_1 / 2) and the difference exceeds the spread
  (gap_1 - gap_4 > std_1 + std_4);
- not supported otherwise.
Reported beside it, not deciding: whether the gaps shrink monotonically with
the order, and whether order 4 is within 0.02 nats of softmax.
"""

TITLE = "On the Expressiveness of Softmax Attention: A Recurrent Neural Network Perspective"
ARXIV = "2507.23632"
CLAIM = ("Truncating softmax attention's Taylor series gives linear attentions whose loss "
         "approaches softmax's as the order grows (linear attention is the first-order term).")
BASE_CONFIG = "../configs/lm/softmax.py"
STEPS = 500
ORDERS = (1, 2, 3, 4)
_BASE = {"train.steps": STEPS, "optimizer.total_steps": STEPS, "train.eval_every": 250,
         "train.log_every": 50, "train.checkpoint_every": STEPS, "data.eval_lengths": (64,)}
VARIANTS = {"softmax": dict(_BASE)}
VARIANTS.update({
    f"taylor{n}": {**_BASE, "model.attention": "linear", "model.feature_map": "taylor",
                   "model.feature_map_kwargs": {"order": n}}
    for n in ORDERS})
SEEDS = (0, 1)
METRICS = {
    "val_64/loss": "validation loss (nats/char) at the training length, after the last step",
    "ms_per_step": "milliseconds per training step (last log interval; shared CPU, indicative)",
}
PLOTS = ("train/loss",)
MATCH = 0.02  # nats: "within" softmax


def analyze(history):
  """Milliseconds per step from the last logged steps_per_second."""
  rates = [r["train/steps_per_second"] for r in history if "train/steps_per_second" in r]
  return {"ms_per_step": 1e3 / rates[-1]}


def gaps(results):
  """order -> (gap to softmax's validation loss, its spread: the two seed stds summed)."""
  variants = results["variants"]
  base, base_std = (variants["softmax"][k]["val_64/loss"] for k in ("mean", "std"))
  return {n: (variants[f"taylor{n}"]["mean"]["val_64/loss"] - base,
              variants[f"taylor{n}"]["std"]["val_64/loss"] + base_std) for n in ORDERS}


def report(results):
  lines = ["| attention | gap to softmax (nats/char) | ms per step |", "|---|---|---|"]
  for n, (gap, spread) in gaps(results).items():
    ms = results["variants"][f"taylor{n}"]["mean"]["ms_per_step"]
    lines.append(f"| Taylor order {n} | {gap:+.3f} (spread {spread:.3f}) | {ms:.1f} |")
  ms = results["variants"]["softmax"]["mean"]["ms_per_step"]
  lines.append(f"| softmax | 0 | {ms:.1f} |")
  return "\n".join(lines)


def verdict(results):
  g = gaps(results)
  (gap_1, _), (gap_4, _) = g[1], g[4]
  variants = results["variants"]
  std_1 = variants["taylor1"]["std"]["val_64/loss"]
  std_4 = variants["taylor4"]["std"]["val_64/loss"]
  numbers = "gaps to softmax (nats/char): " + ", ".join(
      f"order {n} {gap:+.3f}" for n, (gap, _) in g.items())
  monotone = all(g[a][0] > g[b][0] for a, b in zip(ORDERS, ORDERS[1:]))
  side = (f"gaps shrink monotonically with the order: {'yes' if monotone else 'no'}; "
          f"order 4 within {MATCH} nats of softmax: {'yes' if abs(gap_4) <= MATCH else 'no'}")
  if gap_1 <= MATCH:
    return "inconclusive", (f"order 1 is already within {MATCH} nats of softmax "
                            f"(gap {gap_1:+.3f}), so there is no gap for higher orders to close. "
                            f"{numbers}; {side}.")
  closes = gap_4 <= gap_1 / 2
  beyond = gap_1 - gap_4 > std_1 + std_4
  status = "supported" if closes and beyond else "not supported"
  return status, (f"order 4 closes at least half of order 1's gap: {'yes' if closes else 'NO'} "
                  f"({gap_4:+.3f} vs {gap_1:+.3f}); beyond the seed spread "
                  f"({gap_1 - gap_4:.3f} vs {std_1 + std_4:.3f}): {'yes' if beyond else 'NO'}. "
                  f"{numbers}; {side}.")
