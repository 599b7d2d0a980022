"""Shared test setup: 8 simulated CPU devices, deterministic hypothesis, float64 on demand."""

import os
import shutil
import tempfile

# Before JAX initializes its backend: 8 CPU devices for the multi-device tests
# (single-device code keeps running on device 0), and XLA:CPU's older fusion code
# generator, which compiles the suite's small programs in half the time.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_force_host_platform_device_count=8 --xla_cpu_use_fusion_emitters=false"
).strip()
# The suite's time on CPU is compilation: compile with few optimizations (XLA's
# numerics are unchanged; only the generated code is slower). Set in the
# environment, so the `softlab` subprocesses and study workers inherit it.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
# Many tests compile the same programs (every trainer run re-jits its steps): a
# compilation cache shared by this session's processes (xdist workers,
# subprocesses) compiles each once. The controller makes a fresh folder, so a
# run never reads an earlier run's programs, and removes it at the end.
if "SOFTLAB_TEST_JAX_CACHE" not in os.environ:
  os.environ["SOFTLAB_TEST_JAX_CACHE"] = tempfile.mkdtemp(prefix="softlab-test-jax-cache-")
  _OWNS_CACHE = True
else:
  _OWNS_CACHE = False
os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ["SOFTLAB_TEST_JAX_CACHE"]
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

from softlab import cli  # noqa: E402

settings.register_profile(
    "softlab",
    derandomize=True,
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("softlab")


def pytest_sessionfinish(session):
  if _OWNS_CACHE:
    shutil.rmtree(os.environ["SOFTLAB_TEST_JAX_CACHE"], ignore_errors=True)


@pytest.fixture
def diverging_npz(tmp_path):
  """An npz dataset with one huge (finite) input row: the first training step's loss is NaN."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(64, 4)).astype(np.float32)
  x[5] = np.finfo(np.float32).max
  path = tmp_path / "bad.npz"
  np.savez(path, x_train=x, y_train=rng.integers(0, 3, 64), x_test=x[:8],
           y_test=rng.integers(0, 3, 8))
  return str(path)


@pytest.fixture
def x64():
  """Runs the test with jax_enable_x64 on (float64 arrays really are float64)."""
  with jax.enable_x64(True):
    yield


@pytest.fixture
def softlab_cli(capfd):
  """Runs `softlab ARGS...` in this process: returns (exit code, stdout, stderr).

  The same `cli.main` that `python -m softlab` calls, without a new interpreter's
  imports (seconds per call); tests/test_cli.py runs the real entry point.
  """

  def run(*args):
    capfd.readouterr()
    try:
      cli.main(list(args))
      code = 0
    except SystemExit as stop:
      code = stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
    out, err = capfd.readouterr()
    return code, out, err

  return run
