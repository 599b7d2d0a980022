"""Bad data and bad config values: `softlab train` stops with one line naming the
field or the array (and its first bad entry) and exit code 2, never a traceback
and never a silent run. Every case fails while the run is set up, before
anything is compiled, so each costs a config load and a dataset build."""

import ml_collections
import numpy as np
import pytest

from softlab import data
from softlab.config import load_config
from softlab.data import base

GROKKING = "configs/grokking/softmax.py"
LM = "configs/lm/softmax.py"


def arrays(**replaced):
  """A small valid npz dataset (3 classes), with some arrays replaced."""
  rng = np.random.default_rng(0)
  found = {"x_train": rng.normal(size=(32, 4)).astype(np.float32),
           "y_train": np.arange(32) % 3,
           "x_test": rng.normal(size=(8, 4)).astype(np.float32),
           "y_test": np.arange(8) % 3}
  return {**found, **replaced}


def with_values(array, index, value):
  """A copy of `array` with `value` at `index`."""
  array = array.copy()
  array[index] = value
  return array


def fails_in_one_line(softlab_cli, tmp_path, *args):
  """The message of `softlab train args...`, asserted to be one line with exit code 2."""
  code, _, err = softlab_cli("train", *args, "--workdir", str(tmp_path / "run"),
                             "--config.train.steps=1")
  assert code == 2, err
  assert len(err.splitlines()) == 1 and err.startswith("softlab: "), err
  return err.removeprefix("softlab: ").rstrip("\n")


GOOD = arrays()
NAN_TEST = with_values(GOOD["x_test"], (3, 1), np.nan)
OVERFLOW = with_values(GOOD["x_train"].astype(np.float64), (7, 2), 1e39)


@pytest.mark.parametrize("replaced, options, message", [
    ({"y_train": with_values(GOOD["y_train"], 31, 10**9)}, [],
     "y_train[31]=1000000000 would make 1000000001 classes for 40 labelled examples; labels must"
     " be class indices 0..K-1 (set data.num_classes=K for classes without examples)"),
    ({"y_test": with_values(GOOD["y_test"], 5, -1)}, [],
     "y_test[5]=-1 is not a class index: labels are class indices >= 0"),
    ({}, ["--config.data.num_classes=2"],
     "y_train[2]=2 is not a class index: labels must lie in [0, 2) for num_classes=2 (set in the"
     " config)"),
    ({"y_train": GOOD["y_train"] + 0.5}, [],
     "y_train must hold integer class indices, got dtype float64 (y_train[0]=0.5): float labels"
     " are not rounded, save them as integers"),
    ({"y_train": np.eye(3, dtype=np.int64)[GOOD["y_train"]]}, [],
     "y_train of shape (32, 3) looks like one-hot rows; labels are one class index per example:"
     " save y_train.argmax(axis=1)"),
    ({"x_train": np.zeros((40, 4), np.float32)}, [],
     "x_train has 40 rows but y_train has 32 labels; every example needs one"),
    ({"x_test": NAN_TEST}, [], "x_test[3, 1]=nan is not finite in float32"),
    ({"x_train": OVERFLOW}, [], "x_train[7, 2]=1e+39 is not finite in float32"),
    ({"x_train": np.zeros((0, 4), np.float32), "y_train": np.zeros(0, np.int64)}, [],
     "x_train has no examples (shape (0, 4)); every split needs one"),
    ({"y_test": np.zeros(0, np.int64), "x_test": np.zeros((0, 4), np.float32)}, [],
     "x_test has no examples (shape (0, 4)); every split needs one"),
    ({"x_test": np.zeros((8, 5), np.float32)}, [],
     "x_test rows have shape (5,), x_train rows (4,); they must match"),
])
def test_bad_npz_arrays_name_the_array_and_first_bad_entry(tmp_path, softlab_cli, replaced, options,
                                                          message):
  path = tmp_path / "data.npz"
  np.savez(path, **arrays(**replaced))
  got = fails_in_one_line(softlab_cli, tmp_path, GROKKING, "--config.data.name=npz",
                          f"--config.data.path={path}", *options)
  assert got == f"config.data: {path}: {message}"


def unreadable_files(tmp_path):
  """name -> a file no .npz reader can use."""
  np.savez(tmp_path / "good.npz", **GOOD)
  whole = (tmp_path / "good.npz").read_bytes()
  np.save(tmp_path / "array.npy", GOOD["x_train"])
  return {"empty.npz": b"", "truncated.npz": whole[: len(whole) // 2],
          "text.npz": b"x,y\n1,2\n", "array.npz": (tmp_path / "array.npy").read_bytes()}


@pytest.mark.parametrize("name, why", [
    ("empty.npz", "the file is empty"),
    ("truncated.npz", "not a zip archive as np.savez writes: another format, or truncated"),
    ("text.npz", "not a zip archive as np.savez writes: another format, or truncated"),
    ("array.npz", "not a zip archive as np.savez writes: another format, or truncated"),
])
def test_an_unreadable_file_is_one_line_without_numpy_advice(tmp_path, name, why):
  path = tmp_path / name
  path.write_bytes(unreadable_files(tmp_path)[name])
  with pytest.raises(ValueError) as caught:
    data.build(ml_collections.ConfigDict({"name": "npz", "path": str(path)}), batch_size=8,
               eval_batch_size=8, seed=0)
  assert str(caught.value) == f"path: {path} is not a readable .npz archive ({why})"


def test_an_unreadable_file_from_the_command_line(tmp_path, softlab_cli):
  path = tmp_path / "data.npz"
  path.write_text("not an archive\n")
  got = fails_in_one_line(softlab_cli, tmp_path, GROKKING, "--config.data.name=npz",
                          f"--config.data.path={path}")
  assert got == (f"config.data: path: {path} is not a readable .npz archive (not a zip archive"
                 " as np.savez writes: another format, or truncated)")
  assert "allow_pickle" not in got


def test_a_num_classes_above_the_labels_is_kept():
  labels = {"y_train": np.array([0, 2, 1]), "y_test": np.array([1])}
  assert base.class_count(labels, None) == 3
  assert base.class_count(labels, 7) == 7  # classes without examples, when asked for


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
    ([GROKKING, "--config.data.name=npz", "--config.data.path=x.npz", "--config.data.num_classes=0"],
     "config.data.num_classes must be an integer >= 1, got 0"),
    ([GROKKING, "--config.data.name=max_retrieval", "--config.data.num_classes=0",
      "--config.train.batch_size=8"], "config.data.num_classes must be an integer >= 1, got 0"),
    ([GROKKING, "--config.data.name=associative_recall", "--config.data.num_values=0",
      "--config.train.batch_size=8"], "config.data.num_values must be an integer >= 1, got 0"),
    ([GROKKING, "--config.optimizer.lr=1e39"], "config.optimizer.lr=1e+39 is not finite in float32"),
    ([GROKKING, "--config.optimizer.lr=-1.0"], "config.optimizer.lr must be a number > 0, got -1.0"),
    ([f"{GROKKING}:arg"], f"config file {GROKKING}: get_config() takes no argument, got :arg"),
    (["configs/metric/arcface.py", "--config.loss.name=subcenter_arcface"],
     "config.loss.name: 'subcenter_arcface' needs config.model.subcenters; set it (the paper's"
     " value: 3)"),
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
