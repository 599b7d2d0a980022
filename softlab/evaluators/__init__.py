"""Evaluators named in `config.evals`; each module registers its evaluators by name."""

from softlab.evaluators import attention as _attention  # noqa: F401 (registers)
from softlab.evaluators import classification as _classification  # noqa: F401
from softlab.evaluators import contrastive as _contrastive  # noqa: F401
from softlab.evaluators import lm as _lm  # noqa: F401
from softlab.evaluators import metric as _metric  # noqa: F401
from softlab.evaluators import quantized as _quantized  # noqa: F401
from softlab.evaluators.common import REGISTRY, Evaluator, build, weighted_sums  # noqa: F401

get = REGISTRY.get
names = REGISTRY.names
