"""Losses: per-example values, keyword-only hyperparameters, registry by name.

`softlab.losses.get(name)` returns any registered loss; `names()` lists them.
"""

from softlab.losses._registry import REGISTRY
from softlab.losses.classification import *  # noqa: F401,F403
from softlab.losses.contrastive import *  # noqa: F401,F403
from softlab.losses.ldr import *  # noqa: F401,F403
from softlab.losses.margin import *  # noqa: F401,F403
from softlab.losses.vocab import *  # noqa: F401,F403

get = REGISTRY.get
names = REGISTRY.names
