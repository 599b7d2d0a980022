"""Metric-learning evaluation on held-out identities: verification, retrieval, quality.

Every metric here is computed on the host over a whole split, from the
trainer's L2-normalized "embeddings" (cosine similarity of every pair of the
split's examples; pairs of the same label are genuine, the others impostors).
"""

import re

import jax
import numpy as np
from scipy import stats

from softlab.evaluators.common import REGISTRY, Evaluator, gather


def far_name(far: float) -> str:
  """1e-4 -> "1e-4" (the summary-key spelling of a false accept rate)."""
  return re.sub(r"e-0*", "e-", f"{far:.0e}")


def pair_scores(embeddings: np.ndarray, labels: np.ndarray):
  """(genuine scores, impostor scores, index pairs (i, j), i < j) of a split's examples."""
  unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
  similarity = unit @ unit.T
  i, j = np.triu_indices(len(labels), k=1)
  scores = similarity[i, j]
  same = labels[i] == labels[j]
  return scores, same, (i, j)


def threshold_at(impostor: np.ndarray, far: float) -> float:
  """The smallest threshold t with share(impostor > t) <= far."""
  allowed = int(np.floor(far * len(impostor)))
  ordered = np.sort(impostor)[::-1]
  return float(ordered[allowed]) if allowed < len(ordered) else -np.inf


def tar_at_far(scores, same, far: float) -> float:
  """True accept rate at the threshold whose false accept rate is at most `far`."""
  return float(np.mean(scores[same] > threshold_at(scores[~same], far)))


def roc_auc(scores, same) -> float:
  """Probability that a genuine pair outscores an impostor pair (ties count 1/2)."""
  ranks = stats.rankdata(scores)
  positives = np.sum(same)
  negatives = len(same) - positives
  return float((np.sum(ranks[same]) - positives * (positives + 1) / 2) / (positives * negatives))


def retrieval(embeddings, labels, ks):
  """{r@k: share of queries with a same-label item among their k nearest others,
  map: mean average precision}, every example a query against all the others
  (queries without another example of their label are skipped)."""
  unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
  similarity = unit @ unit.T
  np.fill_diagonal(similarity, -np.inf)
  order = np.argsort(-similarity, axis=1, kind="stable")[:, :-1]  # drop the query itself
  relevant = labels[order] == labels[:, None]
  has_match = relevant.any(axis=1)
  relevant = relevant[has_match]
  results = {f"r@{k}": float(np.mean(relevant[:, :k].any(axis=1))) for k in ks}
  hits = np.cumsum(relevant, axis=1)
  precision = hits / np.arange(1, relevant.shape[1] + 1)
  results["map"] = float(np.mean(np.sum(precision * relevant, axis=1) / hits[:, -1]))
  return results


class _SplitEvaluator(Evaluator):
  """An evaluator that gathers `keys` of the trainer's predictions over each split."""

  keys = ("embeddings", "labels")

  def __init__(self, experiment, splits, mesh, *, every):
    super().__init__(experiment, splits, mesh, every=every)
    keys = self.keys
    self._outputs = jax.jit(lambda params, extra, batch: {
        k: experiment.predict(params, extra, batch)[k] for k in keys})

  def split_metrics(self, out: dict, split: str) -> dict:
    raise NotImplementedError

  def run(self, params, extra):
    results = {}
    for split, batches in self.splits.items():
      out = gather(self._outputs, params, extra, batches, self.mesh)
      out = {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in out.items()}
      results.update({f"{split}/{k}": v for k, v in self.split_metrics(out, split).items()})
    return results


@REGISTRY.register("verification")
class Verification(_SplitEvaluator):
  """Per split: `tar@far=<f>` for each f in `fars` and `roc_auc`, over all pairs of
  the split's examples scored by cosine similarity."""

  def __init__(self, experiment, splits, mesh, *, every, fars=(1e-3, 1e-4)):
    if not fars or not all(0 < f < 1 for f in fars):
      raise ValueError(f"fars must be a non-empty tuple of rates in (0, 1), got {fars!r}")
    super().__init__(experiment, splits, mesh, every=every)
    self.fars = tuple(fars)

  def split_metrics(self, out, split):
    scores, same, _ = pair_scores(out["embeddings"], out["labels"])
    results = {f"tar@far={far_name(f)}": tar_at_far(scores, same, f) for f in self.fars}
    results["roc_auc"] = roc_auc(scores, same)
    return results


@REGISTRY.register("embedding_retrieval")
class EmbeddingRetrieval(_SplitEvaluator):
  """Per split: `r@k` for each k in `ks` and `map`, each example a query against the
  split's other examples (leave-one-out), ranked by cosine similarity."""

  def __init__(self, experiment, splits, mesh, *, every, ks=(1,)):
    if not ks or not all(isinstance(k, int) and k >= 1 for k in ks):
      raise ValueError(f"ks must be a non-empty tuple of integers >= 1, got {ks!r}")
    super().__init__(experiment, splits, mesh, every=every)
    self.ks = tuple(ks)

  def split_metrics(self, out, split):
    return retrieval(out["embeddings"], out["labels"], self.ks)


@REGISTRY.register("quality")
class Quality(_SplitEvaluator):
  """Per split, for a model with a quality head and data with a known noise "sigma":
  `quality_spearman`, the Spearman correlation of the predicted quality with -sigma,
  and the error-versus-reject curve `fnmr_reject=<r>`: the false non-match rate of
  the genuine pairs left after rejecting the share r of examples with the lowest
  predicted quality (a pair goes with either example), at the threshold that gives
  false match rate `fmr` on all pairs (fixed before rejecting, as in the FIQA
  literature's ERC)."""

  keys = ("embeddings", "labels", "quality")

  def __init__(self, experiment, splits, mesh, *, every, fmr=1e-3, rejects=(0.0, 0.2, 0.4)):
    if not 0 < fmr < 1:
      raise ValueError(f"fmr must be in (0, 1), got {fmr!r}")
    if not all(0 <= r < 1 for r in rejects):
      raise ValueError(f"rejects must be shares in [0, 1), got {rejects!r}")
    missing = [split for split, batches in splits.items() if "sigma" not in batches[0]]
    if missing:
      raise ValueError(f"splits: {', '.join(missing)} carry no per-example noise 'sigma'")
    super().__init__(experiment, splits, mesh, every=every)
    self.fmr, self.rejects = fmr, tuple(rejects)
    self._sigma = {split: np.concatenate([b["sigma"][b["weight"] > 0] for b in batches])
                   for split, batches in splits.items()}

  def split_metrics(self, out, split):
    results = {"quality_spearman": float(
        stats.spearmanr(out["quality"], -self._sigma[split]).statistic)}
    scores, same, (i, j) = pair_scores(out["embeddings"], out["labels"])
    threshold = threshold_at(scores[~same], self.fmr)
    rank = stats.rankdata(out["quality"], method="ordinal") - 1
    for share in self.rejects:
      genuine = same & (np.minimum(rank[i], rank[j]) >= int(round(share * len(rank))))
      results[f"fnmr_reject={share:g}"] = float(np.mean(scores[genuine] <= threshold))
    return results
