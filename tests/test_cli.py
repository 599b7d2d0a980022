"""The `softlab` command, end to end in a subprocess."""

import subprocess
import sys

from softlab import normalizers


def softlab(*args):
  return subprocess.run(
      [sys.executable, "-m", "softlab", *args], capture_output=True, text=True, timeout=120
  )


def test_list_prints_every_registered_normalizer():
  result = softlab("list")
  assert result.returncode == 0, result.stderr
  assert f"normalizers ({len(normalizers.names())}):" in result.stdout
  listed = result.stdout.replace("\n", " ")
  for name in normalizers.names():
    assert f" {name}," in listed or f" {name} " in listed + " ", name


def test_unknown_command_is_one_line_error():
  result = softlab("trian")
  assert result.returncode != 0
  assert "unknown command 'trian'; valid: list" in result.stderr
  assert "Traceback" not in result.stderr
