"""Datasets that need no network, addressed by name from `config.data.name`.

`build(config.data, batch_size=..., eval_batch_size=..., seed=...)` returns a
`Dataset`: `train_batch(step)` is a pure function of (seed, step), so a resumed
run sees exactly the batches an uninterrupted one would.
"""

from softlab.data import corpus as _corpus  # noqa: F401  (registers datasets)
from softlab.data import digits as _digits  # noqa: F401
from softlab.data import identities as _identities  # noqa: F401
from softlab.data import npz as _npz  # noqa: F401
from softlab.data import synthetic as _synthetic  # noqa: F401
from softlab.data.base import REGISTRY, Dataset, build  # noqa: F401

get = REGISTRY.get
names = REGISTRY.names
