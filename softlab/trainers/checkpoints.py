"""Checkpoints that prove themselves: a checksum of the state saved beside it, verified
on restore; nothing non-finite saved; nothing the user had deleted.

A checkpoint is an orbax step folder with two items: `state` (the train state)
and `meta` ({"checksum": ..., "config": the run's config}). The checksum is
computed on the devices from the state's bits (`fingerprint`), so it needs no
host copy of sharded parameters and is the same on every process.

Restoring (`restore_newest`) tries the newest step first:
  - a step whose stored shapes differ from this run's state is a ConfigError
    (the data or model changed since; nothing is touched);
  - a step that cannot be read for permissions is a FileError (nothing touched);
  - a step that is damaged (unreadable files, checksum mismatch, non-finite
    values) is moved aside to `<workdir>/damaged_checkpoints/` with a one-line
    warning naming it, and the previous step is tried.
Saving (`Checkpoints.save`) is synchronous, so a failed write (full disk,
read-only folder) ends the run at once with a one-line `CheckpointWriteError`.
"""

import contextlib
import gc
import logging
import os
import re
import sys
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from softlab.files import FileError
from softlab.experiment import ConfigError

DAMAGED_FOLDER = "damaged_checkpoints"
# Two odd multipliers give two independent 32-bit position-weighted sums: a
# changed word changes each sum (odd numbers are invertible mod 2**32), and
# several changes cancel in both with probability about 2**-64.
_MULTIPLIERS = (0x9E3779B1, 0x85EBCA77)


class CheckpointWriteError(FileError):
  """A checkpoint could not be written (full disk, read-only folder): the run stops."""


def _words(leaf: jax.Array) -> jax.Array:
  """The leaf's bits as a flat uint32 vector (narrower types widened, wider ones split)."""
  if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
    leaf = jax.random.key_data(leaf)
  if leaf.dtype == jnp.bool_:
    return leaf.astype(jnp.uint32).ravel()
  unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[leaf.dtype.itemsize]
  return jax.lax.bitcast_convert_type(leaf, unsigned).astype(jnp.uint32).ravel()


@jax.jit
def fingerprint(state) -> tuple[jax.Array, jax.Array]:
  """(every floating value finite, [2] uint32 checksum of every leaf's bits, in order)."""
  leaves = jax.tree.leaves(state)
  finite = jnp.array(True)
  sums = jnp.zeros(2, jnp.uint32)
  for index, leaf in enumerate(leaves):
    if jnp.issubdtype(leaf.dtype, jnp.inexact):
      finite &= jnp.all(jnp.isfinite(leaf))
    words = _words(leaf)
    positions = jnp.arange(words.size, dtype=jnp.uint32) + jnp.uint32(index * 0x01000193)
    for i, multiplier in enumerate(_MULTIPLIERS):
      mixed = (words ^ (positions * jnp.uint32(multiplier))) * jnp.uint32(multiplier | 1)
      sums = sums.at[i].set(sums[i] * jnp.uint32(31) + jnp.sum(mixed, dtype=jnp.uint32))
  return finite, sums


def host_fingerprint(state) -> tuple[bool, int]:
  """`fingerprint` on the host: (finite, the checksum as one 64-bit integer)."""
  finite, sums = fingerprint(state)
  first, second = (int(x) for x in np.asarray(sums.addressable_data(0)))
  return bool(np.asarray(finite.addressable_data(0))), first << 32 | second


def _reason(error: BaseException) -> str:
  """An error in a few words for a one-line message: the OS's reason when there is one
  (TensorStore reports it as os_error_code), else its first line, shortened."""
  if isinstance(error, OSError) and error.strerror:
    return error.strerror
  text = str(error)
  code = re.search(r"os_error_code='(\d+)'", text)
  if code:
    return os.strerror(int(code.group(1)))
  first = (text.strip().splitlines() or [type(error).__name__])[0]
  return first.split(" See full TensorStore details")[0][:160]


def _permission_error(error: BaseException) -> PermissionError | None:
  """The PermissionError somewhere in `error`'s chain of causes, or None."""
  while error is not None:
    if isinstance(error, PermissionError):
      return error
    error = error.__cause__ or error.__context__
  return None


def _named_leaves(tree) -> dict[str, Any]:
  """'a/b/0/c' -> leaf: paths by name alone (orbax stores a namedtuple's fields as dict keys)."""
  name = lambda key: str(getattr(key, "key", getattr(key, "name", getattr(key, "idx", key))))
  return {"/".join(map(name, path)): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _shape_mismatch(stored, abstract) -> str | None:
  """'path: shape (a) in the checkpoint, (b) now' for the first leaf that differs, or None."""
  stored, abstract = _named_leaves(stored), _named_leaves(abstract)
  for path, leaf in abstract.items():
    if path not in stored:
      return f"{path} is not in the checkpoint"
    old = stored[path]
    if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):  # stored as its key data
      continue
    if tuple(old.shape) != tuple(leaf.shape) or np.dtype(old.dtype) != np.dtype(leaf.dtype):
      return (f"{path}: {np.dtype(old.dtype).name}{tuple(old.shape)} in the checkpoint,"
              f" {np.dtype(leaf.dtype).name}{tuple(leaf.shape)} now")
  extra = sorted(set(stored) - set(abstract))
  return f"{extra[0]} is only in the checkpoint" if extra else None


@contextlib.contextmanager
def _orbax_quiet():
  """Drops orbax's own reports of a failed read or write (its threads' logged tracebacks,
  'Exception ignored in ...' from abandoned reads): the failure is reported in one line."""
  logger = logging.getLogger("absl")
  previous_hook, sys.unraisablehook = sys.unraisablehook, lambda unraisable: None
  previous_disabled, logger.disabled = logger.disabled, True
  try:
    yield
  finally:
    gc.collect()
    sys.unraisablehook, logger.disabled = previous_hook, previous_disabled


class Checkpoints:
  """The checkpoints of one workdir: `save`, `restore_newest`, `steps`, `latest_step`."""

  def __init__(self, workdir: str, *, max_to_keep: int = 2):
    self.workdir = workdir
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                             enable_async_checkpointing=False,
                                             cleanup_tmp_directories=True),
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "meta": ocp.JsonCheckpointHandler()})

  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, *, config: dict) -> None:
    """Writes `state` at `step` with its checksum and `config`; a state with a non-finite
    value is never written: a FloatingPointError names the step and the last good one."""
    finite, checksum = host_fingerprint(state)
    if not finite:
      last_good = self.latest_step()
      raise FloatingPointError(
          f"non-finite parameters or optimizer state after step {step} (not saved); last good"
          f" checkpoint: {'none' if last_good is None else f'step {last_good}'} in"
          f" {self.workdir}")
    try:
      with _orbax_quiet():
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            meta=ocp.args.JsonSave({"checksum": checksum, "config": config})))
    except Exception as error:  # orbax and TensorStore raise many kinds for a failed write
      kept = [s for s in self.steps() if s != step]
      raise CheckpointWriteError(
          f"the checkpoint at step {step} could not be written to {self.directory}"
          f" ({_reason(error)}); the run stopped, its earlier checkpoints"
          f" ({', '.join(map(str, kept)) or 'none'}) are kept") from None

  def config_of(self, step: int) -> dict | None:
    """The config saved with the checkpoint at `step` (None if it cannot be read)."""
    try:
      with _orbax_quiet():
        meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
      return meta["meta"]["config"]
    except Exception:  # a damaged checkpoint: restore_newest deals with it
      return None

  def restore_newest(self, like=None, *, report: Callable[[str], None]
                     ) -> tuple[Any, int] | None:
    """(state, step) from the newest checkpoint that verifies, or None if none does.

    `like` is a state of this run (its shapes, dtypes and placement), or None to
    take the checkpoint's own (on the default device). Damaged checkpoints are
    moved aside and reported; see the module docstring.
    """
    abstract = None if like is None else jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    for step in reversed(self.steps()):
      try:
        with _orbax_quiet():
          stored = self.manager.item_metadata(step)["state"]
        if stored is None:
          raise ValueError("no state metadata")
      except Exception as error:
        self._unreadable(step, error, report)
        continue
      mismatch = abstract is not None and _shape_mismatch(stored.tree, abstract)
      if mismatch:
        raise ConfigError(
            f"the checkpoint at step {step} in {self.directory} does not fit this run's state"
            f" ({mismatch}): the data or model changed since it was written; restore them or"
            " use a new --workdir")
      try:
        with _orbax_quiet():
          restored = self.manager.restore(step, args=ocp.args.Composite(
              state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
      except Exception as error:
        self._unreadable(step, error, report)
        continue
      finite, checksum = host_fingerprint(restored["state"])
      if not finite or checksum != restored["meta"].get("checksum"):
        self._move_aside(step, "its checksum does not match its contents" if finite
                         else "it holds non-finite values", report)
        continue
      return restored["state"], step
    return None

  def _unreadable(self, step: int, error: BaseException, report) -> None:
    denied = _permission_error(error)
    if denied is not None:
      raise FileError(f"the checkpoint at step {step} in {self.directory} cannot be read"
                      f" ({denied.strerror}: {denied.filename}); fix its permissions and rerun")
    self._move_aside(step, f"it cannot be read: {_reason(error)}", report)

  def _move_aside(self, step: int, why: str, report) -> None:
    """Renames a damaged step folder into DAMAGED_FOLDER (never deletes it)."""
    folder = os.path.join(self.workdir, DAMAGED_FOLDER)
    os.makedirs(folder, exist_ok=True)
    target, copy = os.path.join(folder, str(step)), 1
    while os.path.exists(target):
      copy += 1
      target = os.path.join(folder, f"{step}.{copy}")
    os.rename(os.path.join(self.directory, str(step)), target)
    self.manager.reload()
    report(f"softlab: the checkpoint at step {step} is damaged ({why}); moved to {target};"
           " falling back to the previous one")
