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
(when torch is installed: `pip install -e ".[bench]"`) runs the MLP with
torch.optim.AdamW. Blocks alternate A B C A B C ...; prints steps/s per block,
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

  params, opt_state = init()
  ticks = []
  for t in range(steps):
    params, opt_state, loss = step(params, opt_state, next_batch(t))
    if (t + 1) % every == 0:
      float(loss)
      ticks.append(time.perf_counter())
  return every * (len(ticks) - 1) / (ticks[-1] - ticks[0])


def torch_speed(config) -> float:
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
  ticks = []
  for t in range(steps):
    optimizer.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(net(x), y)
    loss.backward()
    optimizer.step()
    if (t + 1) % every == 0:
      loss.item()
      ticks.append(time.perf_counter())
  return every * (len(ticks) - 1) / (ticks[-1] - ticks[0])


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
    if torch is not None and config.trainer == "classification":
      sides["torch"] = torch_speed
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
