"""Zero-shot accuracy and retrieval recall@k against NumPy."""

import numpy as np
import pytest

from softlab.evaluators.contrastive import Retrieval, ZeroShot

from .conftest import batches, fake_experiment

RNG = np.random.default_rng(5)
PROMPTS = RNG.normal(size=(3, 4)).astype(np.float32)


def predict(params, extra, batch, *, sown=()):
  return {"image_embeddings": batch["images"], "text_embeddings": batch["texts"],
          "class_embeddings": PROMPTS, "sown": {}}


def unit(x):
  x = np.asarray(x, np.float64)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_zero_shot_and_retrieval_equal_numpy(mesh):
  images = RNG.normal(size=(11, 4)).astype(np.float32)
  texts = (images + 0.8 * RNG.normal(size=(11, 4))).astype(np.float32)
  labels = RNG.integers(0, 3, 11)
  split = {"test": batches({"images": images, "texts": texts, "labels": labels}, 4, padding=1)}
  zero_shot = ZeroShot(fake_experiment(predict), split, mesh, every=1).run({}, {})
  want = np.mean((unit(images) @ unit(PROMPTS).T).argmax(-1) == labels)
  assert zero_shot["test/zero_shot_accuracy"] == pytest.approx(want)
  got = Retrieval(fake_experiment(predict), split, mesh, every=1, ks=(1, 3)).run({}, {})
  similarity = unit(images) @ unit(texts).T
  for direction, scores in (("image_to_text", similarity), ("text_to_image", similarity.T)):
    for k in (1, 3):
      top = np.argsort(-scores, axis=1)[:, :k]
      want = np.mean([i in top[i] for i in range(11)])
      assert got[f"test/{direction}_r@{k}"] == pytest.approx(want), (direction, k)
  assert 0 < got["test/image_to_text_r@1"] < got["test/image_to_text_r@3"]
