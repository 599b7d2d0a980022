"""Small Flax models whose attention, head and sizes come from `config.model`.

`build(config.model, info, dtype=...)` returns a linen Module, or with
`config.model.api = "nnx"` its NNX version (`softlab.models.nnx`, for the
models in `NNX_VERSIONS`); `info` is the dataset's description (num_classes,
input_shape, vocab_size, ...).
"""

from softlab.models import embedding as _embedding  # noqa: F401  (registers models)
from softlab.models import mlp as _mlp  # noqa: F401
from softlab.models import transformer as _transformer  # noqa: F401
from softlab.models import two_tower as _two_tower  # noqa: F401
from softlab.models import nnx  # noqa: F401  (registers the NNX versions)
from softlab.models.base import NNX_VERSIONS, REGISTRY, build  # noqa: F401
from softlab.models.quantize import quantize_weights  # noqa: F401

get = REGISTRY.get
names = REGISTRY.names
