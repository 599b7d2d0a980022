"""Image-text contrastive losses, SigLIP (sigmoid) and CLIP (softmax), sharded.

Both take a batch of paired embeddings (row i of `zimg` goes with row i of
`ztxt`) and return one value per pair. With `axis_name`, each device holds
its b = |B| / D pairs of the global batch |B| (inside `jax.shard_map` or
`jax.pmap`) and gets the values of its own pairs; their mean over all devices
is the loss of the global batch, and gradients flow back across devices.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from softlab.losses._common import compute_dtype, l2_normalize, logsumexp
from softlab.losses._registry import REGISTRY

__all__ = ["CLIPLogitScale", "SigLIPLogitParams", "clip_loss", "siglip_loss"]


class SigLIPLogitParams(nn.Module):
  """The learnable SigLIP temperature and bias: returns (t, b), t = exp(t').

  Attributes:
    t_prime_init: initial t' (paper: log 10, so t starts at 10).
    bias_init: initial b (paper: -10, so that the many negatives start with a
      small loss); None for the paper's no-bias ablation (b = 0, not learned).
  """

  t_prime_init: float = math.log(10.0)
  bias_init: float | None = -10.0

  @nn.compact
  def __call__(self) -> tuple[jax.Array, jax.Array]:
    t_prime = self.param(
        "t_prime", nn.initializers.constant(self.t_prime_init), (), jnp.float32
    )
    if self.bias_init is None:
      return jnp.exp(t_prime), jnp.zeros((), jnp.float32)
    bias = self.param(
        "bias", nn.initializers.constant(self.bias_init), (), jnp.float32
    )
    return jnp.exp(t_prime), bias

  def loss_arguments(self) -> dict[str, jax.Array]:
    """The keyword arguments of `siglip_loss`: {"t": t, "b": b}."""
    t, b = self()
    return {"t": t, "b": b}


class CLIPLogitScale(nn.Module):
  """The learnable CLIP temperature: returns t = min(exp(t'), max_scale).

  CLIP initializes the temperature to 1 / 0.07 and clips it at 100; capping
  t here (zero gradient above the cap) has the effect of CLIP's clamping of
  t' after every step. Pass `t_prime_init=math.log(10.0)` to start from
  SigLIP's temperature instead.

  Attributes:
    t_prime_init: initial t' (CLIP: log(1 / 0.07)).
    max_scale: the largest t (CLIP: 100).
  """

  t_prime_init: float = math.log(1 / 0.07)
  max_scale: float = 100.0

  @nn.compact
  def __call__(self) -> jax.Array:
    t_prime = self.param(
        "t_prime", nn.initializers.constant(self.t_prime_init), (), jnp.float32
    )
    return jnp.minimum(jnp.exp(t_prime), self.max_scale)

  def loss_arguments(self) -> dict[str, jax.Array]:
    """The keyword arguments of `clip_loss`: {"t": t}."""
    return {"t": self()}


def _prepare_pair(zimg, ztxt, normalize, *scalars):
  """(x, y, scalars) in the compute dtype, x and y L2-normalized if asked."""
  zimg, ztxt = jnp.asarray(zimg), jnp.asarray(ztxt)
  if zimg.ndim != 2 or zimg.shape != ztxt.shape:
    raise ValueError(
        "zimg and ztxt must be [batch, dim] of the same shape, got"
        f" {zimg.shape} and {ztxt.shape}"
    )
  cdtype = compute_dtype(zimg, ztxt)
  x, y = zimg.astype(cdtype), ztxt.astype(cdtype)
  if normalize:
    x, y = l2_normalize(x), l2_normalize(y)
  return x, y, [jnp.asarray(s, cdtype) for s in scalars]


def _sigmoid_rows(x, y, t, b, positives_on_diagonal):
  """-sum_j log sigmoid(z_ij (t x_i.y_j + b)) for one block of pairs.

  z_ij = 1 on the diagonal when the block holds the positives, else -1.
  """
  logits = (t * x) @ y.T + b
  if positives_on_diagonal:
    logits = jnp.where(jnp.eye(x.shape[0], dtype=bool), logits, -logits)
  else:
    logits = -logits
  return -jnp.sum(jax.nn.log_sigmoid(logits), axis=1)


@REGISTRY.register("siglip_loss", kind="pairwise", logit_params=SigLIPLogitParams)
def siglip_loss(
    zimg: ArrayLike,
    ztxt: ArrayLike,
    *,
    t: ArrayLike,
    b: ArrayLike,
    normalize: bool = True,
    axis_name=None,
) -> jax.Array:
  """SigLIP sigmoid loss: l_i = -sum_j log sigmoid(z_ij (t x_i.y_j + b)).

  z_ii = 1 and z_ij = -1 for j != i, j over every text of the global batch,
  so mean_i l_i is the paper's loss (the sum over all |B|^2 pairs divided by
  |B|). With `axis_name`, each device computes the b x b block of its own
  pairs (the positives), then passes its text embeddings around the ring of
  devices with `lax.ppermute` D - 1 times, adding each negative block. Each
  step is rematerialized in the backward pass, so the per-device memory is
  O(b^2 + |B| dim), never O(b |B|) logits as with an all-gather; the
  gradients of the texts travel back around the ring.

  Args:
    zimg: [b, dim] image embeddings (this device's pairs).
    ztxt: [b, dim] text embeddings, row i paired with zimg row i.
    t: temperature, multiplicative (t = exp(t') with t' learned; see
      `SigLIPLogitParams`).
    b: bias (learned; init -10).
    normalize: L2-normalize the embeddings first (the paper's x and y are
      normalized); False if they already are.
    axis_name: the mesh or pmap axis the batch is split over, or None.

  Returns:
    [b] per-pair losses in float32 (or the inputs' wider dtype).

  References:
    Zhai et al., "Sigmoid Loss for Language Image Pre-Training",
    arXiv:2303.15343.
  """
  x, y, (t, b) = _prepare_pair(zimg, ztxt, normalize, t, b)
  if axis_name is None:
    return _sigmoid_rows(x, y, t, b, True)
  # Rematerialized: the backward pass recomputes each b x b block.
  rows = jax.checkpoint(_sigmoid_rows, static_argnums=(4,))
  devices = jax.lax.axis_size(axis_name)
  ring = [(i, (i + 1) % devices) for i in range(devices)]

  def step(carry, _):
    y, loss = carry
    y = jax.lax.ppermute(y, axis_name, ring)
    return (y, loss + rows(x, y, t, b, False)), None

  init = (y, rows(x, y, t, b, True))
  (_, loss), _ = jax.lax.scan(step, init, length=devices - 1)
  return loss


@REGISTRY.register("clip_loss", kind="pairwise", logit_params=CLIPLogitScale)
def clip_loss(
    zimg: ArrayLike,
    ztxt: ArrayLike,
    *,
    t: ArrayLike,
    normalize: bool = True,
    axis_name=None,
) -> jax.Array:
  """CLIP symmetric InfoNCE loss of each pair over the global batch.

  l_i = -(log softmax_j(t x_i.y_j)_i + log softmax_j(t x_j.y_i)_i) / 2: the
  image-to-text and text-to-image terms of pair i. Both softmaxes run over the
  global batch, so mean_i l_i is the CLIP loss -(1/2|B|) sum_i [...]. With
  `axis_name`, both modalities are all-gathered (tiled) and each device
  computes the rows of its own pairs in both directions: per-device memory
  O(b |B|) for the two [b, |B|] logit blocks.

  Args:
    zimg: [b, dim] image embeddings (this device's pairs).
    ztxt: [b, dim] text embeddings, row i paired with zimg row i.
    t: temperature, multiplicative (t = exp(t'); see `CLIPLogitScale`).
    normalize: L2-normalize the embeddings first.
    axis_name: the mesh or pmap axis the batch is split over, or None.

  Returns:
    [b] per-pair losses in float32 (or the inputs' wider dtype).

  References:
    Radford et al., "Learning Transferable Visual Models From Natural Language
    Supervision", arXiv:2103.00020.
  """
  x, y, (t,) = _prepare_pair(zimg, ztxt, normalize, t)
  if axis_name is None:
    all_x, all_y = x, y
  else:
    all_x = jax.lax.all_gather(x, axis_name, tiled=True)
    all_y = jax.lax.all_gather(y, axis_name, tiled=True)
  positive = t * jnp.sum(x * y, axis=1)
  image_to_text = logsumexp(t * (x @ all_y.T))
  text_to_image = logsumexp(t * (y @ all_x.T))
  return (image_to_text + text_to_image) / 2 - positive
