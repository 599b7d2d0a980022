"""Label Distributionally Robust losses under label noise: digits (K = 10) and Gaussian clusters
(K = 26, 100), the baselines tuned on a validation split as in the released code.

The released protocol (github.com/Optimization-AI/ICML2023_LDR, experiment.py, models.py,
optimizers.py, README.md) for the tabular datasets (Vowel K=11, News20 K=20, Letter K=26,
ALOI K=1000): a tanh MLP with two hidden layers of width min(dims, K), weights Xavier-normal,
biases PyTorch's default U(+-1/sqrt(fan_in)); SGD, momentum 0.9, weight decay 5e-3 added to
the gradient, batch 64, 100 epochs, lr / 10 at epochs 50 and 75; lr 0.01 by default (the
README's Letter runs use 1e-3); noise drawn on the whole training set, 5-fold cross-validation
on it (validation labels noisy), test labels clean. Each baseline's own hyperparameter is
tuned over a grid (GCE q in {0.05, 0.7, 0.95}, SCE balance in {0.05, 0.5, 0.95}, NCE+RCE
alpha in {0.1, 5, 9.9} with beta = 10 - alpha, Crammer-Singer margin in {0.1, 1, 10});
LDR-KL and ALDR-KL stay at lambda = lambda_0 = 10, margin 0.1, alpha = 2. LDR-KL applies
softplus and divides by the row mean (`LDRLoss_V1`); ALDR-KL divides by the mean |f|
(`ALDRLoss_V1`, softplus only on CIFAR-100).

Here (configs/ldr/ce.py): the same model, initialization, optimizer, weight decay, batch,
epochs and schedule, lr 0.01. Where we differ, and why:
- One held-out validation fifth of the noisy training split instead of 5 folds, and 2 seeds
  (different splits, noise draws and initializations): the CPU budget.
- lr 0.01, not the README's 1e-3: our training sets are 1-4k examples (15-62 steps per
  epoch), not Letter's 12.8k (200 steps), and at 1e-3 CE underfits digits (62% clean test
  accuracy in a pilot run against 93% at 0.01).
- Grids: GCE and SCE get the released three values; NCE+RCE and Crammer-Singer two (alpha =
  0.1, nearly RCE, i.e. MAE up to scale, and margin 10 left out: the CPU budget). The first
  run had dropped GCE q = 0.05 and SCE balance = 0.05 too (as nearly CE); both remaining GCE
  values underfit at lr 0.01 (clusters100 test accuracy 0.07 and 0.02), so the released
  values were added back, before the study's LDR-KL / ALDR-KL runs (one pilot ALDR-KL run,
  clusters100 with 50 examples per class, had been seen: test accuracy 0.27): leaving them
  out handicapped the baselines.
- Datasets: scikit-learn's digits (K = 10, the control) and isotropic Gaussian clusters,
  class means N(0, I): K = 26 in 16 dimensions (the shape of Letter), 50 training examples
  per class; K = 100 in 32 dimensions, 30 per class (the CPU budget); 20 test examples per
  class. The released datasets are not bundled.
- Baseline scaling: softlab's RCE uses log 0 := -4 and the released code clamps at 1e-4
  (log = -9.21), so NCE+RCE's beta is (10 - alpha) * 9.21 / 4 here (the released loss
  exactly); softlab's MAE is 2 (1 - p_y), the released one 1 - p_y (an lr factor of 2).
- Accuracy is read after the last epoch (the released script prints every epoch).
- Added to the released loss list (issue: the Active-Passive Loss family and the comp-sum
  family beside the LDR baselines): NFL+RCE and NCE+MAE at the APL paper's CIFAR-10 values
  (alpha = beta = 1, gamma = 0.5, arXiv:2006.13554) in the APL code's scaling (its RCE clamps
  log 0 at log 1e-4, so beta = 9.21 / 4 here; its MAE is 1 - p_y, softlab's 2 (1 - p_y), so
  beta = 0.5 here), and sum-exp (arXiv:2304.07288), all untuned. They were added before the
  rerun that produced the committed results; it reproduces 438 of the earlier 448 per-seed
  numbers of the 8 first losses exactly, and NCE+RCE at alpha = 5 within 0.008 (its NCE code,
  shared with NFL since, rounds differently). experiments/apl_noise.py runs this protocol at 60% and 80% noise.
- Diverged runs: a run stopped by a non-finite training loss counts as diverged, with test and
  validation accuracy 0 (`diverged`; marked in the tables). Decided when the first run of this
  version stopped on sum-exp's runs at K = 26 and 100 (the exponential of a noisy label's margin
  overflows under SGD at lr 0.01), before any of its results were seen: the runner writes none
  while a run has failed.

Why K matters for ALDR-KL: after dividing by mean |f| the scores sum to K in absolute value,
so f / lambda_0 spans at most K / 10 and softmax(f / lambda) stays near uniform at small K.
The most peaked row, (1, 0, ..., 0), visited again and again, settles at lambda = 9.83 for
K = 10, 8.87 for K = 26 and 5.0 (the floor lambda_0 (1 - 1/alpha)) for K = 100
(tests/losses/test_ldr.py). Every released dataset has K >= 11.

Tuning: per (loss, setting) the grid value with the best mean validation accuracy over
seeds is chosen; its mean test accuracy is the loss's number. Ties go to the first value.

Verdict, thresholds fixed before the runs. In each setting, ALDR-KL is "among the most
accurate" when its rank among the 11 losses is <= 2 or its mean test accuracy is within 0.01
of the best loss's. Its lambda "ends differently" when |mean lambda(noisy) - mean
lambda(clean)| at the end of training is >= 1% of lambda_0 (0.1). The claim is supported
when, in the K >= 26 settings, ALDR-KL is among the most accurate in at least 2 of the 3 and
its lambda ends differently in all 3; otherwise it is not supported. The K = 10 setting is
the control: reported, not counted.
"""

import numpy as np

TITLE = "Label Distributionally Robust Losses for Multi-class Classification"
ARXIV = "2112.14869"
CLAIM = ("Under uniform and class-dependent label noise, ALDR-KL is among the most accurate "
         "losses on clean test data, and its per-example adaptive lambda ends differently for "
         "noisy and clean training examples.")
BASE_CONFIG = "../configs/ldr/ce.py"

LAM0 = 10.0
VAL_FRACTION = 0.2
BATCH = 64


def steps_per_epoch(num_train):
  """Full batches per epoch of the training rows left after the validation hold-out."""
  return (num_train - int(round(num_train * VAL_FRACTION))) // BATCH


def dataset(num_classes):
  """(data overrides, MLP width, steps per epoch) of the K-class dataset."""
  if num_classes == 10:
    return {"data.name": "digits", "data.test_fraction": 0.3}, 10, steps_per_epoch(1797 - 539)
  dim, per_class = {26: (16, 50), 100: (32, 30)}[num_classes]
  data = {"data.name": "gaussian_clusters", "data.num_classes": num_classes, "data.dim": dim,
          "data.separation": 1.0, "data.train_per_class": per_class, "data.test_per_class": 20}
  return data, min(dim, num_classes), steps_per_epoch(per_class * num_classes)


def setting(num_classes, noise, rate):
  """Overrides of one (dataset, noise) setting: data, model width, released schedule."""
  data, width, per_epoch = dataset(num_classes)
  return {**data, "data.val_fraction": VAL_FRACTION, "data.label_noise": noise,
          "data.noise_rate": rate, "model.hidden": (width, width),
          "train.steps": 100 * per_epoch, "optimizer.boundaries": (50 * per_epoch, 75 * per_epoch),
          "train.log_every": 10 * per_epoch, "train.eval_every": 10 * per_epoch,
          "train.checkpoint_every": 100 * per_epoch}


SETTINGS = {
    "digits10/uniform0.3": (10, setting(10, "uniform", 0.3)),
    "clusters26/uniform0.3": (26, setting(26, "uniform", 0.3)),
    "clusters26/classdep0.3": (26, setting(26, "class_dependent", 0.3)),
    "clusters100/uniform0.3": (100, setting(100, "uniform", 0.3)),
}
RCE_SCALE = float(-np.log(1e-4) / 4)  # the released RCE over softlab's (log 0 := -4)
# loss -> (grid parameter or None, {grid value: loss section}); one entry = untuned.
LOSSES = {
    "CE": (None, {None: {"name": "softmax_cross_entropy"}}),
    "GCE": ("q", {q: {"name": "gce", "q": q} for q in (0.05, 0.7, 0.95)}),
    "SCE": ("balance", {b: {"name": "sce", "alpha": 1 - b, "beta": b}
                        for b in (0.05, 0.5, 0.95)}),
    "NCE+RCE": ("alpha", {a: {"name": "nce_rce", "alpha": a, "beta": (10 - a) * RCE_SCALE}
                          for a in (5.0, 9.9)}),
    "MAE": (None, {None: {"name": "mae"}}),
    "CS": ("margin", {m: {"name": "crammer_singer", "margin": m} for m in (0.1, 1.0)}),
    "NFL+RCE": (None, {None: {"name": "nfl_rce", "alpha": 1.0, "beta": RCE_SCALE,
                              "gamma": 0.5}}),
    "NCE+MAE": (None, {None: {"name": "nce_mae", "alpha": 1.0, "beta": 0.5}}),
    "sum-exp": (None, {None: {"name": "sum_exp_loss"}}),
    "LDR-KL": (None, {None: {"name": "ldr_kl", "lam": LAM0, "margin": 0.1,
                             "normalize_logits": "softplus"}}),
    "ALDR-KL": (None, {None: {"name": "aldr_kl", "lam0": LAM0, "alpha": 2.0, "margin": 0.1,
                              "normalize_logits": "mean_abs"}}),
}


def label(loss, value, losses=LOSSES):
  """The variant's loss part: "GCE[q=0.7]", or the loss alone when untuned."""
  parameter = losses[loss][0]
  return loss if parameter is None else f"{loss}[{parameter}={value:g}]"


VARIANTS = {
    f"{label(loss, value)}/{name}": {**overrides, "loss": {**spec, "dtype": "float32"}}
    for loss, (_, grid) in LOSSES.items() for value, spec in grid.items()
    for name, (_, overrides) in SETTINGS.items()
}
SEEDS = (0, 1)
METRICS = {
    "test/accuracy": "clean test top-1 accuracy after 100 epochs",
    "val/accuracy": "top-1 accuracy on the held-out validation fifth (noisy labels), for tuning",
    "train/lambda_noisy": "ALDR-KL: mean lambda of the training examples whose label is noisy",
    "train/lambda_clean": "ALDR-KL: mean lambda of the training examples whose label is clean",
    "diverged": "1 if the run stopped on a non-finite training loss (its accuracies count as 0)",
}
PLOTS = ("test/accuracy",)


def analyze(history):
  return {"diverged": 0.0}


def diverged(history):
  """A run stopped by a non-finite training loss (sum-exp: the exponential of a noisy label's
  margin overflows and SGD's step with it): its model is unusable, so its accuracies count
  as 0."""
  return {"test/accuracy": 0.0, "val/accuracy": 0.0, "diverged": 1.0}


def diverged_note(results, variant):
  """", diverged n/S" when n of the variant's S seeds diverged, else ""."""
  seeds = results["variants"][variant]["seeds"].values()
  count = int(sum(s["diverged"] for s in seeds))
  return f", diverged {count}/{len(seeds)}" if count else ""


def tuned(results, losses=LOSSES, settings=SETTINGS):
  """{setting: {loss: (chosen grid value, test mean, test std, {value: (val, test)})}}."""
  variants = results["variants"]
  table = {}
  for name in settings:
    table[name] = {}
    for loss, (_, grid) in losses.items():
      scores = {value: (variants[f"{label(loss, value, losses)}/{name}"]["mean"]["val/accuracy"],
                        variants[f"{label(loss, value, losses)}/{name}"]["mean"]["test/accuracy"])
                for value in grid}
      best = max(scores, key=lambda value: scores[value][0])  # first value on ties
      numbers = variants[f"{label(loss, best, losses)}/{name}"]
      table[name][loss] = (best, numbers["mean"]["test/accuracy"],
                           numbers["std"]["test/accuracy"], scores)
  return table


def ranks(accuracies):
  """Rank of each accuracy (1 = most accurate)."""
  accuracies = np.asarray(accuracies)
  return (-accuracies).argsort().argsort() + 1


def aldr_summary(results, table):
  """Per setting: ALDR-KL's rank, gap to the best loss, and its lambdas (noisy, clean, gap)."""
  summary = {}
  for name, (num_classes, _) in SETTINGS.items():
    tests = [table[name][loss][1] for loss in LOSSES]
    aldr = list(LOSSES).index("ALDR-KL")
    numbers = results["variants"][f"ALDR-KL/{name}"]["mean"]
    noisy, clean = numbers["train/lambda_noisy"], numbers["train/lambda_clean"]
    summary[name] = {"K": num_classes, "rank": int(ranks(tests)[aldr]),
                     "behind_best": max(tests) - tests[aldr], "lambda_noisy": noisy,
                     "lambda_clean": clean, "lambda_gap": noisy - clean}
  return summary


def among_best(entry):
  return entry["rank"] <= 2 or entry["behind_best"] <= 0.01


def adapts(entry):
  return abs(entry["lambda_gap"]) >= 0.01 * LAM0


def tuned_tables(results, table, losses=LOSSES, settings=SETTINGS):
  """Markdown lines: the tuned test accuracy per loss and setting (mean ± std, rank, diverged
  seeds, chosen grid value), then each grid's validation / test accuracy per value."""
  lines = ["### Clean test accuracy, baselines tuned on validation (mean ± std over seeds; rank)",
           "", "| loss | " + " | ".join(settings) + " |", "|---|" + "---|" * len(settings)]
  for loss in losses:
    cells = []
    for name in settings:
      tests = [table[name][other][1] for other in losses]
      rank = ranks(tests)[list(losses).index(loss)]
      best, mean, std, _ = table[name][loss]
      chosen = "" if best is None else f" [{losses[loss][0]}={best:g}]"
      note = diverged_note(results, f"{label(loss, best, losses)}/{name}")
      cells.append(f"{mean:.4f} ± {std:.4f} ({rank}{note}){chosen}")
    lines.append(f"| {loss} | " + " | ".join(cells) + " |")
  lines += ["", "### Tuning grids: mean validation / test accuracy per grid value (chosen in bold)",
            "", "| loss | value | " + " | ".join(settings) + " |",
            "|---|---|" + "---|" * len(settings)]
  for loss, (parameter, grid) in losses.items():
    if parameter is None:
      continue
    for value in grid:
      cells = []
      for name in settings:
        best, _, _, scores = table[name][loss]
        cell = f"{scores[value][0]:.4f} / {scores[value][1]:.4f}"
        cells.append(f"**{cell}**" if value == best else cell)
      lines.append(f"| {loss} | {parameter}={value:g} | " + " | ".join(cells) + " |")
  return lines


def report(results):
  """Markdown: tuned accuracy per loss and setting, the chosen values, the grids, ALDR-KL's lambdas."""
  table = tuned(results)
  summary = aldr_summary(results, table)
  lines = tuned_tables(results, table)
  lines += ["", "LDR-KL (lambda = 10, softplus then row mean) and ALDR-KL (lambda_0 = 10, "
            "alpha = 2, mean |f|) are untuned, as released.", "",
            "### ALDR-KL: rank and adaptive lambda at the end of training", "",
            f"| setting | K | rank of {len(LOSSES)} | behind best | lambda noisy | lambda clean | gap |",
            "|---|---|---|---|---|---|---|"]
  for name, entry in summary.items():
    lines.append(f"| {name} | {entry['K']} | {entry['rank']} | {entry['behind_best']:.4f} | "
                 f"{entry['lambda_noisy']:.4f} | {entry['lambda_clean']:.4f} | "
                 f"{entry['lambda_gap']:+.4f} |")
  return "\n".join(lines)


def verdict(results):
  """Supported iff, at K >= 26, ALDR-KL is among the most accurate in >= 2 of 3 settings and
  its noisy and clean lambdas differ by >= 1% of lambda_0 in all of them (module doc)."""
  summary = aldr_summary(results, tuned(results))
  large = {name: entry for name, entry in summary.items() if entry["K"] >= 26}
  best = [name for name, entry in large.items() if among_best(entry)]
  adaptive = [name for name, entry in large.items() if adapts(entry)]
  numbers = "; ".join(
      f"{name}: rank {entry['rank']} ({entry['behind_best']:.3f} behind), "
      f"lambda gap {entry['lambda_gap']:+.3f}" for name, entry in summary.items())
  accurate = len(best) >= 2
  adaptive_all = len(adaptive) == len(large)
  if accurate and adaptive_all:
    return "supported", (f"At K >= 26 ALDR-KL is among the most accurate in {len(best)} of "
                         f"{len(large)} settings and its lambda separates noisy from clean "
                         f"examples in all. {numbers}.")
  reasons = []
  if not accurate:
    reasons.append(f"ALDR-KL is among the most accurate (rank <= 2 or within 0.01) in only "
                   f"{len(best)} of {len(large)} K >= 26 settings")
  if not adaptive_all:
    reasons.append(f"its noisy-clean lambda gap reaches 0.1 in only {len(adaptive)} of "
                   f"{len(large)} K >= 26 settings")
  return "not supported", "; ".join(reasons) + f". {numbers}."
