"""LoRA adapters as a pure function of a parameter tree: W' = W + (alpha / r) A B.

The model is untouched: `merge_lora(params, adapters, ...)` returns the
parameters a plain `model.apply` uses, so any model gains adapters on any
kernel by its module name, and gradients reach A and B through the merge.
"""

import math

import jax
import jax.numpy as jnp

# Module name -> how many leading dims of its kernel are inputs (the rest are
# outputs): the attention layer's DenseGeneral projections.
ATTENTION_PROJECTIONS = {"query": 1, "key": 1, "value": 1, "out": 2}


def _targets(params, projections):
  """(path, kernel, input dims) of every `kernel` under a module named in `projections`."""
  found = []
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    keys = [getattr(key, "key", None) for key in path]
    if len(keys) >= 2 and keys[-1] == "kernel" and keys[-2] in projections:
      found.append(("/".join(keys), leaf, projections[keys[-2]]))
  return found


def init_lora(rng: jax.Array, params, *, rank: int,
              projections=ATTENTION_PROJECTIONS) -> dict[str, dict[str, jax.Array]]:
  """Adapters {kernel path: {"a": [in, r], "b": [r, out]}} for the projections' kernels.

  A ~ N(0, 1/in) and B = 0, so the adapted model starts exactly as the base
  (the update A B is 0). The kernel [in..., out...] is viewed as an
  [prod(in), prod(out)] matrix.

  Args:
    rng: key for A.
    params: the model's parameters.
    rank: r >= 1.
    projections: module name -> the number of input dims of its kernel.

  Returns:
    The adapters, keyed by the kernel's path ("block0/attention/query/kernel").

  References:
    Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models",
    arXiv:2106.09685, Sec. 4.1 (Eq. 3: h = W0 x + B A x, A Gaussian, B zero,
    the update scaled by alpha / r). LoLCATs' released code
    (github.com/HazyResearch/lolcats, src/model/peft.py) uses Hugging Face
    PEFT's LoraConfig (r = 8, lora_alpha = 16, dropout 0, q/k/v/o_proj),
    whose A starts Kaiming-uniform rather than Gaussian; B = 0 there too.
  """
  if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
    raise ValueError(f"rank must be a positive integer, got {rank!r}")
  targets = _targets(params, projections)
  if not targets:
    raise ValueError(f"params have no kernel under a module named {', '.join(projections)}")
  adapters = {}
  for (path, kernel, inputs), key in zip(targets, jax.random.split(rng, len(targets))):
    n_in, n_out = math.prod(kernel.shape[:inputs]), math.prod(kernel.shape[inputs:])
    adapters[path] = {
        "a": jax.random.normal(key, (n_in, rank), kernel.dtype) / math.sqrt(n_in),
        "b": jnp.zeros((rank, n_out), kernel.dtype),
    }
  return adapters


def merge_lora(params, adapters, *, alpha: float):
  """`params` with each adapted kernel W replaced by W + (alpha / r) A B (reshaped to W).

  Empty `adapters` give `params` back unchanged.
  """
  if not adapters:
    return params

  def merge(path, leaf):
    adapter = adapters.get("/".join(getattr(key, "key", "") for key in path))
    if adapter is None:
      return leaf
    rank = adapter["a"].shape[-1]
    update = (alpha / rank) * (adapter["a"] @ adapter["b"])
    return leaf + update.reshape(leaf.shape).astype(leaf.dtype)

  return jax.tree_util.tree_map_with_path(merge, params)


def count(tree) -> int:
  """The number of scalars in a parameter tree."""
  return sum(int(x.size) for x in jax.tree.leaves(tree))
