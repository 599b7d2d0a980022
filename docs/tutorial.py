# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # softlab inside your own Flax NNX model
#
# This tutorial reuses softlab's pieces in a model of your own, written with Flax NNX:
#
# 1. `softlab.attention.nnx.MultiHeadAttention` is built like `flax.nnx.MultiHeadAttention`,
#    plus `normalizer=`: swapping softmax for Scalable-Softmax (SSMax, with its `s` learned
#    per head) or sigmoid attention is one argument;
# 2. training uses StableMax cross-entropy (`softlab.losses.stablemax_cross_entropy`) and
#    ⊥Grad (`softlab.optim.perpgrad`, an optax transform) through `nnx.Optimizer`;
# 3. the layer sows its attention weights when asked (`sow_weights=True`), and
#    `nnx.capture` returns them for a plot.
#
# The task: a set of items, each a token and a flag; exactly one item is flagged, and the
# label is its token. A learned query reads the set with one attention layer, so a model
# that solves the task puts its attention weight on the flagged item.
# Run it with `python docs/tutorial.py` (on a CPU in well under two minutes); it writes
# `tutorial_attention.png` to the directory in `$TUTORIAL_OUT` (default: the current one).

# %%
import os
import pathlib

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import optax
from flax import nnx

from softlab import losses, optim
from softlab.attention import nnx as softlab_nnx

VOCAB, ITEMS, WIDTH = 16, 24, 32
STEPS, BATCH = 200, 64


def make_batch(key, size):
  """Tokens [size, ITEMS], the flag of one item per row, and the flagged item's token."""
  token_key, position_key = jax.random.split(key)
  tokens = jax.random.randint(token_key, (size, ITEMS), 0, VOCAB)
  position = jax.random.randint(position_key, (size,), 0, ITEMS)
  flags = jax.nn.one_hot(position, ITEMS, dtype=jnp.int32)
  return tokens, flags, tokens[jnp.arange(size), position], position


# %% [markdown]
# ## Your model, with softlab's attention
# Everything here is plain Flax NNX except the attention layer. `normalizer` is the only
# change between the variants; the normalizer's own parameters (SSMax's `s`, sigmoid's
# bias) come from softlab's spec of that normalizer, as `nnx.Param`s of the layer.


# %%
class SetReader(nnx.Module):
  """A learned query attends over the embedded items; a linear head reads out the token."""

  def __init__(self, normalizer: str, *, rngs: nnx.Rngs, **normalizer_options):
    self.tokens = nnx.Embed(VOCAB, WIDTH, rngs=rngs)
    self.flags = nnx.Embed(2, WIDTH, rngs=rngs)
    self.query = nnx.Param(jax.random.normal(rngs.params(), (1, 1, WIDTH)))
    self.attention = softlab_nnx.MultiHeadAttention(
        num_heads=1, in_features=WIDTH, normalizer=normalizer, qk_norm=True, rngs=rngs,
        **normalizer_options)
    self.head = nnx.Linear(WIDTH, VOCAB, rngs=rngs)

  def __call__(self, tokens, flags):
    items = self.tokens(tokens) + self.flags(flags)
    query = jnp.broadcast_to(self.query[...], (tokens.shape[0], 1, WIDTH))
    return self.head(self.attention(query, items)[:, 0])


# %% [markdown]
# ## Training: StableMax cross-entropy and ⊥Grad
# `perpgrad()` removes each gradient's component along its weights before Adam
# (⊥AdamW); StableMax cross-entropy returns one value per example, which we average.


# %%
def train(model: SetReader, key) -> list[float]:
  optimizer = nnx.Optimizer(model, optax.chain(optim.perpgrad(), optax.adam(3e-3)),
                            wrt=nnx.Param)

  def loss_fn(model, tokens, flags, labels):
    return losses.stablemax_cross_entropy(model(tokens, flags), labels).mean()

  @nnx.jit
  def step(model, optimizer, key):
    tokens, flags, labels, _ = make_batch(key, BATCH)
    loss, grads = nnx.value_and_grad(loss_fn)(model, tokens, flags, labels)
    optimizer.update(model, grads)
    return loss

  return [float(step(model, optimizer, k)) for k in jax.random.split(key, STEPS)]


@nnx.jit
def accuracy(model: SetReader, tokens, flags, labels) -> jax.Array:
  return jnp.mean(jnp.argmax(model(tokens, flags), -1) == labels)


tokens, flags, labels, position = make_batch(jax.random.key(1), 512)
models = {
    "softmax": SetReader("softmax", rngs=nnx.Rngs(0)),
    "ssmax (s learned per head)": SetReader("ssmax", rngs=nnx.Rngs(0)),
    "sigmoid (bias learned per head)": SetReader(
        "sigmoid", rngs=nnx.Rngs(0), sigmoid_bias=-jnp.log(ITEMS).item(),
        sigmoid_bias_learnable=True),
}
for name, model in models.items():
  curve = train(model, jax.random.key(2))
  print(f"{name:32s} loss {curve[0]:.3f} -> {curve[-1]:.3f}, "
        f"test accuracy {accuracy(model, tokens, flags, labels):.3f}")
print("SSMax's learned s:", models["ssmax (s learned per head)"].attention.ssmax_s[...])

# %% [markdown]
# ## The attention weights
# With `sow_weights` on, the layer sows its (dense) attention weights
# [batch, heads, queries, items]; `nnx.capture` runs the model and returns what its layers
# sowed. The flagged item is marked.

# %%
@nnx.jit
def attention_weights(model: SetReader, tokens, flags) -> jax.Array:
  """What the model's attention layer sowed: its weights [batch, 1 head, 1 query, ITEMS]."""
  _, sown = nnx.capture(model, nnx.Intermediate)(tokens, flags)
  return sown["attention"]["attention_weights"][0]


fig, axes = plt.subplots(len(models), 1, figsize=(8, 2.2 * len(models)), sharex=True)
for ax, (name, model) in zip(axes, models.items()):
  model.attention.sow_weights = True
  weights = attention_weights(model, tokens[:6], flags[:6])
  ax.imshow(weights[:, 0, 0], aspect="auto", cmap="viridis", vmin=0)
  ax.scatter(position[:6], jnp.arange(6), marker="x", color="red", label="flagged item")
  ax.set_ylabel("example")
  ax.set_title(f"{name}: the query's weights over the items")
axes[0].legend(loc="upper right")
axes[-1].set_xlabel("item")
fig.tight_layout()
out = pathlib.Path(os.environ.get("TUTORIAL_OUT", ".")) / "tutorial_attention.png"
fig.savefig(out, dpi=80)
print("wrote", out)
