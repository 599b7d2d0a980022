"""Chunked attention equals the dense reference; memory; properties."""

import functools

import attention_cases as C
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from jax.test_util import check_grads

from softlab import normalizers
from softlab.attention import CHUNKED_NORMALIZERS
from softlab.attention import _common
from softlab.attention import attention_weights
from softlab.attention import dot_product_attention
from softlab.attention.core import AUTO_CHUNKED_MIN_KEYS


def _value_and_grads(case, normalizer, fixed, implementation):
  """(q, k, v, bias, learnable) -> (gradients of sum(out * w), output)."""
  attend = C.attention_fn(case, normalizer, fixed, implementation)
  shape = case.query.shape[:3] + case.value.shape[-1:]
  weight = jnp.asarray(np.random.default_rng(0).standard_normal(shape), jnp.float32)

  def loss(*args):
    out = attend(*args)
    return jnp.sum(out * weight), out

  return jax.grad(loss, argnums=(0, 1, 2, 3, 4), has_aux=True)


def _dense_and_chunked(case, normalizer, fixed):
  """jit(args -> (dense, chunked) (gradients, output)): one compilation for both."""
  dense = _value_and_grads(case, normalizer, fixed, "dense")
  chunked = _value_and_grads(case, normalizer, fixed, "chunked")
  return C.jit(lambda *args: (dense(*args), chunked(*args)))


def _assert_same(got, want):
  """(gradients, output) of chunked attention equal dense's."""
  (grads, out), (want_grads, want_out) = got, want
  np.testing.assert_allclose(out, want_out, atol=2e-5, rtol=0)
  # rtol: LSSAR's gradients reach ~60, where f32 rounding alone is ~1e-4.
  for got_leaf, want_leaf in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads)):
    np.testing.assert_allclose(got_leaf, want_leaf, atol=1e-4, rtol=1e-5)


# Every variant on both cases, except the scaled LSSA ones on the causal case.
GRADIENT_CASES = [
    (variant, case_name)
    for variant in sorted(C.VARIANTS)
    for case_name in ("self", "cross")
    if case_name == "cross" or variant not in ("lssa_scale", "lssar15")
]


@pytest.mark.parametrize("variant, case_name", GRADIENT_CASES)
def test_chunked_matches_dense_values_and_gradients(variant, case_name):
  case = C.CASES[case_name]()
  normalizer, fixed, learnable = C.variant(variant, case.num_heads)
  args = C.inputs(case) + ({k: jnp.asarray(v) for k, v in learnable.items()},)
  both = _dense_and_chunked(case, normalizer, fixed)
  (want_grads, want), (grads, out) = both(*args)
  _assert_same((grads, out), (want_grads, want))
  assert len(jax.tree.leaves(grads)) == 3 + (case.bias is not None) + len(learnable)
  if case_name == "self":  # batch 1: query rows 0-2 attend nothing
    for dq, out_ in ((grads[0], out), (want_grads[0], want)):
      np.testing.assert_array_equal(out_[1, :3], 0)
      np.testing.assert_array_equal(dq[1, :3], 0)
  # Scores up to about 1e4: still finite, still equal.
  extreme = (args[0] * 3e3,) + args[1:]
  (want_grads, want), (grads, out) = both(*extreme)
  leaves = jax.tree.leaves((grads, out, want_grads, want))
  assert all(np.all(np.isfinite(x)) for x in leaves)
  np.testing.assert_allclose(out, want, atol=1e-4, rtol=0)


# Every registered online form, straight from the registry: with its defaults
# (causal, T > S, no mask: the VARIANTS above run the masked cases) and with
# every hyperparameter away from its default (bias with -inf entries, mask).
REGISTRY_CASES = [(name, {}, "long_query") for name in CHUNKED_NORMALIZERS] + [
    (name, C.non_default_kwargs(name), "cross")
    for name in CHUNKED_NORMALIZERS
    if C.non_default_kwargs(name)
]


def _case_id(name, kwargs):
  shown = lambda value: f"{value:g}" if isinstance(value, float) else value
  return "-".join([name] + [f"{key}={shown(value)}" for key, value in kwargs.items()])


@pytest.mark.parametrize(
    "normalizer, kwargs, case_name", REGISTRY_CASES,
    ids=[_case_id(name, kwargs) for name, kwargs, _ in REGISTRY_CASES],
)
def test_every_online_form_matches_dense(normalizer, kwargs, case_name):
  case = C.CASES[case_name]()
  both = _dense_and_chunked(case, normalizer, kwargs)
  want, got = both(*C.inputs(case), {})
  _assert_same(got, want)


@pytest.mark.parametrize("normalizer", normalizers.attention_names())
def test_unknown_hyperparameter_is_one_error_on_every_path(normalizer):
  valid = ", ".join(sorted(_common.hyperparameters(normalizer))) or "none"
  want = (f"normalizer_kwargs key 'nonexistent' is not a hyperparameter of {normalizer!r}"
          f" in attention (n is supplied per row); valid: {valid}")
  x = np.zeros((1, 4, 1, 8), np.float32)
  kwargs = {"normalizer": normalizer, "normalizer_kwargs": {"nonexistent": 1.0}}
  calls = [functools.partial(dot_product_attention, x, x, x, implementation=implementation, **kwargs)
           for implementation in ("dense", "chunked", None)]
  for call in calls + [functools.partial(attention_weights, x, x, **kwargs)]:
    with pytest.raises(ValueError) as error:
      call()
    assert str(error.value) == want


@pytest.mark.parametrize("variant", sorted(C.VARIANTS))
def test_chunked_matches_dense_without_masks_and_in_bf16(variant):
  case = C.long_query_case()  # causal, T > S, n from the closed form
  normalizer, fixed, learnable = C.variant(variant, case.num_heads)
  dense = C.attention_fn(case, normalizer, fixed, "dense")
  chunked = C.attention_fn(case, normalizer, fixed, "chunked")
  # Both implementations in both dtypes: one compilation.
  dtypes = (jnp.float32, jnp.bfloat16)
  per_dtype = C.jit(lambda args: [(dense(*a), chunked(*a)) for a in args])(
      [C.inputs(case, dtype) + ({k: jnp.asarray(v) for k, v in learnable.items()},)
       for dtype in dtypes]
  )
  for dtype, atol, (want, got) in zip(dtypes, (2e-5, 1e-2), per_dtype):
    assert got.dtype == dtype
    np.testing.assert_allclose(
        np.asarray(got, np.float32), np.asarray(want, np.float32), atol=atol
    )


@pytest.mark.parametrize("variant", ["ssmax", "sigmoid_bias", "lssar3", "softpick"])
def test_chunked_gradients_match_finite_differences(variant, x64):
  case = C.cross_attention_case()
  normalizer, fixed, learnable = C.variant(variant, case.num_heads)
  attend = jax.jit(C.attention_fn(case, normalizer, fixed, "chunked"))
  args = C.inputs(case, np.float64) + (
      {k: jnp.asarray(v, jnp.float64) for k, v in learnable.items()},
  )
  check_grads(attend, args, order=1, modes=("rev",), atol=1e-5, rtol=1e-5)


def test_vmap_over_queries():
  case = C.self_attention_case()
  attend = functools.partial(
      dot_product_attention,
      mask=case.mask,
      is_causal=True,
      implementation="chunked",
      block_size=8,
  )
  queries = np.stack([case.query, -case.query, 2 * case.query])
  got = C.jit(jax.vmap(attend, in_axes=(0, None, None)))(
      queries, case.key, case.value
  )
  single = C.jit(attend)
  for i, query in enumerate(queries):
    np.testing.assert_allclose(got[i], single(query, case.key, case.value), atol=1e-6)


def _temp_bytes(length, implementation):
  shape = jax.ShapeDtypeStruct((1, length, 2, 16), jnp.float32)
  attend = functools.partial(
      dot_product_attention,
      is_causal=True,
      implementation=implementation,
      block_size=64,
  )
  grad = jax.grad(lambda q, k, v: jnp.sum(attend(q, k, v)), argnums=(0, 1, 2))
  # FAST_COMPILE only skips LLVM's optimizations: XLA's buffer assignment, and
  # so the temporary sizes, are the same.
  compiled = C.jit(grad).lower(shape, shape, shape).compile()
  return compiled.memory_analysis().temp_size_in_bytes


def test_chunked_temporary_memory_is_linear_in_length():
  short, long = _temp_bytes(512, "chunked"), _temp_bytes(1024, "chunked")
  assert long < 2.2 * short
  # The dense weights alone are 1024 * 1024 * 2 heads * 4 bytes = 8 MiB.
  assert 16 * long < _temp_bytes(1024, "dense")


# ---------------------------------------------------------------------------
# Properties on random inputs (one compilation per normalizer).
# ---------------------------------------------------------------------------

_T, _S, _N, _H = 5, 11, 2, 4


@functools.lru_cache(maxsize=None)
def _chunked(normalizer):
  return C.jit(
      functools.partial(
          dot_product_attention,
          normalizer=normalizer,
          implementation="chunked",
          block_size=4,
      )
  )


def _floats(shape):
  return hnp.arrays(np.float32, shape, elements=st.floats(-3, 3, width=32))


@pytest.mark.parametrize("normalizer", CHUNKED_NORMALIZERS)
@given(
    query=_floats((1, _T, _N, _H)),
    key=_floats((1, _S, 1, _H)),
    keep=hnp.arrays(bool, (1, 1, 1, _S)),
    permutation=st.permutations(range(_S)),
)
def test_row_sums_and_key_permutation_invariance(
    normalizer, query, key, keep, permutation
):
  attend = _chunked(normalizer)
  value = np.ones((1, _S, 1, 1), np.float32)
  row_sums = np.asarray(attend(query, key, value, mask=keep))[..., 0]
  n = keep.sum()
  if normalizers.attention_spec(normalizer).rows_sum_to_one:
    np.testing.assert_allclose(row_sums, 1.0 if n else 0.0, atol=1e-5)
  else:
    assert np.all(row_sums >= 0) and np.all(row_sums <= n + 1e-5)
  value = np.arange(_S, dtype=np.float32).reshape(1, _S, 1, 1)
  order = np.asarray(permutation)
  out = attend(query, key, value, mask=keep)
  shuffled = attend(
      query, key[:, order], value[:, order], mask=keep[..., order]
  )
  np.testing.assert_allclose(shuffled, out, atol=1e-4)


def test_chunked_needs_a_static_scale():
  x = jnp.zeros((1, 4, 1, 8))
  attend = lambda scale: dot_product_attention(
      x, x, x, scale=scale, implementation="chunked"
  )
  with pytest.raises(ValueError, match="scale must be a Python number"):
    jax.jit(attend)(1.0)
  np.testing.assert_array_equal(jax.jit(attend, static_argnums=0)(1.0), 0)


@pytest.mark.parametrize("normalizer, traced", [("softmax", "scale"), ("softpick", "eps"),
                                                ("softplus", "sharpen_power")])
def test_automatic_choice_falls_back_to_dense_for_traced_statics(normalizer, traced):
  # Long enough for the chunked path, but a traced scale / eps / power can
  # only run densely; the automatic choice must not raise.
  x = np.random.default_rng(0).standard_normal((1, AUTO_CHUNKED_MIN_KEYS, 1, 8), np.float32)
  value = {"scale": 0.5, "eps": 1e-8, "sharpen_power": 3.0}[traced]

  def attend(value, implementation=None):
    if traced == "scale":
      return dot_product_attention(x, x, x, scale=value, implementation=implementation)
    return dot_product_attention(x, x, x, normalizer=normalizer,
                                 normalizer_kwargs={traced: value},
                                 implementation=implementation)

  # The automatic choice and the dense reference in one compilation.
  auto, dense = C.jit(lambda value: (attend(value), attend(value, "dense")))(value)
  np.testing.assert_allclose(auto, dense, atol=1e-5)
