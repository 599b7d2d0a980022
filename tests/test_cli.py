"""The `softlab` command, end to end in a subprocess."""

import subprocess
import sys

from softlab import cli, data, losses, models, normalizers, trainers


def softlab(*args):
  return subprocess.run(
      [sys.executable, "-m", "softlab", *args], capture_output=True, text=True, timeout=120
  )


def test_list_prints_every_registered_name():
  result = softlab("list")
  assert result.returncode == 0, result.stderr
  listed = result.stdout.replace("\n", " ") + " "
  for kind, module in [("normalizers", normalizers), ("losses", losses), ("datasets", data),
                       ("models", models), ("trainers", trainers)]:
    assert f"{kind} ({len(module.names())}):" in result.stdout, kind
    for name in module.names():
      assert f" {name}," in listed or f" {name} " in listed, name


def test_list_shows_each_loss_kind():
  listed = " ".join(cli.list_registered().split())
  for name in losses.names():
    assert f"{name} ({losses.info(name).describe()})" in listed, name


def test_unknown_command_is_one_line_error():
  result = softlab("trian")
  assert result.returncode != 0
  assert "unknown command 'trian'; valid: list, train, ablate" in result.stderr
  assert "Traceback" not in result.stderr
