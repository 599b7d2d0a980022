"""Dense attention against an independent float64 NumPy reference; errors."""

import functools
import math

import attention_cases as C
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from softlab.attention import attention_weights
from softlab.attention import core
from softlab.attention import dot_product_attention

DENSE_ONLY = ("sparsemax", "entmax15", "sa_softmax", "adaptive_softmax")


def _variant_kwargs(name, num_heads):
  if name in DENSE_ONLY:
    return name, {}
  normalizer, fixed, learnable = C.variant(name, num_heads)
  return normalizer, {**fixed, **learnable}


def _dense(case: C.Case, normalizer, kwargs):
  """query -> dense output for `case` (not jitted)."""
  attend = C.attention_fn(case, normalizer, kwargs, "dense")
  _, key, value, bias = C.inputs(case)
  return lambda query: attend(query, key, value, bias, {})


@pytest.mark.parametrize("case_name", sorted(C.CASES))
@pytest.mark.parametrize("variant", sorted(C.VARIANTS))
def test_dense_matches_numpy_reference(case_name, variant):
  case = C.CASES[case_name]()
  normalizer, kwargs = _variant_kwargs(variant, case.num_heads)
  got = C.jit(_dense(case, normalizer, kwargs))(case.query)
  assert got.dtype == jnp.float32
  want = C.reference_attention(case, normalizer, kwargs)
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case_name", ["self", "cross"])
@pytest.mark.parametrize("normalizer", DENSE_ONLY)
def test_dense_only_normalizers_apply_the_normalizer_to_rows(case_name, normalizer):
  case = C.CASES[case_name]()
  got = C.jit(_dense(case, normalizer, {}))(case.query)
  want = C.reference_attention(case, normalizer, {})
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case_name", ["self", "cross"])
def test_attention_weights_match_reference(case_name):
  case = C.CASES[case_name]()
  weights = functools.partial(
      attention_weights, normalizer="sigmoid", is_causal=case.is_causal
  )
  got = C.jit(weights)(case.query, case.key, case.bias, case.mask)
  want = C.reference_weights(case, "sigmoid", {})
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, atol=1e-6)


# The chunked normalizers' dense values and gradients are checked the same
# way in test_attention_chunked.py.
@pytest.mark.parametrize("variant", DENSE_ONLY)
def test_masked_rows_are_zero_and_extreme_scores_finite(variant):
  case = C.self_attention_case()  # batch 1: query rows 0-2 attend nothing
  normalizer, kwargs = _variant_kwargs(variant, case.num_heads)
  attend = _dense(case, normalizer, kwargs)

  @C.jit
  def value_and_grad(query):
    out, vjp = jax.vjp(attend, query)
    return out, vjp(jnp.ones_like(out))[0]

  for query in (case.query, case.query * 3e3):  # scores up to about 1e4
    out, dq = value_and_grad(query)
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(dq))
    np.testing.assert_array_equal(out[1, :3], 0)
    np.testing.assert_array_equal(dq[1, :3], 0)


def _one_query(scores):
  """query [1, 1, 1, 1] and key [1, S, 1, 1] whose scores (scale 1) are `scores`."""
  key = jnp.asarray(scores, jnp.float32).reshape(1, -1, 1, 1)
  return jnp.ones((1, 1, 1, 1)), key


def _weights(query, key, **kwargs):
  return C.jit(functools.partial(attention_weights, **kwargs))(query, key)


@pytest.mark.parametrize(
    "n, softmax_max, ssmax_max", [(1_000, 0.129, 0.9996), (100_000, 0.0015, 1.0000)]
)
@pytest.mark.parametrize("implementation", ["dense", "chunked"])
def test_ssmax_figure_1(n, softmax_max, ssmax_max, implementation):
  # All scores -2 except one +3, s = 0.43 (SSMax paper, Figure 1).
  query, key = _one_query(np.r_[3.0, np.full(n - 1, -2.0)])
  value = jnp.zeros((1, n, 1, 1)).at[0, 0].set(1.0)  # reads the weight of key 0
  for normalizer, want in [("softmax", softmax_max), ("ssmax", ssmax_max)]:
    attend = functools.partial(
        dot_product_attention,
        normalizer=normalizer,
        normalizer_kwargs={"s": 0.43} if normalizer == "ssmax" else None,
        scale=1.0,
        implementation=implementation,
    )
    out = C.jit(attend)(query, key, value)
    np.testing.assert_allclose(out[0, 0, 0, 0], want, atol=5e-5 + want * 5e-3)


def test_sigmoid_default_bias_is_minus_log_sequence_length():
  # Zero scores: weight sigmoid(-log S) = 1 / (1 + S) on every attendable key of
  # every row, however many keys the causal mask leaves it.
  query = jnp.zeros((1, 64, 1, 4))
  weights = _weights(query, query, normalizer="sigmoid", is_causal=True)
  np.testing.assert_allclose(np.diag(weights[0, 0]), 1 / 65, rtol=1e-5)
  np.testing.assert_allclose(weights[0, 0, :, 0], 1 / 65, rtol=1e-5)
  # n = 2048: b = -7.62 in the paper.
  weights = _weights(query[:, :1], jnp.zeros((1, 2048, 1, 4)), normalizer="sigmoid")
  np.testing.assert_allclose(weights, jax.nn.sigmoid(-7.62), rtol=5e-3)
  fixed = _weights(
      query, query, normalizer="sigmoid", normalizer_kwargs={"bias": 0.0}
  )
  np.testing.assert_allclose(fixed, 0.5)


def test_lssa_scale_is_log_d_log_n():
  # One key at cosine 1 and n - 1 keys at cosine 0: weights softplus(c) and
  # softplus(0), c = (ln d)(ln n).
  d, n = 8, 5
  query = np.zeros((1, 1, 1, d), np.float32)
  query[..., 0] = 3.0
  key = np.zeros((1, n, 1, d), np.float32)
  key[0, 0, 0, 0] = 2.0
  key[0, 1:, 0, 1] = 1.0
  weights = _weights(query, key, normalizer="softplus")[0, 0, 0]
  c = math.log(d) * math.log(n)
  raw = np.array([np.logaddexp(0, c)] + [np.log(2)] * (n - 1))
  np.testing.assert_allclose(weights, raw / raw.sum(), rtol=1e-5)


def test_softpick_rows_with_negative_scores_are_zero():
  query, key = _one_query([-1.0, -0.5, 0.0, -3.0])
  weights = _weights(query, key, normalizer="softpick", scale=1.0)
  np.testing.assert_array_equal(weights, 0)


@pytest.mark.parametrize("normalizer", ["softplus", "entmax15"])
def test_dense_gradients_match_finite_differences(normalizer, x64):
  case = C.cross_attention_case()
  cast = lambda x: jnp.asarray(x, jnp.float64)
  fn = jax.jit(
      lambda q, k, v, bias: dot_product_attention(
          q, k, v, bias, case.mask, normalizer=normalizer, implementation="dense"
      )
  )
  args = (cast(case.query), cast(case.key), cast(case.value), cast(case.bias))
  check_grads(fn, args, order=1, modes=("rev",), atol=1e-5, rtol=1e-5)


def test_gqa_equals_repeated_kv_heads():
  case = C.self_attention_case()
  repeat = lambda x: np.repeat(x, 2, axis=2)
  got = C.jit(_dense(case, "softmax", {}))(case.query)
  attend = functools.partial(dot_product_attention, is_causal=True)
  want = C.jit(attend)(
      case.query, repeat(case.key), repeat(case.value), mask=case.mask
  )
  np.testing.assert_allclose(got, want, atol=1e-6)


def test_softmax_matches_jax_nn():
  case = C.cross_attention_case()
  bias = np.where(np.isfinite(case.bias), case.bias, -1e9).astype(np.float32)
  # No fully masked rows here: jax.nn averages the values there, we give 0.
  mask = case.mask | (np.arange(case.key.shape[1]) == 0)
  bias[..., 0] = 0.0
  both = C.jit(lambda *args: (
      dot_product_attention(*args),
      jax.nn.dot_product_attention(*args, implementation="xla"),
  ))
  got, want = both(case.query, case.key, case.value, bias, mask)
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_bf16_inputs_return_bf16():
  case = C.long_query_case()
  bf16 = lambda x: jnp.asarray(x, jnp.bfloat16)
  attend = C.jit(functools.partial(dot_product_attention, is_causal=True))
  out = attend(bf16(case.query), bf16(case.key), bf16(case.value))
  assert out.dtype == jnp.bfloat16
  rounded = [np.asarray(bf16(x), np.float32) for x in (case.query, case.key, case.value)]
  want = C.reference_attention(C.Case(*rounded, None, None, True, 8), "softmax", {})
  np.testing.assert_allclose(np.asarray(out, np.float32), want, atol=2e-2)


def test_auto_implementation_uses_chunked_from_the_threshold():
  def uses_chunked(length):
    x = jnp.zeros((1, length, 1, 4))
    jaxpr = jax.make_jaxpr(lambda x: dot_product_attention(x, x, x))(x)
    return "custom_vjp" in str(jaxpr)

  assert not uses_chunked(core.AUTO_CHUNKED_MIN_KEYS - 1)
  assert uses_chunked(core.AUTO_CHUNKED_MIN_KEYS)


Q = np.zeros((1, 4, 2, 8), np.float32)
KV = np.zeros((1, 5, 1, 8), np.float32)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"normalizer": "softmaxx"}, "unknown normalizer 'softmaxx'; valid: "),
        ({"normalizer": "log_softmax"}, "returns log-weights"),
        ({"normalizer": "gumbel_softmax"}, "needs a PRNG key"),
        ({"implementation": "flash"}, "unknown implementation 'flash'; valid: None"),
        (
            {"normalizer": "sparsemax", "implementation": "chunked"},
            "'sparsemax' has no chunked implementation",
        ),
        ({"normalizer_kwargs": {"temperature": 2.0}}, "key 'temperature'"),
        ({"normalizer": "ssmax", "normalizer_kwargs": {"n": 4}}, "key 'n'"),
        (
            {"normalizer": "ssmax", "normalizer_kwargs": {"s": np.ones(3)}},
            r"shape \[num_heads\] = \(2,\)",
        ),
        ({"mask": np.full((1, 1, 4, 5), "a")}, "mask must be a boolean or numeric"),
        ({"local_window_size": (1, 2, 3)}, "local_window_size must be an int or"),
        ({"local_window_size": -1}, "local_window_size left must be an integer >= 0"),
        ({"query_seq_lengths": np.ones(3, np.int32)}, r"query_seq_lengths must be integers of shape \(1,\)"),
        ({"key_value_seq_lengths": np.ones(2)}, "key_value_seq_lengths must be integers"),
        ({"implementation": "chunked", "return_residual": True}, "return_residual needs"),
        ({"mask": np.ones((3, 4, 5), bool)}, "mask of shape"),
        ({"bias": np.ones((2, 2, 4, 5))}, "bias of shape"),
        ({"implementation": "chunked", "block_size": 0}, "block_size must be"),
        (
            {
                "normalizer": "softpick",
                "implementation": "chunked",
                "normalizer_kwargs": {"eps": jnp.ones(2)},
            },
            r"normalizer_kwargs\['eps'\] must be a Python number",
        ),
    ],
)
def test_errors(kwargs, message):
  mask = kwargs.pop("mask", None)
  bias = kwargs.pop("bias", None)
  with pytest.raises(ValueError, match=message):
    dot_product_attention(Q, KV, KV, bias, mask, **kwargs)


@pytest.mark.parametrize(
    "query, key, message",
    [
        (Q[0, 0], KV, "must be 4-D"),
        (Q, np.zeros((2, 5, 1, 8), np.float32), "batch size and head dim"),
        (np.zeros((1, 4, 3, 8), np.float32), KV[..., :1, :].repeat(2, 2), "multiple"),
        (Q.astype(np.int32), KV, "floating"),
    ],
)
def test_shape_errors(query, key, message):
  with pytest.raises(ValueError, match=message):
    dot_product_attention(query, key, key)
