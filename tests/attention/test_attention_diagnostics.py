"""Attention diagnostics against hand-computed values."""

import attention_cases as C
import numpy as np
import pytest

from softlab.attention import diagnostics as D

# Compiled: eager calls compile each small op for each new shape, which costs
# more than one program per shape.
sink_rate = C.jit(D.sink_rate)
sparsity = C.jit(D.sparsity)
row_entropy = C.jit(D.row_entropy)
max_weight = C.jit(D.max_weight)
hidden_state_kurtosis = C.jit(D.hidden_state_kurtosis, static_argnames="axis")

# Two layers x two heads of causal weights over 3 keys.
SINKY = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.4, 0.3, 0.3]])  # alpha 0.633
SPREAD = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # alpha 0.333
FLAT = np.array([[0.0, 0.0, 0.0], [0.2, 0.8, 0.0], [0.1, 0.2, 0.7]])  # alpha 0.1
WEIGHTS = np.stack([np.stack([SINKY, SPREAD]), np.stack([FLAT, FLAT])])


def test_sink_rate_counts_heads_whose_mean_first_key_weight_exceeds_threshold():
  assert sink_rate(WEIGHTS) == pytest.approx(2 / 4)  # alphas .633, .333, .1, .1
  assert sink_rate(WEIGHTS, threshold=0.5) == pytest.approx(1 / 4)
  assert sink_rate(WEIGHTS, threshold=0.7) == 0


def test_sparsity_counts_attendable_near_zero_entries():
  causal = np.tril(np.ones((3, 3), bool))
  # Attendable entries: 6 per head, 24 in all; zeros among them: SINKY 1 (the
  # 1e-6 set below), SPREAD 3, FLAT 1 each.
  weights = WEIGHTS.copy()
  weights[0, 0, 2, 2] = 1e-6
  assert sparsity(weights, causal) == pytest.approx((1 + 3 + 1 + 1) / 24)
  assert sparsity(weights) == pytest.approx((4 + 6 + 4 + 4) / 36)
  assert sparsity(weights, causal, tol=1e-7) == pytest.approx(5 / 24)
  assert sparsity(weights, np.zeros((3, 3), bool)) == 0


def test_row_entropy_normalizes_rows_and_ignores_zeros():
  rows = np.array([[0.5, 0.5, 0.0], [0.2, 0.2, 0.2], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
  np.testing.assert_allclose(
      row_entropy(rows[None]), [[np.log(2), np.log(3), 0.0, 0.0]], rtol=1e-6
  )
  np.testing.assert_allclose(
      row_entropy(WEIGHTS)[0, 0, 2],
      -(0.4 * np.log(0.4) + 2 * 0.3 * np.log(0.3)),
      rtol=1e-6,
  )


def test_max_weight_per_row():
  np.testing.assert_allclose(max_weight(WEIGHTS)[0, 0], [1.0, 0.5, 0.4])
  assert max_weight(WEIGHTS).shape == (2, 2, 3)


def test_hidden_state_kurtosis_is_plain_kurtosis():
  x = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
  centered = x - x.mean()
  want = np.mean(centered**4) / np.mean(centered**2) ** 2
  assert hidden_state_kurtosis(x) == pytest.approx(want, rel=1e-5)
  gaussian = np.random.default_rng(0).standard_normal((64, 1000))
  assert hidden_state_kurtosis(gaussian) == pytest.approx(3.0, abs=0.05)
  per_row = hidden_state_kurtosis(np.stack([x, 2 * x + 1]), axis=-1)
  np.testing.assert_allclose(per_row, [want, want], rtol=1e-5)
  # One massive activation among N entries: kurtosis about N.
  spike = np.zeros(10_000)
  spike[0] = 1e3
  assert hidden_state_kurtosis(spike) == pytest.approx(9_998, rel=1e-3)
  assert hidden_state_kurtosis(np.ones(8)) == 0


def test_hidden_state_kurtosis_counts_only_where():
  x = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
  padded = np.stack([x, np.zeros(5), -7 * np.ones(5)])  # [3 examples, 5]
  real = np.array([True, False, False])[:, None]
  want = float(hidden_state_kurtosis(x))
  assert float(hidden_state_kurtosis(padded, where=real)) == pytest.approx(want, rel=1e-6)
  per_row = hidden_state_kurtosis(padded, axis=-1, where=real)
  assert float(per_row[0]) == pytest.approx(want, rel=1e-6)


def test_weights_need_three_dims():
  with pytest.raises(ValueError, match=r"\[..., N, T, S\]"):
    D.sink_rate(np.ones((3, 3)))
