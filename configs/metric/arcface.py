"""ArcFace on synthetic identities: the metric trainer's base config.

Every margin loss runs from it by name, e.g. `softlab train configs/metric/arcface.py
--config.loss.name=cosface` (sub-center losses also set `--config.model.subcenters=3`,
CR-FIQA `--config.model.quality_head=True`). An MLP embeds 32-dimensional samples of
1,000 training identities (16 identity dimensions mixed with 16 nuisance ones) into
64 dimensions; verification (TAR@FAR, ROC-AUC) and retrieval (R@1, mAP) run on 200
held-out identities ("test"; "test_low": their lowest-quality samples), closed-set
accuracy on new samples of the training identities ("closed").
"""

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  config.trainer = "metric"
  config.seed = 0
  config.data = dict(name="synthetic_identities", num_identities=1000, heldout_identities=200,
                     per_identity=8)
  config.model = dict(name="embedding_classifier", backbone=dict(name="mlp", hidden=(128,)),
                      embedding_dim=64)
  config.loss = dict(name="arcface")
  config.optimizer = dict(name="adamw", lr=1e-2, weight_decay=5e-4)
  config.train = dict(steps=2000, batch_size=256, log_every=100, eval_every=500,
                      checkpoint_every=2000, dtype="float32")
  config.evals = dict(
      verification=dict(name="verification", splits=("test", "test_low"), fars=(1e-3, 1e-4)),
      retrieval=dict(name="embedding_retrieval", splits=("test",), ks=(1,)),
      closed_set=dict(name="classification", splits=("closed",)),
  )
  return config
