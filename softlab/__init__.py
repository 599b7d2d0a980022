"""softlab: the softmax and its alternatives in JAX/Flax.

Layers (lower never import higher): normalizers <- attention <- models;
normalizers <- losses; trainers and the study runner on top. See WORKSPACE.md.
"""

__version__ = "0.1.0"
