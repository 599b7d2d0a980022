"""Bad data and bad config values: `softlab train` stops with one line naming the
field or the array (and its first bad entry) and exit code 2, never a traceback
and never a silent run. Every case fails while the run is set up, before
anything is compiled, so each costs a config load and a dataset build."""

import pytest

from softlab.config import load_config

GROKKING = "configs/grokking/softmax.py"
LM = "configs/lm/softmax.py"


def fails_in_one_line(softlab_cli, tmp_path, *args):
  """The message of `softlab train args...`, asserted to be one line with exit code 2."""
  code, _, err = softlab_cli("train", *args, "--workdir", str(tmp_path / "run"),
                             "--config.train.steps=1")
  assert code == 2, err
  assert len(err.splitlines()) == 1 and err.startswith("softlab: "), err
  return err.removeprefix("softlab: ").rstrip("\n")


@pytest.mark.parametrize("args, message", [
    ([LM, "--config.model.normalizer=bogus"],
     "config.model.normalizer: unknown normalizer 'bogus'; valid: adaptive_softmax, entmax15,"
     " gaussian, sa_softmax, sigmoid, softmax, softpick, softplus, sparsemax, ssmax, stablemax,"
     " topk_softmax"),
    ([GROKKING, "--config.model.hidden=(0,)"],
     "config.model.hidden must be layer widths, integers >= 1, got (0,)"),
    ([GROKKING, "--config.model.num_outputs=0"],
     "config.model.num_outputs must be an integer >= 1, got 0"),
    ([GROKKING, "--config.data.p=1"], "config.data.p must be an integer >= 2, got 1"),
    ([GROKKING, "--config.data.train_fraction=1.5"],
     "config.data.train_fraction must be a number in (0, 1), got 1.5"),
    ([GROKKING, "--config.data.p=2", "--config.data.train_fraction=0.01"],
     "config.data.train_fraction=0.01 splits 4 examples into 0 for training and 4 held out; both"
     " need at least one"),
    ([LM, "--config.data.seq_len=-4"], "config.data.seq_len must be an integer >= 1, got -4"),
    ([LM, "--config.data.seq_len=0"], "config.data.seq_len must be an integer >= 1, got 0"),
    ([LM, "--config.data.eval_lengths=(64, 0)"],
     "config.data.eval_lengths[1] must be an integer >= 1, got 0"),
    ([LM, "--config.model.vocab_size=0"], "config.model.vocab_size must be an integer >= 1, got 0"),
    ([LM, "--config.model.num_heads=3"], "config.model.num_heads=3 must divide d_model=128"),
    ([GROKKING, "--config.data.name=max_retrieval", "--config.data.num_classes=0",
      "--config.train.batch_size=8"], "config.data.num_classes must be an integer >= 1, got 0"),
    ([GROKKING, "--config.data.name=associative_recall", "--config.data.num_values=0",
      "--config.train.batch_size=8"], "config.data.num_values must be an integer >= 1, got 0"),
    ([GROKKING, "--config.optimizer.lr=1e39"], "config.optimizer.lr=1e+39 is not finite in float32"),
    ([GROKKING, "--config.optimizer.lr=-1.0"], "config.optimizer.lr must be a number > 0, got -1.0"),
    ([f"{GROKKING}:arg"], f"config file {GROKKING}: get_config() takes no argument, got :arg"),
])
def test_bad_config_values_name_the_field_and_the_valid_range(tmp_path, softlab_cli, args, message):
  assert fails_in_one_line(softlab_cli, tmp_path, *args) == message


def test_a_config_file_whose_get_config_needs_an_argument(tmp_path):
  path = tmp_path / "needs.py"
  path.write_text("def get_config(variant):\n  return variant\n")
  with pytest.raises(ValueError) as caught:
    load_config(path)
  assert str(caught.value) == (f"config file {path}: get_config(variant) needs an argument: write"
                               f" {path}:ARG")
  assert load_config(f"{path}:softmax") == "softmax"
