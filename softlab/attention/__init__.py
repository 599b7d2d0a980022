"""Attention with a pluggable normalizer: dense, chunked, Flax layers, diagnostics;
linear attention with feature maps (softlab.attention.linear).

dot_product_attention(query, key, value, ..., normalizer=...) follows
jax.nn.dot_product_attention's layout; implementation="dense" is the reference
built on softlab.normalizers, "chunked" is memory-linear in sequence length.
"""

from softlab.attention import diagnostics
from softlab.attention import soft
from softlab.attention.chunked import supported as chunked_normalizers
from softlab.attention.core import dot_product_attention
from softlab.attention.dense import attention_weights
from softlab.attention.linear import FEATURE_MAPS
from softlab.attention.linear import feature_map_spec
from softlab.attention.linear import linear_attention
from softlab.attention.linear import sliding_window_linear_attention
from softlab.attention.layers import NORMALIZER_FIELDS
from softlab.attention.layers import MultiHeadAttention
from softlab.attention.layers import make_attention_fn
from softlab.attention.soft import soft_attention

# The normalizers with a chunked form when softlab.attention was imported
# (chunked_normalizers() also lists those registered later).
CHUNKED_NORMALIZERS = chunked_normalizers()

__all__ = [
    "CHUNKED_NORMALIZERS",
    "FEATURE_MAPS",
    "MultiHeadAttention",
    "NORMALIZER_FIELDS",
    "attention_weights",
    "chunked_normalizers",
    "diagnostics",
    "dot_product_attention",
    "feature_map_spec",
    "linear_attention",
    "make_attention_fn",
    "sliding_window_linear_attention",
    "soft",
    "soft_attention",
]
