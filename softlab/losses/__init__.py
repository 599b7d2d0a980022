"""Losses: per-example values, keyword-only hyperparameters, registry by name.

`softlab.losses.get(name)` returns any registered loss; `names()` lists them;
`info(name)` says its kind (calling convention) and, for a stateful loss, its
(init, apply) factory (see `softlab.losses._registry`).
"""

from softlab.losses._registry import (  # noqa: F401
    CLASSIFICATION_INPUTS, KINDS, MARGIN_INPUTS, REGISTRY, LossInfo, StatefulLoss)
from softlab.losses.classification import *  # noqa: F401,F403
from softlab.losses.contrastive import *  # noqa: F401,F403
from softlab.losses.ldr import *  # noqa: F401,F403
from softlab.losses.ldr import aldr_kl_stateful  # noqa: F401
from softlab.losses.margin import *  # noqa: F401,F403
from softlab.losses.vocab import *  # noqa: F401,F403

get = REGISTRY.get
info = REGISTRY.info
names = REGISTRY.names
