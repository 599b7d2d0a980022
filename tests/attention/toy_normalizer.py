"""A toy normalizer that exists only in the tests: squareplus weights.

w_i = sp(g x_i) / sum_j sp(g x_j), sp(z) = (z + sqrt(z^2 + b)) / 2, with a
gain g that attention may take per head and that the Flax layer learns per
head, and a constant b (4 in the squareplus paper) that the online form reads
in its per-entry terms. It is registered the way a normalizer in
softlab/normalizers.py is (its function and its AttentionSpec), touching no
attention code, to show that the dense and chunked paths and the layer pick it
up from the spec alone. Importing this module registers nothing; call
`register()`.
"""

import jax.numpy as jnp
import numpy as np

from softlab import normalizers

NAME = "squareplus"


def _squareplus(z, b):
  return (z + jnp.sqrt(z * z + b)) / 2


def squareplus(x, axis=-1, where=None, *, gain=1.0, b=4.0):
  """sp(g x_i) / sum_j sp(g x_j) over `axis`; masked entries 0."""
  x = jnp.asarray(x, jnp.float32)
  mask = normalizers.keep_mask(x, where)
  z = jnp.where(mask, jnp.asarray(gain, x.dtype) * x, 0)
  sp = jnp.where(mask, _squareplus(z, b), 0)
  total = jnp.sum(sp, axis=axis, keepdims=True)
  return sp / jnp.where(total > 0, total, 1)


def _terms(t, m, valid, hyper):
  """sp(t) grows at most linearly: plain sums, no running max."""
  sp = jnp.where(valid, _squareplus(jnp.where(valid, t, 0), hyper["b"]), 0)
  return sp, sp


def _row_terms(rows):
  return rows.value("gain"), None


def _inverse_scale(head_dim):
  return 1.0 / head_dim


SPEC = normalizers.AttentionSpec(
    default_scale=_inverse_scale,
    row_terms=_row_terms,
    multiplier_kwarg="gain",
    per_head=("gain",),
    layer_params=(
        normalizers.LayerParam("gain", always_learned=True, doc="initial squareplus gain"),
    ),
    online=normalizers.OnlineForm(terms=_terms, static=("b",)),
)


def register():
  normalizers.register(NAME, attention=SPEC)(squareplus)


def unregister():
  normalizers.unregister(NAME)


def reference_weights(scores, valid, gain, b=4.0):
  """float64 weights of [B, N, T, S] scores (valid: bool mask), gain per head [N]."""
  z = np.asarray(gain, np.float64).reshape(-1, 1, 1) * scores
  sp = np.where(valid, (z + np.sqrt(z * z + b)) / 2, 0)
  total = sp.sum(-1, keepdims=True)
  return sp / np.where(total > 0, total, 1)
