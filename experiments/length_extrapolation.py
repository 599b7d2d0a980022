"""Length extrapolation of a character LM: train at 64 tokens, evaluate at 1x-16x.

A small pre-norm transformer with RoPE (configs/lm/softmax.py) on Python's help
text, one run per attention normalizer, validation loss at 64 ... 1,024 tokens
in the same run, after 1,000 steps (so that the 24 runs fit the study's hour
on 2 cores). LSSAR is also applied at inference only, to an LSSA-trained
model (the early, fine-tuning-free form of the paper). Three seeds; each growth
figure (loss at 16x minus loss at 1x, per seed) is reported as mean ± std, and
the verdict says which of its comparisons are wider than the spread (the
difference of means exceeds the sum of the two standard deviations).

Verdict: the paper's central claim decides it. Supported when softmax's loss
grows by > 0.1 nats at 16x and LSSAR (p = 15) grows by under a quarter of
softmax's, wider than the spread; not supported otherwise. The secondary
claims (sigmoid degrades the most, SSMax grows less than softmax) are reported
beside it, each with whether it holds beyond the spread.
"""

import math

TITLE = "Softplus Attention with Re-weighting Boosts Length Extrapolation (with SSMax, sigmoid)"
ARXIV = "2501.13428"
CLAIM = ("Past the training length, softmax attention's validation loss grows, LSSAR's stays "
         "nearly flat, sigmoid attention degrades the most, and SSMax helps.")
BASE_CONFIG = "../configs/lm/softmax.py"
LENGTHS = (64, 128, 256, 512, 1024)
STEPS = 1000
_EVAL = {"data.eval_lengths": LENGTHS, "data.eval_windows": 16, "train.eval_every": 500,
         "train.log_every": 50, "train.steps": STEPS, "optimizer.total_steps": STEPS}
VARIANTS = {
    "softmax": dict(_EVAL),
    "ssmax": {**_EVAL, "model.normalizer": "ssmax", "model.ssmax_s_init": 1 / math.log(64)},
    "sigmoid": {**_EVAL, "model.normalizer": "sigmoid", "model.qk_norm": True},
    "lssa": {**_EVAL, "model.normalizer": "softplus"},
    "lssar_p3": {**_EVAL, "model.normalizer": "softplus",
                 "model.normalizer_kwargs": {"sharpen_power": 3.0}},
    "lssar_p15": {**_EVAL, "model.normalizer": "softplus",
                  "model.normalizer_kwargs": {"sharpen_power": 15.0}},
    "lssa_then_lssar_p15": {**_EVAL, "model.normalizer": "softplus",
                            "eval_model": {"normalizer_kwargs": {"sharpen_power": 15.0}}},
    "softpick": {**_EVAL, "model.normalizer": "softpick"},
}
SEEDS = (0, 1, 2)
METRICS = {f"val_{n}/loss": f"validation loss (nats/char) at {n} tokens ({n // 64}x)"
           for n in LENGTHS}
METRICS["growth"] = (f"validation loss at {LENGTHS[-1] // LENGTHS[0]}x minus at 1x the training "
                     "length (nats/char)")
PLOTS = ("train/loss",)
# GPT-2 small trained at 1K, evaluated at 1K / 2K / 4K / 8K (a secondary summary of the paper).
PAPER = {
    "softmax": {"val_64/loss": 3.19, "val_128/loss": 4.17, "val_256/loss": 5.45, "val_512/loss": 6.28},
    "sigmoid": {"val_64/loss": 3.19, "val_128/loss": 7.46, "val_256/loss": 11.84,
                "val_512/loss": 14.50},
    "lssa": {"val_64/loss": 3.19, "val_128/loss": 4.13, "val_256/loss": 5.30, "val_512/loss": 5.94},
    "lssar_p15": {"val_64/loss": 3.19, "val_128/loss": 3.19, "val_256/loss": 3.23,
                  "val_512/loss": 3.32},
}


def analyze(history):
  """This run's growth: the last evaluation's loss at the longest length minus at 1x."""
  longest, trained = f"val_{LENGTHS[-1]}/loss", f"val_{LENGTHS[0]}/loss"
  final = [r for r in history if longest in r and trained in r][-1]
  return {"growth": final[longest] - final[trained]}


def growth(results, variant):
  """(mean, std) over seeds of the growth from 1x to 16x."""
  numbers = results["variants"][variant]
  return numbers["mean"]["growth"], numbers["std"]["growth"]


def separated(results, lower, higher):
  """Whether `lower` grows less than `higher` by more than the two spreads together."""
  (a, sa), (b, sb) = growth(results, lower), growth(results, higher)
  return b - a > sa + sb


def report(results):
  lines = ["Paper columns map the paper's 1K / 2K / 4K / 8K (GPT-2 small trained at 1K) onto our "
           "1x / 2x / 4x / 8x; they are another model and corpus, so compare shapes, not values.",
           "", f"| variant | loss growth 1x -> 16x (mean ± std over {len(SEEDS)} seeds) |",
           "|---|---|"]
  lines += [f"| {v} | {growth(results, v)[0]:+.3f} ± {growth(results, v)[1]:.3f} |"
            for v in results["variants"]]
  return "\n".join(lines)


def verdict(results):
  rise = {v: growth(results, v)[0] for v in results["variants"]}
  spread = {v: growth(results, v)[1] for v in results["variants"]}
  worst = max(rise, key=rise.get)
  runner_up = max((v for v in rise if v != worst), key=rise.get)
  central = {
      "softmax loss grows with length (by > 0.1 nats at 16x)": rise["softmax"] > 0.1,
      "LSSAR (p = 15) stays nearly flat (growth under a quarter of softmax's, beyond the spread)":
          rise["lssar_p15"] < 0.25 * max(rise["softmax"], 1e-9)
          and separated(results, "lssar_p15", "softmax"),
  }
  secondary = {
      f"sigmoid degrades the most (worst: {worst}; beyond the spread of the next, {runner_up}: "
      f"{'yes' if separated(results, runner_up, worst) else 'no'})": worst == "sigmoid",
      f"SSMax grows less than softmax (beyond the spread: "
      f"{'yes' if separated(results, 'ssmax', 'softmax') else 'no'})":
          rise["ssmax"] < rise["softmax"],
  }
  summary = "; ".join(f"{name}: {'yes' if ok else 'NO'}" for name, ok in
                      {**central, **secondary}.items())
  numbers = "growth 1x -> 16x (mean ± std): " + ", ".join(
      f"{v} {r:+.3f} ± {spread[v]:.3f}" for v, r in rise.items())
  status = "supported" if all(central.values()) else "not supported"
  return status, f"{summary}. {numbers}."
