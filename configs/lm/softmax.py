"""Character-level LM on Python's help text with softmax attention (the baseline).

A small pre-norm transformer with RoPE trained at length 64 and validated at
1x-4x the training length in the same run; the base of the other lm configs.
"""

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  config.trainer = "lm"
  config.seed = 0
  config.data = dict(name="text_corpus", seq_len=64, eval_lengths=(64, 128, 256), eval_windows=32)
  config.model = dict(name="transformer", d_model=128, num_layers=2, num_heads=4, mlp_ratio=4,
                      positions="rope", tie_embeddings=True, normalizer="softmax")
  config.loss = dict(name="softmax_cross_entropy", dtype="float32")
  config.optimizer = dict(name="adamw", lr=3e-3, b1=0.9, b2=0.99, weight_decay=0.01,
                          schedule="warmup_cosine", warmup_steps=100, total_steps=1500,
                          grad_clip_norm=1.0)
  config.train = dict(steps=1500, batch_size=32, log_every=50, eval_every=250,
                      checkpoint_every=500, eval_batch_size=32, dtype="float32")
  config.evals = dict(lm=dict(name="lm"))
  return config
