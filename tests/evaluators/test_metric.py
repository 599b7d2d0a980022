"""Verification (TAR@FAR, ROC-AUC), leave-one-out retrieval (R@k, mAP) and quality (Spearman,
error-versus-reject) against brute-force NumPy; padding rows never count."""

import itertools

import numpy as np
import pytest
from scipy import stats

from softlab.evaluators.metric import EmbeddingRetrieval, Quality, Verification, far_name

from .conftest import batches, fake_experiment

RNG = np.random.default_rng(7)
LABELS = np.repeat(np.arange(6), 4)
EMBEDDINGS = (RNG.normal(size=(6, 5))[LABELS] + 0.9 * RNG.normal(size=(24, 5))).astype(np.float32)
SIGMA = RNG.uniform(0.2, 1.2, 24).astype(np.float32)
QUALITY = (-SIGMA + 0.3 * RNG.normal(size=24)).astype(np.float32)


def predict(params, extra, batch, *, sown=()):
  return {"embeddings": batch["inputs"], "labels": batch["labels"], "quality": batch["q"],
          "sown": {}}


def split():
  return {"test": batches({"inputs": EMBEDDINGS, "labels": LABELS, "sigma": SIGMA, "q": QUALITY},
                          10, padding=2)}


def pairs():
  unit = EMBEDDINGS.astype(np.float64)
  unit /= np.linalg.norm(unit, axis=1, keepdims=True)
  return [(float(unit[i] @ unit[j]), LABELS[i] == LABELS[j], i, j)
          for i, j in itertools.combinations(range(24), 2)]


def test_verification_equals_brute_force(mesh):
  got = Verification(fake_experiment(predict), split(), mesh, every=1, fars=(0.01, 0.1)).run({}, {})
  scored = pairs()
  genuine = [s for s, same, _, _ in scored if same]
  impostor = sorted((s for s, same, _, _ in scored if not same), reverse=True)
  for far in (0.01, 0.1):
    # the threshold lets through at most far * #impostors impostor pairs
    threshold = impostor[int(np.floor(far * len(impostor)))]
    assert np.mean([s > threshold for s in impostor]) <= far
    assert got[f"test/tar@far={far_name(far)}"] == pytest.approx(
        np.mean([g > threshold for g in genuine]))
  auc = np.mean([(g > i) + 0.5 * (g == i) for g in genuine for i in impostor])
  assert got["test/roc_auc"] == pytest.approx(auc)
  assert far_name(1e-4) == "1e-4" and far_name(1e-3) == "1e-3"


def test_retrieval_equals_brute_force(mesh):
  got = EmbeddingRetrieval(fake_experiment(predict), split(), mesh, every=1, ks=(1, 3)).run({}, {})
  unit = EMBEDDINGS / np.linalg.norm(EMBEDDINGS, axis=1, keepdims=True)
  similarity = unit.astype(np.float64) @ unit.T.astype(np.float64)
  hits, precisions = {1: [], 3: []}, []
  for q in range(24):
    others = [j for j in np.argsort(-similarity[q], kind="stable") if j != q]
    relevant = LABELS[others] == LABELS[q]
    for k in (1, 3):
      hits[k].append(relevant[:k].any())
    ranks = np.flatnonzero(relevant) + 1
    precisions.append(np.mean(np.arange(1, len(ranks) + 1) / ranks))
  for k in (1, 3):
    assert got[f"test/r@{k}"] == pytest.approx(np.mean(hits[k]))
  assert got["test/map"] == pytest.approx(np.mean(precisions))


def test_quality_spearman_and_error_versus_reject(mesh):
  got = Quality(fake_experiment(predict), split(), mesh, every=1, fmr=0.05,
                rejects=(0.0, 0.25)).run({}, {})
  assert got["test/quality_spearman"] == pytest.approx(stats.spearmanr(QUALITY, -SIGMA).statistic)
  scored = pairs()
  impostor = sorted((s for s, same, _, _ in scored if not same), reverse=True)
  threshold = impostor[int(np.floor(0.05 * len(impostor)))]
  rejected = set(np.argsort(QUALITY, kind="stable")[:6])
  for share, dropped in ((0.0, set()), (0.25, rejected)):
    genuine = [s for s, same, i, j in scored if same and i not in dropped and j not in dropped]
    assert got[f"test/fnmr_reject={share:g}"] == pytest.approx(
        np.mean([s <= threshold for s in genuine]))


def test_quality_needs_sigma(mesh):
  with pytest.raises(ValueError, match="carry no per-example noise 'sigma'"):
    Quality(fake_experiment(predict), {"test": batches({"inputs": EMBEDDINGS, "labels": LABELS},
                                                       10)}, mesh, every=1)
