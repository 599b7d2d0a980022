"""Linear attention (chunked) against chunked softmax attention: time and memory vs T.

For each length T (B=1, N=4, H=32, causal self-attention) it compiles
grad(sum(attention(q, k, v))) w.r.t. q, k, v for softlab's chunked softmax
(dot_product_attention, implementation="chunked") and for linear_attention
with elu+1 features, implementation="chunked" (and "parallel", the quadratic
form, for reference, up to --parallel_max), and prints the fastest seconds per call and the compiled
temporary memory (memory_analysis().temp_size_in_bytes), each with its ratio
to chunked softmax at the same T.

  python benchmarks/linear_attention.py
  python benchmarks/linear_attention.py --lengths 1024,8192 --chunk 128
"""

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np

from attention import compiled_grad, fastest_seconds  # benchmarks/attention.py, this folder
from softlab.attention import dot_product_attention, linear_attention

BATCH, HEADS, HEAD_DIM = 1, 4, 32
MIB = 2**20


def contenders(chunk: int, length: int, parallel_max: int):
  yield "chunked softmax", functools.partial(
      dot_product_attention, is_causal=True, implementation="chunked", block_size=chunk)
  for implementation in ("chunked", "parallel") if length <= parallel_max else ("chunked",):
    yield f"linear elu+1 {implementation}", functools.partial(
        linear_attention, feature_map="elu+1", is_causal=True, implementation=implementation,
        chunk_size=chunk)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--lengths", default="256,1024,4096")
  parser.add_argument("--chunk", type=int, default=64, help="block / chunk size of both")
  parser.add_argument("--min_total", type=float, default=0.5, help="seconds of calls per cell")
  parser.add_argument("--max_calls", type=int, default=20)
  parser.add_argument("--parallel_max", type=int, default=2048,
                      help="the quadratic linear form only up to this T")
  args = parser.parse_args()
  print(f"{jax.devices()[0].platform}, B={BATCH} N={HEADS} H={HEAD_DIM}, causal, fwd+bwd,"
        f" chunk {args.chunk}; ratio = / chunked softmax at the same T")
  print(f"{'T':>6}  {'attention':<22} {'ms':>9} {'ratio':>6} {'temp MiB':>9} {'ratio':>6}")
  for t in (int(x) for x in args.lengths.split(",")):
    rng = np.random.default_rng(0)
    inputs = [jnp.asarray(rng.normal(size=(BATCH, t, HEADS, HEAD_DIM)), jnp.float32)
              for _ in range(3)]
    base = None
    for name, attention in contenders(args.chunk, t, args.parallel_max):
      compiled = compiled_grad(attention, inputs)
      memory = compiled.memory_analysis().temp_size_in_bytes / MIB
      seconds = fastest_seconds(compiled, inputs, args.min_total, args.max_calls)
      base = base or (seconds, memory)
      print(f"{t:>6}  {name:<22} {1e3 * seconds:>9.2f} {seconds / base[0]:>6.2f}"
            f" {memory:>9.1f} {memory / base[1]:>6.2f}")


if __name__ == "__main__":
  main()
