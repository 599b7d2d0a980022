"""embedding_classifier: shapes with MLP and ViT-tiny backbones, sub-centers, quality head."""

import jax
import ml_collections
import numpy as np
import pytest

from softlab import losses, models


def build(**options):
  config = ml_collections.ConfigDict({"name": "embedding_classifier", "embedding_dim": 8,
                                      **options})
  return models.build(config, {"num_classes": 5, "input_shape": (6,)}, dtype=np.float32)


def test_outputs_are_cosines_of_the_embeddings_to_the_centers():
  model = build(backbone={"name": "mlp", "hidden": (16,)}, quality_head=True)
  x = np.random.default_rng(0).normal(size=(3, 6)).astype(np.float32)
  out, _ = jax.jit(lambda x: model.init_with_output(jax.random.key(0), x))(x)
  assert out["embeddings"].shape == (3, 8) and out["centers"].shape == (5, 8)
  assert out["quality"].shape == (3,)
  np.testing.assert_allclose(out["cos"], losses.cosine_logits(out["embeddings"], out["centers"]),
                             rtol=1e-6)
  np.testing.assert_allclose(out["norms"], np.linalg.norm(out["embeddings"], axis=1), rtol=1e-6)


def test_subcenters_and_a_vit_backbone():
  model = build(subcenters=3, backbone={"name": "vit_tiny", "patch": 2, "d_model": 16,
                                        "num_layers": 1, "num_heads": 2})
  images = jax.ShapeDtypeStruct((2, 8, 8, 1), np.float32)
  out = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x)[0], images)
  assert out["cos"].shape == (2, 5, 3) and out["centers"].shape == (5, 3, 8)
  assert "quality" not in out


@pytest.mark.parametrize("options, message", [
    ({"subcenters": 0}, "subcenters must be an integer >= 1"),
    ({"backbone": {"name": "embedding_classifier"}}, "cannot be its own backbone"),
    ({"backbone": {"name": "mlp", "hidden": (0,)}},
     r"^backbone.hidden must be layer widths, integers >= 1, got \(0,\)$"),
    ({"bogus": 1}, "bogus"),
])
def test_bad_options(options, message):
  with pytest.raises(ValueError, match=message):
    build(**options)
