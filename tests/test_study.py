"""The ablation runner end to end on a tiny study written by the test."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from softlab import study

STUDY = textwrap.dedent('''
    """A tiny study: ⊥AdamW against plain AdamW on modular addition mod 11."""
    import os

    TITLE = "Tiny grokking check"
    ARXIV = "2501.04697"
    CLAIM = "⊥AdamW reaches a lower training loss than AdamW in a few steps."
    BASE_CONFIG = os.path.relpath(os.path.join({root!r}, "configs/grokking/softmax.py"),
                                  os.path.dirname(__file__))
    _SMALL = {{"data.p": 11, "train.steps": 6, "train.log_every": 2, "train.eval_every": 3,
              "train.checkpoint_every": 6}}
    VARIANTS = {{"adamw": dict(_SMALL), "perp_adamw": {{**_SMALL, "optimizer.perpgrad": True}}}}
    SEEDS = (0, 1)
    METRICS = {{"train/loss": "final training loss", "first_logged": "first logged step"}}
    PLOTS = ("train/loss",)
    PAPER = {{"perp_adamw": {{"train/loss": "lower"}}}}

    def analyze(history):
      return {{"first_logged": min(r["step"] for r in history if "train/loss" in r)}}

    def verdict(results):
      a = results["variants"]["adamw"]["mean"]["train/loss"]
      b = results["variants"]["perp_adamw"]["mean"]["train/loss"]
      status = "supported" if b < a else "not supported"
      return status, f"⊥AdamW {{b:.3f}} vs AdamW {{a:.3f}}"
    ''')


@pytest.fixture
def tiny_study(tmp_path):
  path = tmp_path / "tiny.py"
  path.write_text(STUDY.format(root=os.getcwd()))
  return str(path)


def test_study_runs_aggregates_skips_and_forces(tiny_study, tmp_path):
  results = study.run_study(tiny_study, workers=2)
  out = tmp_path / "tiny"
  assert {"results.json", "RESULTS.md", "train_loss.png"} <= set(os.listdir(out))
  assert sorted(os.listdir(out / "runs")) == ["adamw", "perp_adamw"]
  saved = json.loads((out / "results.json").read_text())
  assert saved["verdict"] == results["verdict"]
  assert results["verdict"]["status"] in study.STATUSES
  for variant in ("adamw", "perp_adamw"):
    numbers = saved["variants"][variant]
    assert set(numbers["seeds"]) == {"0", "1"}
    seeds = [numbers["seeds"][s]["train/loss"] for s in ("0", "1")]
    assert numbers["mean"]["train/loss"] == pytest.approx(sum(seeds) / 2)
    assert numbers["seeds"]["0"]["first_logged"] == 2
    assert numbers["curves"]["train/loss"]["step"] == [2, 4, 6]
  markdown = (out / "RESULTS.md").read_text()
  for text in ("Tiny grokking check", "**Claim tested:**", "softlab ablate", "## Verdict",
               "| perp_adamw |", "train/loss (paper)", "lower", "![train/loss](train_loss.png)"):
    assert text in markdown, text

  # Again from the command line: every run exists, so it only aggregates.
  summary = out / "runs" / "adamw" / "seed0" / "summary.json"
  stamp = os.path.getmtime(summary)
  result = subprocess.run([sys.executable, "-m", "softlab", "ablate", tiny_study],
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  assert "4 runs (4 already done)" in result.stdout and "verdict: " in result.stdout
  assert os.path.getmtime(summary) == stamp

  study.run_study(tiny_study, force=True, workers=2)
  assert os.path.getmtime(summary) > stamp


def test_ablate_list_and_errors():
  listed = subprocess.run([sys.executable, "-m", "softlab", "ablate", "--list"],
                          capture_output=True, text=True, timeout=120)
  assert "experiments/grokking.py: Grokking at the Edge of Numerical Stability" in listed.stdout
  missing = subprocess.run([sys.executable, "-m", "softlab", "ablate", "experiments/nope.py"],
                           capture_output=True, text=True, timeout=120)
  assert missing.returncode == 2 and "study file not found" in missing.stderr
