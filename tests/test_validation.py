"""softlab.validation: one-line errors naming the argument, and no value checks under jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from softlab import losses, metrics, normalizers, optim, validation


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: validation.check_positive(0.0, "s"), "s must be > 0, got 0.0"),
        (lambda: validation.check_positive(-2, "gamma"), "gamma must be > 0, got -2"),
        (lambda: validation.check_number(1.5, "q", lambda v: 0 < v <= 1, "in (0, 1]"),
         r"q must be in \(0, 1\], got 1.5"),
        (lambda: validation.check_number("fast", "optimizer.lr", lambda v: v > 0, "> 0",
                                         required=True),
         "optimizer.lr must be a number > 0, got 'fast'"),
        (lambda: validation.check_number(True, "optimizer.lr", lambda v: v > 0, "> 0",
                                         required=True),
         "optimizer.lr must be a number > 0, got True"),
        (lambda: validation.check_array(np.ones(3), "where", dtype=bool, shape=(3,)),
         r"where must be a boolean array of shape \(3,\), got float64\[3\]"),
        (lambda: validation.check_array(np.ones(3, np.int32), "ids", dtype=int, shape=(4,)),
         r"ids must be integers of shape \(4,\), got int32\[3\]"),
        (lambda: validation.check_mask(np.array(["a"]), (2, 1)),
         "where must be a boolean or numeric array"),
        (lambda: validation.check_mask(np.ones(2, bool), (2, 3), target="scores"),
         r"where of shape \(2,\) does not broadcast to scores of shape \(2, 3\)"),
        (lambda: validation.broadcast_to(np.ones(4), (2, 3), name="bias", target="x of shape"),
         r"bias of shape \(4,\) does not broadcast to x of shape \(2, 3\)"),
        (lambda: validation.check_labels(np.zeros(2), (2,)),
         "labels must be integer class indices"),
        (lambda: validation.check_labels(np.zeros(3, int), (2,)),
         r"labels of shape \(3,\) must have the shape of logits without the class axis, \(2,\)"),
        (lambda: validation.check_labels(np.array([0, 5]), (2,), 5),
         r"labels must lie in \[0, 5\) for 5 classes, got values in \[0, 5\]"),
        (lambda: validation.check_label_range(np.array([-1, 2]), 3, where=np.array([True, False])),
         r"labels must lie in \[0, 3\)"),
        (lambda: validation.check_number(1e39, "lr", lambda v: v > 0, "> 0", dtype=np.float32),
         r"lr=1e\+39 is not finite in float32"),
        (lambda: validation.check_number(70000.0, "lr", lambda v: v > 0, "> 0", dtype=np.float16),
         "lr=70000.0 is not finite in float16"),
        (lambda: validation.check_number(1e-50, "eps", lambda v: v > 0, "> 0", dtype=np.float32),
         r"eps must be > 0, got 1e-50 \(0.0 in float32\)"),
        (lambda: validation.check_integer(0, "num_classes"), "num_classes must be an integer >= 1, got 0"),
        (lambda: validation.check_integer(2.0, "p", minimum=2), "p must be an integer >= 2, got 2.0"),
        (lambda: validation.check_integer(True, "seq_len"), "seq_len must be an integer >= 1, got True"),
        (lambda: validation.check_finite(np.array([[0.0, 1.0], [2.0, np.nan]]), "x_test"),
         r"x_test\[1, 1\]=nan is not finite in float32"),
        (lambda: validation.check_finite(np.array([0.0, 1e39]), "x_train"),
         r"x_train\[1\]=1e\+39 is not finite in float32"),
    ],
)
def test_one_line_errors_name_the_argument(call, message):
  with pytest.raises(ValueError, match=message):
    call()


def test_field_errors_name_their_field_for_whoever_knows_the_section():
  with pytest.raises(validation.FieldError) as caught:
    validation.check_integer(0, "hidden")
  assert caught.value.field == "hidden"
  inner = caught.value.within("backbone")
  assert (inner.field, str(inner)) == ("backbone.hidden",
                                       "backbone.hidden must be an integer >= 1, got 0")
  finite = validation.check_finite(np.array([1, 2], np.int64), "x")
  assert finite.dtype == np.float32 and finite.tolist() == [1.0, 2.0]


def test_valid_values_pass_and_come_back_as_arrays():
  validation.check_positive(1e-9, "s")
  validation.check_number(np.float32(-1.0), "s", lambda v: v > 0, "> 0")  # arrays are not checked
  assert validation.check_labels([0, 4], (2,), 5).dtype == jnp.int32
  validation.check_label_range(np.array([-1, 2]), 3, where=np.array([False, True]))  # left out
  mask = validation.check_mask(np.array([True, False]), (3, 2))
  assert mask.shape == (3, 2) and mask.dtype == bool
  numeric = validation.check_mask(np.array([1.0, 0.0]), (3, 2))  # flax's float masks
  np.testing.assert_array_equal(numeric, mask)
  assert validation.broadcast_to(2, (2,), name="s", dtype=jnp.float32).dtype == jnp.float32


def test_value_checks_skip_traced_values_but_shape_checks_do_not():
  @jax.jit
  def labels_and_scale(labels, s):
    validation.check_positive(s, "s")
    return validation.check_labels(labels, (2,), 3), s

  out, _ = labels_and_scale(jnp.array([0, 7]), -1.0)  # traced: no host round trip
  assert out.tolist() == [0, 7]
  with pytest.raises(ValueError, match=r"labels of shape \(3,\)"):
    labels_and_scale(jnp.zeros(3, jnp.int32), 1.0)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: normalizers.ssmax(jnp.ones((2, 3)), s=jnp.ones(2)),
         r"s of shape \(2,\) does not broadcast to x of shape \(2, 3\)"),
        (lambda: normalizers.softplus(jnp.ones((2, 3)), scale=jnp.ones((4, 1))),
         r"scale of shape \(4, 1\) does not broadcast to x of shape \(2, 3\)"),
        (lambda: normalizers.sigmoid(jnp.ones((2, 3)), bias=jnp.ones(2)),
         r"bias of shape \(2,\) does not broadcast to x of shape \(2, 3\)"),
        (lambda: losses.aldr_kl(jnp.ones((2, 3)), jnp.zeros(2, jnp.int32), jnp.ones(3)),
         r"lam of shape \(3,\) does not broadcast to the examples \(2,\)"),
        (lambda: metrics.accuracy(jnp.ones((2, 3)), jnp.array([0, 3])), None),
        (lambda: losses.linear_cross_entropy(jnp.ones((2, 4)), jnp.ones((4, 5)),
                                             jnp.array([0, 5])),
         r"labels must lie in \[0, 5\) for 5 vocabulary entries"),
        (lambda: optim.make_optimizer({"name": "sgd", "lr": 0.0}),
         "optimizer.lr must be a number > 0"),
    ],
)
def test_every_layer_names_the_argument(call, message):
  if message is None:  # metrics do not range-check labels (an unknown class is a miss)
    assert call().tolist() == [1.0, 0.0]
    return
  with pytest.raises(ValueError, match=message):
    call()


def test_shape_checked_hyperparameters_keep_working_per_head_and_under_grad():
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 3, 4)), jnp.float32)
  per_head = jnp.array([0.5, 1.0, 2.0])[None, :, None]
  np.testing.assert_allclose(normalizers.ssmax(x, s=per_head)[:, 1],
                             normalizers.ssmax(x[:, 1], s=1.0), rtol=1e-6)
  grad = jax.grad(lambda b: jnp.sum(normalizers.sigmoid(x, bias=b) ** 2))(jnp.zeros((3, 1)))
  assert grad.shape == (3, 1) and np.all(np.isfinite(grad))
