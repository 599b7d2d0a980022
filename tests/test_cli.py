"""The `softlab` command: its entry point in a subprocess, the rest through `cli.main`."""

import json
import subprocess
import sys

import numpy as np

from softlab import cli, data, losses, models, normalizers, trainers


def softlab(*args):
  return subprocess.run(
      [sys.executable, "-m", "softlab", *args], capture_output=True, text=True, timeout=120
  )


def test_list_prints_every_registered_name(softlab_cli):
  code, out, err = softlab_cli("list")
  assert code == 0, err
  listed = out.replace("\n", " ") + " "
  for kind, module in [("normalizers", normalizers), ("losses", losses), ("datasets", data),
                       ("models", models), ("trainers", trainers)]:
    assert f"{kind} ({len(module.names())}):" in out, kind
    for name in module.names():
      assert f" {name}," in listed or f" {name} " in listed, name


def test_list_shows_each_loss_kind():
  listed = " ".join(cli.list_registered().split())
  for name in losses.names():
    assert f"{name} ({losses.info(name).describe()})" in listed, name


def test_unknown_command_is_one_line_error(softlab_cli):
  code, _, err = softlab_cli("trian")
  assert code == 2
  assert err == "softlab: unknown command 'trian'; valid: list, train, ablate\n"


def test_help_lists_each_subcommand_on_one_line():
  result = softlab("--help")
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  for command in ("list", "train", "ablate"):
    assert sum(line.split()[:1] == [command] for line in lines) == 1, result.stdout


def test_switching_a_section_to_another_name_takes_that_names_fields(tmp_path, softlab_cli):
  rng = np.random.default_rng(0)
  path = tmp_path / "data.npz"
  np.savez(path, x_train=rng.normal(size=(32, 4)).astype(np.float32),
           y_train=rng.integers(0, 3, 32), x_test=rng.normal(size=(8, 4)).astype(np.float32),
           y_test=rng.integers(0, 3, 8))
  code, _, err = softlab_cli("train", "configs/grokking/softmax.py", "--workdir",
                             str(tmp_path / "run"), "--config.data.name=npz",
                             f"--config.data.path={path}", "--config.train.steps=2",
                             "--config.train.log_every=1")
  assert code == 0, err
  config = json.loads((tmp_path / "run" / "config.json").read_text())
  assert config["data"] == {"name": "npz", "path": str(path)}
  assert "test/accuracy" in json.loads((tmp_path / "run" / "summary.json").read_text())


def test_a_misspelt_field_is_one_clean_line(tmp_path, softlab_cli):
  code, _, err = softlab_cli("train", "configs/grokking/softmax.py", "--workdir", str(tmp_path),
                             "--config.train.log_evry=5")
  assert code == 2
  assert err == ("softlab: config.train.log_evry names a field the config does not "
                           "have; valid: steps, batch_size, eval_batch_size, log_every, eval_every,"
                           " checkpoint_every, dtype, num_devices, x64, early_stop, init_from,"
                           " init_fresh, trainable\n")


def test_an_evaluator_is_added_from_the_command_line(tmp_path, softlab_cli):
  code, _, err = softlab_cli("train", "configs/lm/softmax.py", "--workdir", str(tmp_path),
                             "--config.evals.q.name=quantized", "--config.evals.q.bits=(8, 4)",
                             "--config.evals.q.splits=('val_64',)", "--config.train.steps=1",
                             "--config.model.d_model=32", "--config.model.num_layers=1",
                             "--config.data.eval_windows=2", "--config.train.eval_batch_size=2",
                             "--config.data.eval_lengths=(64, 128)")
  assert code == 0, err
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert {"val_64/loss_int8", "val_64/loss_int4", "val_128/loss"} <= set(summary)
  assert "val_128/loss_int8" not in summary
