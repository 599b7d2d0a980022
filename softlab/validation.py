"""Argument checks shared by every layer: one-line ValueErrors naming the argument.

Layer 0: imports nothing from softlab. Shape and dtype checks are static, so
they work on traced values under `jit`, `grad` and `vmap`; checks of values
(label ranges, hyperparameter bounds) run only on concrete inputs and let
traced ones pass, so a compiled function never needs a host round trip.
The shape and dtype tests are chex assertions; their AssertionErrors become
ValueErrors whose message names the argument and the expected value. A bad
value of one named option (a hyperparameter, a builder's config field) is a
`FieldError`, so whoever knows the config section holding it can name the
field in full (`softlab.trainers.base.building`: config.<section>.<field>).
"""

from collections.abc import Callable, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

_DTYPE_WORDS = {bool: "a boolean array", int: "integers", float: "a floating array"}


class FieldError(ValueError):
  """A bad value of the option `field`; the message is "<field><problem>".

  `problem` follows the name directly (" must be an integer >= 1, got 0",
  "=1e+39 is not finite in float32"), so a caller may qualify the name:
  `within("backbone")` is the same error about "backbone.<field>".
  """

  def __init__(self, field: str, problem: str):
    super().__init__(f"{field}{problem}")
    self.field = field
    self.problem = problem

  def within(self, section: str) -> "FieldError":
    """This error with its field named inside `section` (section.field)."""
    return FieldError(f"{section}.{self.field}", self.problem)


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
                 required: bool = False, dtype=None) -> None:
  """`valid(value)` for a hyperparameter given as a Python number.

  Other values (arrays, traced values) pass unless `required`, which demands a
  Python number (config fields). With `dtype`, the number is checked as it
  will run: finite in `dtype` ("lr=1e+39 is not finite in float32"), and
  `valid` applies to its value there (b2=0.99999999 is 1.0 in float32).
  FieldError "<name> must be <description>, got v" ("must be a number
  <description>" when required; "(w in float32)" added when the dtype changed
  the value).
  """
  number = is_number(value)
  kind = "a number " if required else ""
  if required and not number:
    raise FieldError(name, f" must be {kind}{description}, got {value!r}")
  if not number:
    return
  runs_as = value
  if dtype is not None:
    cast, problem = _finite_in(value, dtype)
    if problem:
      raise FieldError(name, problem)
    runs_as = cast.item()
  if not valid(runs_as):
    changed = f" ({runs_as!r} in {np.dtype(dtype).name})" if runs_as != value else ""
    raise FieldError(name, f" must be {kind}{description}, got {value!r}{changed}")


def check_positive(value, name: str) -> None:
  """A hyperparameter given as a Python number must be > 0 (traced values pass)."""
  check_number(value, name, lambda v: v > 0, "> 0")


def check_integer(value, name: str, *, minimum: int = 1) -> int:
  """`value`, which must be a Python int (not a bool) >= `minimum`.

  For sizes from a config (classes, widths, lengths): FieldError "<name> must
  be an integer >= 1, got 0" before an empty axis reaches an array.
  """
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise FieldError(name, f" must be an integer >= {minimum}, got {value!r}")
  return value


def _index_text(position: Sequence[int]) -> str:
  """"[3, 1]" for the array index (3, 1); "" for a scalar's ()."""
  return f"[{', '.join(str(int(i)) for i in position)}]" if len(position) else ""


def first_index(bad: np.ndarray) -> tuple[int, ...]:
  """The first position (row-major) where the boolean array `bad` is True."""
  return tuple(int(i) for i in np.argwhere(bad)[0])


def _finite_in(value, dtype) -> tuple[np.ndarray, str]:
  """(`value` cast to `dtype`, "" or the problem: "[3, 1]=nan is not finite in float32")."""
  given = np.asarray(value)
  with np.errstate(all="ignore"):
    cast = given.astype(dtype)
  bad = ~np.isfinite(cast)
  if not bad.any():
    return cast, ""
  position = first_index(bad)
  return cast, (f"{_index_text(position)}={given[position].item()!r} is not finite in "
                f"{np.dtype(dtype).name}")


def check_finite(value, name: str, *, dtype=np.float32) -> np.ndarray:
  """`value` (a number or a host array) cast to `dtype`, where all of it must be finite.

  A number within float64's range can still overflow the dtype a run computes
  in (1e39 is inf in float32). ValueError naming the first bad entry:
  "x_test[3, 1]=nan is not finite in float32".
  """
  cast, problem = _finite_in(value, dtype)
  if problem:
    raise ValueError(f"{name}{problem}")
  return cast


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


def boolean_mask(where, *, name: str = "where") -> jax.Array:
  """`where` as a boolean array: a numeric mask keeps its nonzero entries.

  Flax's mask helpers (make_attention_mask, make_causal_mask) return float
  0/1 masks, so a numeric mask means `where != 0`.
  """
  where = _array(where)
  if where.dtype == bool:
    return jnp.asarray(where)
  if not jnp.issubdtype(where.dtype, jnp.number):
    raise ValueError(f"{name} must be a boolean or numeric array, got dtype {where.dtype}")
  return jnp.asarray(where) != 0


def check_mask(where, shape: Sequence[int], *, name: str = "where", target: str = "x",
               hint: str = "") -> jax.Array:
  """A mask (boolean, or numeric: nonzero = keep) as booleans broadcast to `shape`.

  `shape` is the shape of the argument `target`.
  """
  where = boolean_mask(where, name=name)
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
