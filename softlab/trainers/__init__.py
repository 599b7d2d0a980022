"""Experiment trainers on one generic loop; `softlab train` runs them by name."""

from softlab.trainers import classification as _classification  # noqa: F401 (registers)
from softlab.trainers import contrastive as _contrastive  # noqa: F401
from softlab.trainers import lm as _lm  # noqa: F401
from softlab.trainers import linearize as _linearize  # noqa: F401
from softlab.trainers import metric as _metric  # noqa: F401
from softlab.experiment import ConfigError, Experiment  # noqa: F401
from softlab.trainers.base import REGISTRY  # noqa: F401

get = REGISTRY.get
names = REGISTRY.names
