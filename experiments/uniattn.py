"""UniAttn post-training: superblocks that share attention weights, with and without compensation.

UniAttn (arXiv:2502.00439) groups a trained transformer's blocks into
superblocks of G: the first block of each computes its attention weights, the
later ones apply those weights to their own values (no query / key projections,
no scores, no normalizer), and a linear compensation LayerNorm(x) W_c, W_c = 0
at the start, is added to the reusing blocks. The model is then post-trained.

The study first trains its own base: a 6-layer softmax character LM
(configs/lm/softmax.py with 6 layers, d_model 64, batch 16, 600 steps). Every
other variant starts from that run's weights (`train.init_from = RunOf("base")`:
shared parameters copied, the reusing blocks' query / key dropped, W_c = 0) and
post-trains for the same 200 steps with the same optimizer (AdamW, lr 1e-3,
warmup 20, cosine):
  baseline            the unchanged model (superblock size 1), post-trained alike
  g2, g3              superblocks of 2 / 3, pure reuse (no compensation)
  g2_comp, g3_comp    the same with UniAttn's compensation
Reported: validation loss at 64 tokens after post-training, and the share of
the blocks whose attention scores are skipped, 1 - ceil(L / G) / L (G = 2: 3
of 6 blocks, G = 3: 4 of 6): the attention FLOPs saved, q.k^T, the normalizer
and the query / key projections of those blocks.

Verdict thresholds, fixed before running:
  A. quality: g2_comp's loss is within 0.05 nats of the baseline's;
  B. compensation helps: comp lowers the loss of pure reuse by at least 0.01
     nats, at G = 2 and at G = 3.
Supported iff A and B hold; not supported iff A fails; inconclusive otherwise.
The paper's own numbers (LLaMA-2 7B / Mistral 7B, Table 2) are on downstream
benchmarks after post-training on instruction data and are not comparable; its
closed-form initialization of W_c is not implemented (W_c starts at 0).

Cost: 6 runs, 522 run-seconds on the shared 2-core machine (the base 269 s).
"""

import math

from softlab.study import RunOf

TITLE = "UniAttn: Reducing Inference Costs via Softmax Unification for Post-Training LLMs"
ARXIV = "2502.00439"
CLAIM = ("Sharing attention weights within superblocks of a trained transformer, with a linear "
         "compensation, keeps its quality after post-training while skipping the attention "
         "scores of most blocks.")
BASE_CONFIG = "../configs/lm/softmax.py"
LAYERS, BASE_STEPS, POST_STEPS = 6, 600, 200
QUALITY_MAX, COMPENSATION_MIN = 0.05, 0.01


def _schedule(steps, lr, warmup):
  return {"train.steps": steps, "optimizer.lr": lr, "optimizer.warmup_steps": warmup,
          "optimizer.total_steps": steps, "train.eval_every": max(1, steps // 4),
          "train.checkpoint_every": steps, "train.log_every": max(1, steps // 20)}


_MODEL = {"model.num_layers": LAYERS, "model.d_model": 64, "model.num_heads": 4,
          "train.batch_size": 16, "data.eval_lengths": (64,), "data.eval_windows": 32}


def _post(superblock_size, compensation):
  return {**_MODEL, **_schedule(POST_STEPS, 1e-3, 20), "train.init_from": RunOf("base"),
          "model.superblock_size": superblock_size,
          "model.uniattn_compensation": compensation}


VARIANTS = {
    "base": {**_MODEL, **_schedule(BASE_STEPS, 3e-3, 60)},
    "baseline": _post(1, False),
    "g2": _post(2, False),
    "g2_comp": _post(2, True),
    "g3": _post(3, False),
    "g3_comp": _post(3, True),
}
SEEDS = (0,)
METRICS = {"val_64/loss": "validation loss (nats/char) at 64 tokens after the run"}
PLOTS = ("train/loss",)
PAPER = {}


def skipped_share(superblock_size: int) -> float:
  """The share of the blocks whose attention scores are reused, not computed."""
  return 1 - math.ceil(LAYERS / superblock_size) / LAYERS


def _loss(results, variant):
  return results["variants"][variant]["mean"]["val_64/loss"]


def report(results):
  baseline = _loss(results, "baseline")
  lines = [f"Base (600 steps) validation loss {_loss(results, 'base'):.4f}; every other row "
           f"post-trains it for {POST_STEPS} steps.", "",
           "| variant | superblock size | compensation | validation loss | vs baseline "
           "| blocks whose attention scores are skipped |", "|---|---|---|---|---|---|"]
  for variant, size, comp in (("baseline", 1, False), ("g2", 2, False), ("g2_comp", 2, True),
                              ("g3", 3, False), ("g3_comp", 3, True)):
    loss = _loss(results, variant)
    lines.append(f"| {variant} | {size} | {'yes' if comp else 'no'} | {loss:.4f} | "
                 f"{loss - baseline:+.4f} | {skipped_share(size):.0%} |")
  return "\n".join(lines)


def verdict(results):
  baseline = _loss(results, "baseline")
  quality = _loss(results, "g2_comp") - baseline
  gains = {g: _loss(results, f"g{g}") - _loss(results, f"g{g}_comp") for g in (2, 3)}
  a = quality <= QUALITY_MAX
  b = all(gain >= COMPENSATION_MIN for gain in gains.values())
  facts = (f"A: g2 + compensation {quality:+.3f} nats vs the baseline (bar +{QUALITY_MAX}); "
           f"B: compensation lowers the loss of pure reuse by {gains[2]:+.3f} at G = 2 and "
           f"{gains[3]:+.3f} at G = 3 (bar {COMPENSATION_MIN}); g3 + compensation "
           f"{_loss(results, 'g3_comp') - baseline:+.3f} vs the baseline; attention scores skipped "
           f"in {skipped_share(2):.0%} (G = 2) / {skipped_share(3):.0%} (G = 3) of the blocks")
  if a and b:
    return "supported", facts
  if not a:
    return "not supported", facts
  return "inconclusive", facts
