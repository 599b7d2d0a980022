"""Margin losses side by side on synthetic identities, clean and with label noise.

Task: synthetic_identities with 1,000 training identities (8 samples each, 32-d
inputs: 16 identity dimensions mixed with 16 nuisance ones, per-sample noise
sigma ~ U[0.2, 1.2]); an MLP (one hidden layer of 128) embeds them into 64
dimensions. Ten losses, each at its paper defaults: normalized softmax (s = 64),
CosFace (s = 64, m = 0.35), ArcFace (s = 64, m = 0.5), sub-center ArcFace
(K = 3), ElasticFace-Arc (m = 0.5, sigma = 0.05) and ElasticFace-Arc+ (sorted
margins, sigma = 0.0175: the released config's; its first run used 0.05), AdaFace (m = 0.4, h = 0.333), SphereFace2 (r = 40, m = 0.4,
lambda = 0.7, t = 3), pair-wise Circle (m = 0.25, gamma = 256, in-batch pairs)
and UNPG (ArcFace plus in-batch negatives), each with clean labels and with
20% and 40% uniform label noise: 30 variants, one seed. AdamW, lr 1e-2, batch
256, 1,200 steps (about 38 epochs; ArcFace's training accuracy levels off near
0.9 from step 800 in a calibration run of ArcFace alone). One seed, not two,
because the shared 2-core machine gave each run a fraction of a core when the
study started (a 60-step trial run took 170 s of wall time); so differences
inside the thresholds below are noise. The first run of this study had cut the
noise runs of eight losses (all but ArcFace and sub-center ArcFace) for time,
before any result was read; they were run afterwards with the same config, and
none of them enters a verdict (claims B and C use clean labels, claim A only
ArcFace and sub-center ArcFace).

Metrics on 200 held-out identities (4 samples each): TAR at FAR = 1e-4 over
all pairs (primary), TAR at FAR = 1e-3, ROC-AUC and leave-one-out R@1;
"test_low" repeats the verification on new samples of the same identities at
the lowest quality (sigma = 1.2); closed-set accuracy on new samples of the
training identities.

Verdict, thresholds fixed before the study ran. Each claim compares two values; a difference above +T supports it,
below -T contradicts it, anything between is inconclusive:
  A. sub-center ArcFace is robust to label noise: subcenter_arcface - arcface on
     TAR@FAR=1e-4 at 20% and at 40% noise, T = 0.02 (supported only if both
     support it, contradicted if either contradicts it);
  B. AdaFace helps on low-quality samples: adaface - arcface on test_low
     TAR@FAR=1e-3, T = 0.01, clean labels. At the lowest quality TAR@FAR=1e-4
     sits at the floor (0.01 for ArcFace in the calibration run), so claim B
     is judged one FAR step up, where ArcFace had 0.04;
  C. ElasticFace+ beats fixed margins: elasticface_plus - max(arcface, cosface)
     on TAR@FAR=1e-4, T = 0.02, clean labels.
Overall: supported iff A, B and C are supported; not supported iff any is
contradicted; otherwise inconclusive. A difference of exactly T is not above
it: the first write-up of this run judged B "supported" because float
rounding made 64/1200 - 52/1200 = 0.010000000000000002 > 0.01; the rule above
makes that tie inconclusive, and the code now rounds differences to 1e-9
before comparing (the overall verdict, not supported, is the same either way).

Cost: 30 runs, 2,315 run-seconds (wall time on the shared machine: the first 14
runs 1,635 s at load 10-13, 45-273 s a run; the other 16 runs 680 s).

ElasticFace-Arc+ was first run with sigma = 0.05 (TAR@FAR=1e-4 0.232 clean,
0.183 / 0.056 at 20% / 40% noise); its variants now use the released
ElasticArcFacePlus config's sigma = 0.0175 (the loss's default with plus).
All 30 runs were rerun then, one at a time: the 27 others reproduced their
numbers exactly.

The calibration run (ArcFace, seed 0, 400 and 1,200 steps, to choose the step
count and see whether TAR@FAR=1e-4 on test_low is informative) was the only
result read before this protocol was fixed; no other loss had been run.
"""

TITLE = "Margin losses for face recognition, side by side (ArcFace family and successors)"
ARXIV = "1801.07698"
CLAIM = ("Sub-center ArcFace is robust to label noise; AdaFace helps on low-quality samples; "
         "ElasticFace+ beats fixed margins.")
BASE_CONFIG = "../configs/metric/arcface.py"
STEPS = 1200
PRIMARY = "test/tar@far=1e-4"
LOW = "test_low/tar@far=1e-3"
THRESHOLDS = {PRIMARY: 0.02, LOW: 0.01}
NOISE_RATES = (0.2, 0.4)
_COMMON = {"train.steps": STEPS, "train.log_every": 100, "train.eval_every": STEPS,
           "train.checkpoint_every": STEPS}
LOSSES = {
    "normalized_softmax": {"loss": {"name": "normalized_softmax"}},
    "cosface": {"loss": {"name": "cosface"}},
    "arcface": {"loss": {"name": "arcface"}},
    "subcenter_arcface": {"loss": {"name": "subcenter_arcface"}, "model.subcenters": 3},
    "elasticface": {"loss": {"name": "elasticface"}},
    "elasticface_plus": {"loss": {"name": "elasticface", "plus": True, "sigma": 0.0175}},
    "adaface": {"loss": {"name": "adaface"}},
    "sphereface2": {"loss": {"name": "sphereface2"}},
    "pairwise_circle": {"loss": {"name": "pairwise_circle_loss"}},
    "unpg": {"loss": {"name": "unpg"}},
}
NOISY = tuple(LOSSES)  # the losses run with label noise
VARIANTS = {
    **{name: {**_COMMON, **fields} for name, fields in LOSSES.items()},
    **{f"{name}_noise{round(rate * 100)}": {**_COMMON, **fields, "data.label_noise": "uniform",
                                             "data.noise_rate": rate}
       for rate in NOISE_RATES for name, fields in LOSSES.items() if name in NOISY},
}
SEEDS = (0,)
METRICS = {PRIMARY: "TAR at FAR = 1e-4, held-out identities (primary)",
           "test/tar@far=1e-3": "TAR at FAR = 1e-3, held-out identities",
           LOW: "TAR at FAR = 1e-3, held-out identities at the lowest quality",
           "test_low/tar@far=1e-4": "TAR at FAR = 1e-4, held-out identities at the lowest quality",
           "test/r@1": "leave-one-out R@1, held-out identities",
           "test/roc_auc": "ROC-AUC, held-out identities",
           "closed/accuracy": "closed-set accuracy, new samples of the training identities"}
PLOTS = ("train/loss",)


def _value(results, variant, key):
  return results["variants"][variant]["mean"][key]


def _judge(difference, key):
  # TARs are counts over 1,200 genuine pairs: round off float error, so that a
  # difference of exactly T (e.g. 64/1200 - 52/1200) is not "above" T.
  difference = round(difference, 9)
  if difference > THRESHOLDS[key]:
    return "supported"
  return "contradicted" if difference < -THRESHOLDS[key] else "inconclusive"


def claims(results):
  """claim -> (status, metric key, differences) for A, B, C."""
  a = [_value(results, f"subcenter_arcface_noise{p}", PRIMARY)
       - _value(results, f"arcface_noise{p}", PRIMARY) for p in (20, 40)]
  a_judged = [_judge(d, PRIMARY) for d in a]
  a_status = ("contradicted" if "contradicted" in a_judged else
              "supported" if all(s == "supported" for s in a_judged) else "inconclusive")
  b = _value(results, "adaface", LOW) - _value(results, "arcface", LOW)
  c = _value(results, "elasticface_plus", PRIMARY) - max(
      _value(results, "arcface", PRIMARY), _value(results, "cosface", PRIMARY))
  return {"A sub-center robust to label noise (20%, 40%)": (a_status, PRIMARY, a),
          "B AdaFace on low quality": (_judge(b, LOW), LOW, [b]),
          "C ElasticFace+ over max(ArcFace, CosFace)": (_judge(c, PRIMARY), PRIMARY, [c])}


def verdict(results):
  judged = claims(results)
  detail = "; ".join(f"{name}: {status} ({key}: {', '.join(f'{d:+.4f}' for d in diffs)})"
                     for name, (status, key, diffs) in judged.items())
  statuses = [status for status, _, _ in judged.values()]
  if all(s == "supported" for s in statuses):
    return "supported", detail
  if "contradicted" in statuses:
    return "not supported", detail
  return "inconclusive", detail


def report(results):
  lines = ["| claim | status | metric | differences (threshold) |", "| --- | --- | --- | --- |"]
  for name, (status, key, diffs) in claims(results).items():
    lines.append(f"| {name} | {status} | {key} | {', '.join(f'{d:+.4f}' for d in diffs)} "
                 f"(±{THRESHOLDS[key]}) |")
  lines += ["", f"{PRIMARY} with label noise:", "",
            "| loss | clean | 20% | 40% |", "| --- | --- | --- | --- |"]
  for name in NOISY:
    row = [_value(results, name, PRIMARY)] + [
        _value(results, f"{name}_noise{round(rate * 100)}", PRIMARY) for rate in NOISE_RATES]
    lines.append(f"| {name} | " + " | ".join(f"{v:.4f}" for v in row) + " |")
  return "\n".join(lines)
