"""The softlab trainer against a hand-written jitted JAX loop (and PyTorch eager).

  python benchmarks/trainer.py [--rounds=3]

Same model, optimizer and data in each: the grokking MLP (configs/grokking/
softmax.py: modular addition mod 113, full batch of 5,107, AdamW) and the
character LM (configs/lm/softmax.py: 2-layer transformer, batch 32 x 64). The
softlab side is `softlab.trainers.loop.train` itself (fresh workdir, eval and
checkpoint only at the end, logging every `train.log_every` steps); its speed
is its own `train/steps_per_second` over the log windows after the first
(compilation). The hand-written loop calls the same softlab model and loss
function and an optax optimizer with the config's settings, keeps the data on
the device, fetches the loss every log_every steps, and is timed over the same
windows. PyTorch eager
(when torch is installed: `pip install -e ".[bench]"`) runs the same MLP and
the same decoder LM with torch.optim.AdamW. Blocks alternate A B C A B C ...; prints steps/s per block,
medians and the ratios (issue 12 targets: softlab >= 0.95x hand-written JAX on
both, >= 1.0x PyTorch on the MLP).
"""

import argparse
import os
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import optax

from softlab import data, losses, models
from softlab.config import load_config, override
from softlab.trainers import loop
from softlab.trainers.reporting import read_records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = {"grokking MLP (full batch 5,107)": ("configs/grokking/softmax.py", 200),
         "char LM (32 x 64, 2 layers)": ("configs/lm/softmax.py", 100)}


def case_config(path: str, steps: int):
  config = load_config(os.path.join(ROOT, path))
  return override(config, {"train.steps": steps, "train.eval_every": steps,
                           "train.checkpoint_every": steps})


def steps_per_second(step, fetch, steps: int, every: int) -> float:
  """Steps/s of `step(t)` over the log windows after the first; `fetch` waits for a loss."""
  ticks = []
  for t in range(steps):
    loss = step(t)
    if (t + 1) % every == 0:
      fetch(loss)
      ticks.append(time.perf_counter())
  return every * (len(ticks) - 1) / (ticks[-1] - ticks[0])


def softlab_speed(config) -> float:
  """Steps/s of loop.train over the log windows after the first."""
  with tempfile.TemporaryDirectory() as workdir:
    loop.train(config, workdir, show_progress=False)
    records = [r for r in read_records(os.path.join(workdir, "metrics.jsonl"))
               if "train/steps_per_second" in r]
  every = config.train.log_every
  windows = records[1:]
  seconds = sum(every / r["train/steps_per_second"] for r in windows)
  return every * len(windows) / seconds


def jax_speed(config) -> float:
  """A hand-written jitted loop: same model, optax optimizer and data; loss fetched per log."""
  steps, every = config.train.steps, config.train.log_every
  dataset = data.build(config.data, batch_size=config.train.get("batch_size"),
                       eval_batch_size=32, seed=config.seed)
  model = models.build(config.model, dataset.info, dtype=jnp.float32)
  o = config.optimizer
  if config.trainer == "lm":
    lr = optax.warmup_cosine_decay_schedule(0.0, o.lr, o.warmup_steps, o.total_steps)
    tx = optax.chain(optax.clip_by_global_norm(o.grad_clip_norm),
                     optax.adamw(lr, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay))
    def loss_fn(params, batch):
      logits = model.apply(params, batch["tokens"][:, :-1])
      return losses.softmax_cross_entropy(logits, batch["tokens"][:, 1:]).mean()
    example = dataset.train_batch(0)["tokens"][:1, :-1]
    next_batch = lambda step: jax.device_put(dataset.train_batch(step))
  else:
    tx = optax.adamw(o.lr, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay)
    def loss_fn(params, batch):
      logits = model.apply(params, batch["inputs"])
      return losses.softmax_cross_entropy(logits, batch["labels"]).mean()
    fixed = jax.device_put({k: dataset.train_arrays[k] for k in ("inputs", "labels")})
    example = dataset.train_arrays["inputs"][:1]
    next_batch = lambda step: fixed

  @jax.jit
  def init():
    params = model.init(jax.random.key(0), example)
    return params, tx.init(params)

  @jax.jit
  def step(params, opt_state, batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  state = init()

  def run_step(t):
    nonlocal state
    *state, loss = step(*state, next_batch(t))
    return loss

  return steps_per_second(run_step, float, steps, every)


def torch_mlp_speed(config) -> float:
  """PyTorch eager: the same MLP (no bias, ReLU), AdamW and full batch; loss fetched per log."""
  import torch

  steps, every = config.train.steps, config.train.log_every
  dataset = data.build(config.data, batch_size=None, eval_batch_size=32, seed=config.seed)
  x = torch.as_tensor(dataset.train_arrays["inputs"], dtype=torch.float32)
  y = torch.as_tensor(dataset.train_arrays["labels"], dtype=torch.long)
  widths = [x.shape[1], *config.model.hidden]
  layers = []
  for a, b in zip(widths[:-1], widths[1:]):
    layers += [torch.nn.Linear(a, b, bias=False), torch.nn.ReLU()]
  net = torch.nn.Sequential(*layers, torch.nn.Linear(widths[-1], dataset.info["num_classes"],
                                                     bias=False))
  o = config.optimizer
  optimizer = torch.optim.AdamW(net.parameters(), lr=o.lr, betas=(o.b1, o.b2), eps=o.eps,
                                weight_decay=o.weight_decay)

  def run_step(t):
    optimizer.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(net(x), y)
    loss.backward()
    optimizer.step()
    return loss

  return steps_per_second(run_step, torch.Tensor.item, steps, every)


def torch_lm_speed(config) -> float:
  """PyTorch eager: the same decoder (pre-norm blocks, RoPE, causal softmax attention with
  bias-free projections, GELU MLP, tied embeddings), AdamW with warmup-cosine and gradient
  clipping, the same batches; loss fetched per log."""
  import math

  import torch

  steps, every = config.train.steps, config.train.log_every
  m, o = config.model, config.optimizer
  dataset = data.build(config.data, batch_size=config.train.batch_size, eval_batch_size=32,
                       seed=config.seed)
  vocab, width, heads = dataset.info["vocab_size"], m.d_model, m.num_heads
  head_dim = width // heads

  def rope(x):  # [B, N, T, D], pairs (i, i + D/2) rotated as softlab.models.transformer.rope
    half = head_dim // 2
    angles = torch.arange(x.shape[2])[:, None] * 10000.0 ** (-torch.arange(half) / half)
    cos, sin = angles.cos(), angles.sin()
    first, second = x[..., :half], x[..., half:]
    return torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1)

  class Block(torch.nn.Module):
    def __init__(self):
      super().__init__()
      self.norm1, self.norm2 = torch.nn.LayerNorm(width), torch.nn.LayerNorm(width)
      self.qkv = torch.nn.Linear(width, 3 * width, bias=False)
      self.out = torch.nn.Linear(width, width, bias=False)
      self.up = torch.nn.Linear(width, m.mlp_ratio * width)
      self.down = torch.nn.Linear(m.mlp_ratio * width, width)

    def forward(self, x):
      b, t, _ = x.shape
      q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
      attended = torch.nn.functional.scaled_dot_product_attention(rope(q), rope(k), v,
                                                                  is_causal=True)
      x = x + self.out(attended.transpose(1, 2).reshape(b, t, width))
      hidden = torch.nn.functional.gelu(self.up(self.norm2(x)), approximate="tanh")
      return x + self.down(hidden)

  class DecoderLM(torch.nn.Module):
    def __init__(self):
      super().__init__()
      self.embed = torch.nn.Embedding(vocab, width)
      self.blocks = torch.nn.ModuleList(Block() for _ in range(m.num_layers))
      self.norm = torch.nn.LayerNorm(width)

    def forward(self, tokens):
      x = self.embed(tokens)
      for block in self.blocks:
        x = block(x)
      return self.norm(x) @ self.embed.weight.T

  net = DecoderLM()
  optimizer = torch.optim.AdamW(net.parameters(), lr=o.lr, betas=(o.b1, o.b2),
                                weight_decay=o.weight_decay)

  def learning_rate_factor(t):
    if t < o.warmup_steps:
      return t / o.warmup_steps
    return 0.5 * (1 + math.cos(math.pi * (t - o.warmup_steps) / (o.total_steps - o.warmup_steps)))

  schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate_factor)

  def run_step(t):
    tokens = torch.as_tensor(dataset.train_batch(t)["tokens"], dtype=torch.long)
    optimizer.zero_grad(set_to_none=True)
    logits = net(tokens[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), tokens[:, 1:].reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), o.grad_clip_norm)
    optimizer.step()
    schedule.step()
    return loss

  return steps_per_second(run_step, torch.Tensor.item, steps, every)


# PyTorch eager version of each benchmarked trainer's problem.
TORCH_SPEED = {"classification": torch_mlp_speed, "lm": torch_lm_speed}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=3)
  args = parser.parse_args()
  try:
    import torch
    torch.set_num_threads(os.cpu_count() or 1)
  except ImportError:
    torch = None
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPUs; "
        f"torch {torch.__version__ if torch else 'not installed'}")
  print("| problem | softlab steps/s | hand-written JAX | PyTorch eager | softlab / JAX |"
        " softlab / PyTorch |")
  print("|---|---|---|---|---|---|")
  for name, (path, steps) in CASES.items():
    config = case_config(path, steps)
    sides = {"softlab": softlab_speed, "jax": jax_speed}
    if torch is not None:
      sides["torch"] = TORCH_SPEED[config.trainer]
    speeds = {side: [] for side in sides}
    for _ in range(args.rounds):
      for side, measure in sides.items():
        speeds[side].append(measure(config))
    median = {side: statistics.median(values) for side, values in speeds.items()}
    torch_cells = (f"{median['torch']:.1f}", f"{median['softlab'] / median['torch']:.2f}x") \
        if "torch" in median else ("n/a", "n/a")
    print(f"| {name} | {median['softlab']:.1f} | {median['jax']:.1f} | {torch_cells[0]} | "
          f"{median['softlab'] / median['jax']:.2f}x | {torch_cells[1]} |", flush=True)
    print("  per block: " + "; ".join(
        f"{side} " + ", ".join(f"{v:.1f}" for v in values) for side, values in speeds.items()),
          flush=True)


if __name__ == "__main__":
  main()
