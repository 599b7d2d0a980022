"""Attention fade: does the largest weight survive as the number of items grows?

1. Analytic (no training): one entry +3 among n - 1 entries -2 (Figure 1 of the
   SSMax paper), the largest weight of each normalizer for n = 10 ... 100,000.
2. Trained: the max-retrieval task (configs/retrieval/max_item.py), one
   attention layer trained on sets of 5-16 items and tested at 16 ... 1,024
   items (4,096 with --scale >= 2), for each normalizer; adaptive temperature
   is applied at test time to the softmax-trained model.
"""

import math
import os


TITLE = "Scalable-Softmax Is Superior for Attention; softmax is not enough"
ARXIV = "2501.19399, 2410.01104"
CLAIM = ("Softmax attention disperses as the number of items grows, while SSMax (and, partially, "
         "adaptive temperature) keeps it sharp and generalizes to longer inputs.")
BASE_CONFIG = "../configs/retrieval/max_item.py"
LENGTHS = (16, 64, 256, 1024)
VARIANTS = {
    "softmax": {},
    "ssmax": {"model.normalizer": "ssmax", "model.ssmax_s_init": 0.43},
    "adaptive_at_test": {"eval_model": {"normalizer": "adaptive_softmax"}},
    "sigmoid": {"model.normalizer": "sigmoid"},
    "lssa": {"model.normalizer": "softplus"},
    "lssar_p15": {"model.normalizer": "softplus",
                  "model.normalizer_kwargs": {"sharpen_power": 15.0}},
    "softpick": {"model.normalizer": "softpick"},
}
SEEDS = (0, 1)
METRICS = {
    **{f"test_{n}/accuracy": f"accuracy with {n} items" for n in LENGTHS},
    **{f"test_{n}/attention_on_target": f"weight on the target item, {n} items" for n in LENGTHS},
}
PLOTS = ("train/loss",)
PAPER = {"softmax": {"test_1024/attention_on_target": "fades (Fig. 1: 0.129 at n=1,000)"},
         "ssmax": {"test_1024/attention_on_target": "stays sharp (Fig. 1: 0.9996)"}}
ANALYTIC_NS = (10, 100, 1_000, 10_000, 100_000)
HEAD_DIM = 64  # for LSSA's (ln d)(ln n) scale


def scale(config, factor):
  """Longer training, and a 4,096-item test set from --scale 2 on."""
  from softlab.config import override

  lengths = LENGTHS + ((4096,) if factor >= 2 else ())
  return override(config, {"train.steps": int(config.train.steps * factor),
                           "data.test_lengths": lengths})


def analytic_max_weights():
  """normalizer -> [largest weight at each n] for scores (+3, -2, ..., -2)."""
  import jax.numpy as jnp

  from softlab import normalizers

  def row(n):
    return jnp.full((n,), -2.0).at[0].set(3.0)

  curves = {
      "softmax": lambda x, n: normalizers.softmax(x),
      "ssmax (s=0.43)": lambda x, n: normalizers.ssmax(x, s=0.43),
      "adaptive temperature": lambda x, n: normalizers.adaptive_softmax(x),
      "softpick": lambda x, n: normalizers.softpick(x),
      "sigmoid (b=-log n)": lambda x, n: normalizers.sigmoid(x, bias=-math.log(n)),
      "LSSA (d=64)": lambda x, n: normalizers.softplus(x, scale=math.log(HEAD_DIM) * math.log(n)),
      "LSSAR (d=64, p=15)": lambda x, n: normalizers.softplus(
          x, scale=math.log(HEAD_DIM) * math.log(n), sharpen_power=15.0),
  }
  return {name: [float(f(row(n), n).max()) for n in ANALYTIC_NS] for name, f in curves.items()}


def extra_results(out_dir, factor):
  """The analytic part: table, plot, and the Figure 1 check."""
  curves = analytic_max_weights()
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  figure, axes = plt.subplots(figsize=(6.4, 4.0))
  for name, values in curves.items():
    axes.plot(ANALYTIC_NS, values, marker="o", label=name)
  axes.set_xscale("log")
  axes.set_xlabel("n (entries in the row)")
  axes.set_ylabel("largest weight")
  axes.set_title("one +3 among n - 1 entries of -2")
  axes.legend(fontsize="small")
  figure.tight_layout()
  figure.savefig(os.path.join(out_dir, "analytic_max_weight.png"), dpi=110)
  plt.close(figure)
  lines = ["### Analytic: largest weight, one +3 among n - 1 entries of -2", "",
           "| normalizer | " + " | ".join(f"n={n:,}" for n in ANALYTIC_NS) + " |",
           "|---|" + "---|" * len(ANALYTIC_NS)]
  lines += [f"| {name} | " + " | ".join(f"{v:.4f}" for v in values) + " |"
            for name, values in curves.items()]
  lines += ["", "Paper (SSMax, Figure 1): softmax 0.129 vs SSMax 0.9996 at n = 1,000; 0.0015 vs "
            "1.0000 at n = 100,000.", "", "![analytic](analytic_max_weight.png)"]
  return {"analytic": curves, "markdown": "\n".join(lines)}


def report(results):
  """Accuracy and weight on the target by test length, one row per variant."""
  lengths = [n for n in (*LENGTHS, 4096) if f"test_{n}/accuracy" in
             next(iter(results["variants"].values()))["mean"]]
  head = "| variant | " + " | ".join(f"acc@{n}" for n in lengths) + " | " + " | ".join(
      f"w@{n}" for n in lengths) + " |"
  lines = ["### Trained: accuracy and attention weight on the target by number of items", "",
           head, "|---|" + "---|" * (2 * len(lengths))]
  for variant, numbers in results["variants"].items():
    mean = numbers["mean"]
    lines.append(f"| {variant} | " + " | ".join(
        f"{mean[f'test_{n}/accuracy']:.3f}" for n in lengths) + " | " + " | ".join(
        f"{mean[f'test_{n}/attention_on_target']:.3f}" for n in lengths) + " |")
  return "\n".join(lines)


def verdict(results):
  mean = {name: v["mean"] for name, v in results["variants"].items()}
  first, last = LENGTHS[0], LENGTHS[-1]
  on = lambda v, n: mean[v][f"test_{n}/attention_on_target"]
  acc = lambda v, n: mean[v][f"test_{n}/accuracy"]
  analytic = results["extra"]["analytic"]
  figure_1 = (round(analytic["softmax"][2], 3) == 0.129
              and round(analytic["ssmax (s=0.43)"][2], 4) == 0.9996)
  checks = {
      f"softmax attention on the target fades from {first} to {last} items (halves or worse)":
          on("softmax", last) <= 0.5 * on("softmax", first),
      f"SSMax keeps more weight on the target than softmax at {last} items":
          on("ssmax", last) > on("softmax", last),
      f"SSMax is at least as accurate as softmax at {last} items":
          acc("ssmax", last) >= acc("softmax", last),
      f"adaptive temperature at test time keeps more weight than softmax at {last} items":
          on("adaptive_at_test", last) > on("softmax", last),
      "the analytic Figure 1 numbers (0.129 vs 0.9996 at n = 1,000) come out": figure_1,
  }
  numbers = (f"weight on target {first} -> {last} items: " + "; ".join(
      f"{v} {on(v, first):.3f} -> {on(v, last):.3f} (acc {acc(v, last):.3f})"
      for v in ("softmax", "ssmax", "adaptive_at_test")))
  summary = "; ".join(f"{name}: {'yes' if ok else 'NO'}" for name, ok in checks.items())
  if all(checks.values()):
    return "supported", f"{summary}. {numbers}."
  if not checks[f"SSMax keeps more weight on the target than softmax at {last} items"]:
    return "not supported", f"{summary}. {numbers}."
  return "inconclusive", f"{summary}. {numbers}."
