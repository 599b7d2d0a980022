"""Forward+backward time and temporary memory of softlab's attention.

For each length T (B=1, N=8, H=64, causal self-attention) it compiles
grad(sum(attention(q, k, v))) w.r.t. q, k, v for every chunked normalizer (and
LSSAR, p = 15), the dense softmax reference and
jax.nn.dot_product_attention(implementation="xla"), and prints the fastest
seconds per call and the compiled temporary memory
(memory_analysis().temp_size_in_bytes), each also as a ratio against XLA at the
same T. Configurations whose temporary memory exceeds --max_run_gib are
compiled (for their memory) but not run: their time prints as n/a.

  python benchmarks/attention.py
  python benchmarks/attention.py --lengths 2048 --normalizers softmax,sigmoid
"""

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from softlab.attention import chunked
from softlab.attention import dot_product_attention

BATCH, HEADS, HEAD_DIM = 1, 8, 64
MIB = 2**20
# Benchmarked variants beyond the chunked normalizers' names.
VARIANTS = {"lssar": ("softplus", {"sharpen_power": 15.0})}


def _xla(q, k, v):
  return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="xla")


def _softlab(q, k, v, *, normalizer, normalizer_kwargs, implementation, block_size):
  return dot_product_attention(
      q,
      k,
      v,
      normalizer=normalizer,
      normalizer_kwargs=normalizer_kwargs,
      is_causal=True,
      implementation=implementation,
      block_size=block_size,
  )


def compiled_grad(attention, args):
  grad = jax.grad(lambda q, k, v: jnp.sum(attention(q, k, v)), argnums=(0, 1, 2))
  return jax.jit(grad).lower(*args).compile()


def fastest_seconds(compiled, args, min_total: float, max_calls: int) -> float:
  """Fastest of at least one call and about min_total s of calls.

  The minimum, not the median: on a shared machine other processes only ever
  add time.
  """
  times = []
  while not times or (sum(times) < min_total and len(times) < max_calls):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - start)
  return min(times)


def _contenders(names, block_size):
  yield "xla", _xla
  yield "dense softmax", functools.partial(
      _softlab, normalizer="softmax", normalizer_kwargs=None,
      implementation="dense", block_size=None,
  )
  for name in names:
    normalizer, kwargs = VARIANTS.get(name, (name, None))
    yield f"chunked {name}", functools.partial(
        _softlab, normalizer=normalizer, normalizer_kwargs=kwargs,
        implementation="chunked", block_size=block_size,
    )


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
      "--lengths", default="512,1024,2048,4096,8192,16384",
      help="comma-separated sequence lengths T (= S)",
  )
  parser.add_argument(
      "--normalizers", default=",".join(chunked.supported() + tuple(VARIANTS)),
      help="comma-separated chunked normalizers (lssar: softplus, p = 15)",
  )
  parser.add_argument("--block_size", type=int, default=None)
  parser.add_argument(
      "--max_run_gib", type=float, default=4.0,
      help="run (not only compile) configurations below this temporary memory",
  )
  parser.add_argument("--min_seconds", type=float, default=2.0,
                      help="time each configuration for about this long")
  parser.add_argument("--max_calls", type=int, default=5)
  flags = parser.parse_args()

  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind};"
        f" B={BATCH} N={HEADS} H={HEAD_DIM}, causal, fwd+bwd of sum(out)")
  header = f"{'T':>6} {'attention':<18} {'time s':>8} {'x xla':>7}" \
           f" {'temp MiB':>10} {'x xla':>7}"
  print(header)
  print("-" * len(header))
  rng = np.random.default_rng(0)
  for length in (int(x) for x in flags.lengths.split(",")):
    shape = (BATCH, length, HEADS, HEAD_DIM)
    args = tuple(
        jnp.asarray(rng.standard_normal(shape), jnp.float32) for _ in range(3)
    )
    base_time = base_memory = None
    for label, attention in _contenders(flags.normalizers.split(","),
                                        flags.block_size):
      compiled = compiled_grad(attention, args)
      memory = compiled.memory_analysis().temp_size_in_bytes
      seconds = None
      if memory <= flags.max_run_gib * 2**30:
        seconds = fastest_seconds(compiled, args, flags.min_seconds, flags.max_calls)
      if label == "xla":
        base_time, base_memory = seconds, memory
      time_text = "n/a" if seconds is None else f"{seconds:.3f}"
      time_ratio = "n/a" if seconds is None or base_time is None else (
          f"{seconds / base_time:.2f}")
      print(f"{length:>6} {label:<18} {time_text:>8} {time_ratio:>7}"
            f" {memory / MIB:>10.1f} {memory / base_memory:>7.3f}", flush=True)


if __name__ == "__main__":
  main()
