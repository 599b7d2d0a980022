"""Shared test setup: 8 simulated CPU devices, deterministic hypothesis, float64 on demand."""

import os

# Before JAX initializes its backend: 8 CPU devices for the multi-device tests
# (single-device code keeps running on device 0).
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
# The suite's time on CPU is compilation: compile with few optimizations (XLA's
# numerics are unchanged; only the generated code is slower). Set in the
# environment, so the `softlab` subprocesses and study workers inherit it.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "softlab",
    derandomize=True,
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("softlab")


@pytest.fixture
def diverging_npz(tmp_path):
  """An npz dataset with one inf input: the first training step's loss is NaN."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(64, 4)).astype(np.float32)
  x[5, 0] = np.inf
  path = tmp_path / "bad.npz"
  np.savez(path, x_train=x, y_train=rng.integers(0, 3, 64), x_test=x[:8],
           y_test=rng.integers(0, 3, 8))
  return str(path)


@pytest.fixture
def x64():
  """Runs the test with jax_enable_x64 on (float64 arrays really are float64)."""
  with jax.enable_x64(True):
    yield
