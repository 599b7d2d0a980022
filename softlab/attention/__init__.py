"""Attention with a pluggable normalizer: dense, chunked, Flax layers, diagnostics.

dot_product_attention(query, key, value, ..., normalizer=...) follows
jax.nn.dot_product_attention's layout; implementation="dense" is the reference
built on softlab.normalizers, "chunked" is memory-linear in sequence length.
"""

from softlab.attention import diagnostics
from softlab.attention.chunked import SUPPORTED as CHUNKED_NORMALIZERS
from softlab.attention.core import dot_product_attention
from softlab.attention.dense import attention_weights
from softlab.attention.layers import MultiHeadAttention
from softlab.attention.layers import make_attention_fn

__all__ = [
    "CHUNKED_NORMALIZERS",
    "MultiHeadAttention",
    "attention_weights",
    "diagnostics",
    "dot_product_attention",
    "make_attention_fn",
]
