"""Shared test setup: deterministic hypothesis, float64 on demand."""

import jax
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "softlab",
    derandomize=True,
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("softlab")


@pytest.fixture
def x64():
  """Runs the test with jax_enable_x64 on (float64 arrays really are float64)."""
  with jax.enable_x64(True):
    yield
