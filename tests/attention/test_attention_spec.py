"""A normalizer added with its spec alone runs through dense and chunked
attention and the Flax layer; the specs' structure."""

import os
import pathlib
import subprocess
import sys
import textwrap

import attention_cases as C
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import toy_normalizer

from softlab import normalizers
from softlab.attention import MultiHeadAttention
from softlab.attention import NORMALIZER_FIELDS
from softlab.attention import chunked
from softlab.attention import chunked_normalizers
from softlab.attention import dot_product_attention
from softlab.attention.core import AUTO_CHUNKED_MIN_KEYS
from softlab.attention.dense import attention_weights
from softlab.models.transformer import ATTENTION_FIELDS


@pytest.fixture
def squareplus():
  toy_normalizer.register()
  yield toy_normalizer.NAME
  toy_normalizer.unregister()


def _reference(case, gain, b=4.0):
  """float64 output of `case` with the toy: default scale 1 / d, gain per head."""
  q, k = case.query.astype(np.float64), case.key.astype(np.float64)
  n, h = q.shape[2:]
  k = np.repeat(k, n // k.shape[2], axis=2)
  x = np.einsum("btnh,bsnh->bnts", q, k) / h
  if case.bias is not None:
    x = x + np.where(np.isfinite(case.bias), case.bias, 0)
  valid = C.attendable(case)
  w = toy_normalizer.reference_weights(x, valid, gain, b)
  v = np.repeat(case.value.astype(np.float64), n // case.value.shape[2], axis=2)
  return np.einsum("bnts,bsnh->btnh", w, v)


@pytest.mark.parametrize("case_name", ["self", "cross"])
def test_registered_toy_runs_dense_and_chunked(squareplus, case_name):
  case = C.CASES[case_name]()
  gain = np.linspace(0.5, 2.0, case.num_heads).astype(np.float32)
  args = C.inputs(case) + ({"gain": jnp.asarray(gain)},)
  weight = jnp.asarray(np.random.default_rng(0).standard_normal(
      case.query.shape[:3] + case.value.shape[-1:]), jnp.float32)

  def value_and_grads(implementation):
    attend = C.attention_fn(case, squareplus, {}, implementation)
    loss = lambda *a: (jnp.sum(attend(*a) * weight), attend(*a))
    return C.jit(jax.grad(loss, argnums=(0, 1, 2, 4), has_aux=True))(*args)

  want_grads, want = value_and_grads("dense")
  grads, out = value_and_grads("chunked")
  np.testing.assert_allclose(want, _reference(case, gain), atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(out, want, atol=2e-5, rtol=0)
  for got_leaf, want_leaf in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads)):
    np.testing.assert_allclose(got_leaf, want_leaf, atol=1e-4, rtol=1e-5)
  assert np.all(np.asarray(want_grads[3]["gain"]) != 0)


def test_toy_constant_in_its_terms_reaches_the_online_form(squareplus, monkeypatch):
  # b = 0.01 instead of 4 changes every squareplus term; the online form reads
  # it per entry. S = AUTO_CHUNKED_MIN_KEYS, so implementation=None picks chunked.
  rng = np.random.default_rng(5)
  b, t, s, n, h = 1, 6, AUTO_CHUNKED_MIN_KEYS, 2, 8
  normal = lambda *shape: rng.standard_normal(shape).astype(np.float32)
  case = C.Case(normal(b, t, n, h) * 3, normal(b, s, n, h), normal(b, s, n, h),
                None, None, is_causal=False, block_size=None)
  gain = jnp.asarray([0.5, 2.0])
  weight = jnp.asarray(normal(b, t, n, h))
  chunked_calls = []
  chunked_attention = chunked.chunked_attention
  monkeypatch.setattr(chunked, "chunked_attention",
                      lambda *a: chunked_calls.append(a) or chunked_attention(*a))

  def value_and_grads(implementation):
    attend = C.attention_fn(case, squareplus, {"b": 0.01}, implementation)
    loss = lambda *a: (jnp.sum(attend(*a) * weight), attend(*a))
    return jax.grad(loss, argnums=(0, 1, 2, 4), has_aux=True)

  runs = [value_and_grads(implementation) for implementation in ("dense", "chunked", None)]
  (want_grads, want), *others = C.jit(lambda *a: [run(*a) for run in runs])(
      *C.inputs(case), {"gain": gain})
  assert len(chunked_calls) == 4  # chunked and None, each in the output and its gradient
  np.testing.assert_allclose(want, _reference(case, gain, b=0.01), atol=1e-5, rtol=1e-5)
  for grads, out in others:
    np.testing.assert_allclose(out, want, atol=1e-5, rtol=0)
    for got_leaf, want_leaf in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads)):
      np.testing.assert_allclose(got_leaf, want_leaf, atol=1e-5, rtol=1e-5)


def test_toy_constant_must_be_a_number_for_chunked(squareplus):
  x = jnp.ones((1, 4, 2, 8))
  attend = lambda b: dot_product_attention(x, x, x, normalizer=squareplus,
                                           normalizer_kwargs={"b": b}, implementation="chunked")
  message = r"normalizer_kwargs\['b'\] must be a Python number for the chunked implementation, got "
  with pytest.raises(ValueError, match=message + "a traced value"):
    jax.jit(attend)(0.01)
  with pytest.raises(ValueError, match=message + r"an array of shape \(2,\)"):
    attend(jnp.asarray([0.01, 4.0]))


def test_register_and_unregister_restore_the_registries():
  listed = lambda: (normalizers.names(), normalizers.attention_names(), chunked_normalizers())
  before = listed()
  toy_normalizer.register()
  try:
    assert all(toy_normalizer.NAME in names for names in listed())
  finally:
    toy_normalizer.unregister()
  assert listed() == before
  with pytest.raises(ValueError, match="unknown normalizer 'squareplus'"):
    normalizers.attention_spec(toy_normalizer.NAME)


def test_toy_registered_late_has_no_layer_fields(squareplus):
  layer = MultiHeadAttention(num_heads=2, head_dim=4, normalizer=squareplus)
  with pytest.raises(ValueError, match="registered after softlab.attention was imported"):
    layer.init(jax.random.key(0), jnp.ones((1, 3, 8)))


# A normalizer registered before softlab.attention is imported (as one in
# softlab/normalizers.py is) gets its layer and model config fields.
_LAYER_SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    import toy_normalizer
    toy_normalizer.register()
    from softlab import attention, models
    from softlab.models.transformer import ATTENTION_FIELDS
    assert "squareplus_gain_init" in attention.NORMALIZER_FIELDS
    assert "squareplus_gain_init" in ATTENTION_FIELDS
    x = np.random.default_rng(0).standard_normal((2, 5, 8)).astype(np.float32)
    layer = attention.MultiHeadAttention(num_heads=2, head_dim=4, normalizer="squareplus",
                                         squareplus_gain_init=1.5, is_causal=True)
    params = layer.init(jax.random.key(0), x)
    p = params["params"]
    np.testing.assert_array_equal(p["squareplus_gain"], [1.5, 1.5])
    q = jnp.einsum("btf,fnh->btnh", x, p["query"]["kernel"])
    k = jnp.einsum("btf,fnh->btnh", x, p["key"]["kernel"])
    v = jnp.einsum("btf,fnh->btnh", x, p["value"]["kernel"])
    out = attention.dot_product_attention(q, k, v, normalizer="squareplus", is_causal=True,
                                          normalizer_kwargs={"gain": 1.5})
    want = jnp.einsum("btnh,nhf->btf", out, p["out"]["kernel"])
    np.testing.assert_allclose(layer.apply(params, x), want, atol=1e-5)
    model = models.build({"name": "transformer", "d_model": 8, "num_layers": 1, "num_heads": 2,
                          "normalizer": "squareplus", "squareplus_gain_init": 0.5},
                         {"vocab_size": 7}, dtype=jnp.float32)
    assert model.attention_options["squareplus_gain_init"] == 0.5
    print("ok")
""")


def test_toy_registered_first_gets_layer_and_config_fields():
  here = pathlib.Path(__file__).parent
  root = pathlib.Path(normalizers.__file__).parents[1]  # the softlab under test
  one_device = os.environ["XLA_FLAGS"].replace("--xla_force_host_platform_device_count=8", "")
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=one_device,
             PYTHONPATH=os.pathsep.join([str(here), str(root)]))
  result = subprocess.run([sys.executable, "-c", _LAYER_SCRIPT], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip() == "ok"


def test_layer_and_config_fields_come_from_the_specs():
  want = []
  for name in normalizers.attention_names():
    for param in normalizers.attention_spec(name).layer_params:
      field = f"{name}_{param.kwarg}"
      want += [f"{field}_init"] if param.always_learned else [field, f"{field}_learnable"]
  assert sorted(NORMALIZER_FIELDS) == sorted(want)
  assert sorted(NORMALIZER_FIELDS) == ["sigmoid_bias", "sigmoid_bias_learnable", "ssmax_s_init"]
  assert set(NORMALIZER_FIELDS) <= set(ATTENTION_FIELDS)
  layer = MultiHeadAttention(num_heads=1)
  assert (layer.ssmax_s_init, layer.sigmoid_bias, layer.sigmoid_bias_learnable) == (
      0.43, "-log n", False)


def _exp(t, m, valid, hyper):
  e = jnp.where(valid, jnp.exp(t - m), 0)
  return e, e


def test_registration_errors():
  with pytest.raises(ValueError, match="exactly one of attention= and not_weights="):
    normalizers.register("nothing")
  with pytest.raises(ValueError, match="normalizer 'softmax' is registered twice"):
    normalizers.register("softmax", attention=normalizers.AttentionSpec())(lambda x: x)
  with pytest.raises(ValueError, match="returns log-weights, not attention weights"):
    normalizers.attention_spec("log_softmax")
  reads_c = normalizers.AttentionSpec(online=normalizers.OnlineForm(terms=_exp, static=("c",)))
  with pytest.raises(ValueError, match=r"^normalizer 'squareplus': its spec names 'c', not a"
                     r" keyword-only parameter of its function; valid: gain, b$"):
    normalizers.register(toy_normalizer.NAME, attention=reads_c)(toy_normalizer.squareplus)
  assert toy_normalizer.NAME not in normalizers.names()
  with pytest.raises(ValueError, match="with a reweighting must be shift invariant"):
    normalizers.OnlineForm(terms=_exp, shift_invariant=False,
                           reweighting=normalizers.Reweighting("c", lambda *a: a[0]))


def test_topk_softmax_is_an_attention_normalizer_through_its_spec():
  # Dense path: k from normalizer_kwargs, causal masking; at most k keys per query.
  rng = np.random.default_rng(0)
  q, k = (jnp.asarray(rng.standard_normal((1, 6, 2, 4)), jnp.float32) for _ in range(2))
  weights = attention_weights(q, k, normalizer="topk_softmax", normalizer_kwargs={"k": 2},
                              is_causal=True)
  assert np.all(np.sum(weights > 0, axis=-1) == np.minimum(np.arange(1, 7), 2))
  np.testing.assert_allclose(np.sum(weights, axis=-1), 1.0, rtol=1e-6)
  scores = jnp.einsum("btnd,bsnd->bnts", q, k) / 2.0
  causal = np.tril(np.ones((6, 6), bool))
  np.testing.assert_allclose(weights, normalizers.topk_softmax(scores, where=causal, k=2),
                             rtol=1e-6)
