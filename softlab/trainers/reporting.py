"""Where metrics go: metrics.jsonl, TensorBoard (when installed), and the terminal."""

import json
import os
import sys
from collections.abc import Mapping

from softlab.files import FileError, append_line

# Keys shown on the progress line, in this order, when present.
HEADLINE = ("train/loss", "train/accuracy", "test/loss", "test/accuracy")


class MetricsWriter:
  """Appends one JSON object per logged step to workdir/metrics.jsonl.

  On resume from step k the file is cut (one truncate, never a rewrite) just
  before its first line past k (written after the last checkpoint, and written
  again by the resumed run), so a resumed run's file equals an uninterrupted
  run's and a crash at any point leaves every record up to k in place. From
  step 0 (nothing restored) every line goes, as step 0's evaluation is written
  again. TensorBoard events are written too when `tensorboardX` is importable.
  """

  def __init__(self, workdir: str, *, resume_from: int, enabled: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.board = None
    if not enabled:
      return
    if os.path.exists(self.path):
      os.truncate(self.path, end_of_records(self.path, resume_from) if resume_from else 0)
    try:
      from tensorboardX import SummaryWriter
    except ImportError:
      return
    self.board = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=resume_from + 1)

  def write(self, step: int, metrics: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    append_line(self.path, record_line({"step": step, **metrics}))
    if self.board is not None:
      for key, value in metrics.items():
        self.board.add_scalar(key, value, step)

  def close(self) -> None:
    if self.board is not None:
      self.board.close()


def record_line(record: Mapping[str, float]) -> str:
  """One metrics.jsonl line: the record as JSON with sorted keys, and a newline."""
  return json.dumps(record, sort_keys=True) + "\n"


def _numbered_records(path: str):
  """(byte offset after the line, record) for each complete line of a metrics.jsonl.

  A last line without its newline was cut off mid-write (the process was
  killed) and is skipped; any other line that is not a JSON record is a
  FileError naming the file and line.
  """
  offset = 0
  with open(path, "rb") as f:
    for number, line in enumerate(f, start=1):
      if not line.endswith(b"\n"):
        return
      offset += len(line)
      try:
        record = json.loads(line)
        record["step"]
      except (ValueError, TypeError, KeyError) as error:
        raise FileError(f"{path} line {number} is not a metrics record ({error}); it was"
                        " damaged outside softlab: delete or repair that line") from None
      yield offset, record


def read_records(path: str) -> list[dict]:
  """The records of a metrics.jsonl file ([] if there is none); see `_numbered_records`."""
  if not os.path.exists(path):
    return []
  return [record for _, record in _numbered_records(path)]


def end_of_records(path: str, step: int) -> int:
  """The byte offset just past the last complete record with a step <= `step`, in order."""
  end = 0
  for offset, record in _numbered_records(path):
    if record["step"] > step:
      break
    end = offset
  return end


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
