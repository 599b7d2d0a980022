"""Argument checks shared by every layer: one-line ValueErrors naming the argument.

Layer 0: imports nothing from softlab. Shape and dtype checks are static, so
they work on traced values under `jit`, `grad` and `vmap`; checks of values
(label ranges, hyperparameter bounds) run only on concrete inputs and let
traced ones pass, so a compiled function never needs a host round trip.
The shape and dtype tests are chex assertions; their AssertionErrors become
ValueErrors whose message names the argument and the expected value.
"""

from collections.abc import Callable, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

_DTYPE_WORDS = {bool: "a boolean array", int: "integers", float: "a floating array"}


def is_number(value) -> bool:
  """True for a Python int or float (not a bool, an array or a traced value)."""
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_concrete(*arrays) -> bool:
  """True when no argument is a tracer, so its values can be read on the host."""
  return not any(isinstance(a, jax.core.Tracer) for a in arrays)


def _array(value):
  """`value` as it was given if it is an array (messages show its own dtype), else NumPy's."""
  return value if hasattr(value, "dtype") and hasattr(value, "shape") else np.asarray(value)


def check_number(value, name: str, valid: Callable[[float], bool], description: str, *,
                 required: bool = False) -> None:
  """`valid(value)` for a hyperparameter given as a Python number.

  Other values (arrays, traced values) pass unless `required`, which demands a
  Python number (config fields). Message: "<name> must be <description>, got v"
  ("must be a number <description>" when required).
  """
  number = is_number(value)
  if (number and not valid(value)) or (required and not number):
    kind = "a number " if required else ""
    raise ValueError(f"{name} must be {kind}{description}, got {value!r}")


def check_positive(value, name: str) -> None:
  """A hyperparameter given as a Python number must be > 0 (traced values pass)."""
  check_number(value, name, lambda v: v > 0, "> 0")


def check_array(value, name: str, *, dtype: type, shape: Sequence[int] | None = None,
                shape_description: str | None = None) -> jax.Array:
  """`value` as an array of the dtype kind `dtype` (bool, int or float) and `shape`.

  Message: "<name> must be integers of shape (4,), got float32[3]" (or "a
  boolean array of <shape_description>" when given).
  """
  value = _array(value)
  try:
    chex.assert_type(value, dtype)
    if shape is not None:
      chex.assert_shape(value, tuple(shape))
  except AssertionError:
    expected = shape_description or ("" if shape is None else f"shape {tuple(shape)}")
    raise ValueError(f"{name} must be {_DTYPE_WORDS[dtype]}{' of ' if expected else ''}"
                     f"{expected}, got {value.dtype}{list(value.shape)}") from None
  return jnp.asarray(value)


def check_mask(where, shape: Sequence[int], *, name: str = "where", target: str = "x",
               hint: str = "") -> jax.Array:
  """A boolean mask broadcast to `shape` (the shape of the argument `target`)."""
  where = _array(where)
  try:
    chex.assert_type(where, bool)
  except AssertionError:
    raise ValueError(f"{name} must be a boolean array, got dtype {where.dtype}") from None
  return broadcast_to(where, shape, name=name, target=f"{target} of shape", hint=hint)


def broadcast_to(value, shape: Sequence[int], *, name: str, target: str = "shape", dtype=None,
                 hint: str = "") -> jax.Array:
  """`value` (in `dtype` if given) broadcast to `shape`.

  A scalar or per-head parameter (`s`, `scale`, `bias`, a margin, a mask) of
  the wrong shape gets "<name> of shape (3,) does not broadcast to <target>
  (2, 4)<hint>" (target e.g. "x of shape") instead of JAX's broadcasting error.
  """
  value = jnp.asarray(value) if dtype is None else jnp.asarray(value, dtype)
  shape = tuple(shape)
  try:
    chex.assert_is_broadcastable(value.shape, shape)
  except AssertionError:
    raise ValueError(f"{name} of shape {value.shape} does not broadcast to {target} {shape}"
                     f"{hint}") from None
  return jnp.broadcast_to(value, shape)


def check_labels(labels, shape: Sequence[int], num_classes: int | None = None, *,
                 name: str = "labels", shape_of: str = "logits without the class axis",
                 hint: str = "") -> jax.Array:
  """Integer class indices of `shape` (that of `shape_of`), in [0, num_classes).

  The range is checked when the labels are concrete and `num_classes` given.
  """
  labels = _array(labels)
  try:
    chex.assert_type(labels, int)
  except AssertionError:
    raise ValueError(f"{name} must be integer class indices, got dtype {labels.dtype}"
                     f"{hint}") from None
  if labels.shape != tuple(shape):
    raise ValueError(f"{name} of shape {labels.shape} must have the shape of {shape_of}, "
                     f"{tuple(shape)}")
  if num_classes is not None:
    check_label_range(labels, num_classes, name=name)
  return jnp.asarray(labels)


def check_label_range(labels, num_classes: int, *, where=None, name: str = "labels",
                      classes: str = "classes") -> None:
  """Concrete labels (those kept by `where`) lie in [0, num_classes); traced ones pass."""
  if not is_concrete(labels, where):
    return
  kept = np.asarray(labels) if where is None else np.asarray(labels)[np.asarray(where)]
  if kept.size and (kept.min() < 0 or kept.max() >= num_classes):
    raise ValueError(f"{name} must lie in [0, {num_classes}) for {num_classes} {classes}, "
                     f"got values in [{kept.min()}, {kept.max()}]")
