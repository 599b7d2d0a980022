"""Where metrics go: metrics.jsonl, TensorBoard (when installed), and the terminal."""

import json
import os
import sys
from collections.abc import Mapping

# Keys shown on the progress line, in this order, when present.
HEADLINE = ("train/loss", "train/accuracy", "test/loss", "test/accuracy")


class MetricsWriter:
  """Appends one JSON object per logged step to workdir/metrics.jsonl.

  On resume from step k, lines past k (written after the last checkpoint)
  are dropped first, so a resumed run's file equals an uninterrupted run's;
  from step 0 (nothing restored) every line goes, as step 0's evaluation is
  written again. TensorBoard events are written too when `tensorboardX` is
  importable.
  """

  def __init__(self, workdir: str, *, resume_from: int, enabled: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.board = None
    if not enabled:
      return
    if os.path.exists(self.path):
      kept = [r for r in read_records(self.path) if r["step"] <= resume_from] if resume_from else []
      with open(self.path, "w") as f:
        f.writelines(record_line(r) for r in kept)
    try:
      from tensorboardX import SummaryWriter
    except ImportError:
      return
    self.board = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=resume_from + 1)

  def write(self, step: int, metrics: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    with open(self.path, "a") as f:
      f.write(record_line({"step": step, **metrics}))
    if self.board is not None:
      for key, value in metrics.items():
        self.board.add_scalar(key, value, step)

  def close(self) -> None:
    if self.board is not None:
      self.board.close()


def record_line(record: Mapping[str, float]) -> str:
  """One metrics.jsonl line: the record as JSON with sorted keys, and a newline."""
  return json.dumps(record, sort_keys=True) + "\n"


def read_records(path: str) -> list[dict]:
  """The records of a metrics.jsonl file ([] if there is none).

  A last line without its newline was cut off mid-write (the process was
  killed) and is skipped.
  """
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.endswith("\n")]


def format_metrics(metrics: Mapping[str, float], keys=HEADLINE) -> str:
  """'train/loss=0.123 test/accuracy=0.98' for the keys present."""
  return " ".join(f"{k}={metrics[k]:.4g}" for k in keys if k in metrics)


class Progress:
  """A tqdm bar on a terminal; plain log lines (one per logged step) otherwise."""

  def __init__(self, *, total: int, start: int, enabled: bool = True):
    self.enabled, self.total, self.bar = enabled, total, None
    if enabled and sys.stderr.isatty():
      from tqdm import tqdm

      self.bar = tqdm(total=total, initial=start, dynamic_ncols=True, unit="step")

  def update(self, step: int, metrics: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    if self.bar is not None:
      self.bar.update(step - self.bar.n)
      self.bar.set_postfix_str(format_metrics(metrics))
    else:
      print(f"step {step}/{self.total} {format_metrics(metrics)}", flush=True)

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()
