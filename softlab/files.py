"""Files a run or a study writes, written so that no crash leaves them half-written.

`write_text` / `write_json` replace a file atomically: the content goes to a
temporary file in the same folder, is flushed to disk (fsync), then renamed over
the target, so a reader (or a rerun after kill -9) sees the old file or the new
one, never a truncated mix. `read_json` reads one back with a one-line error
naming the file. `WorkdirLock` holds an OS lock on a folder for one process.
"""

import contextlib
import fcntl
import json
import os
import tempfile
from typing import Any


class FileError(ValueError):
  """A file the user has is missing, unreadable or damaged: printed as one line."""


def write_text(path: str, text: str) -> None:
  """Replaces `path` with `text` atomically (temporary file, fsync, rename)."""
  folder = os.path.dirname(os.path.abspath(path))
  handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.",
                                       suffix=".tmp")
  try:
    with os.fdopen(handle, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(temporary, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.unlink(temporary)
    raise
  _sync_folder(folder)


def write_json(path: str, value: Any) -> None:
  """Replaces `path` with `value` as indented, key-sorted JSON, atomically."""
  write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def read_json(path: str) -> Any:
  """The JSON value in `path`; a FileError naming the file if it cannot be read or parsed."""
  try:
    with open(path) as f:
      return json.load(f)
  except OSError as error:
    raise FileError(f"{path} cannot be read ({error.strerror or error})") from None
  except ValueError as error:
    raise FileError(f"{path} is not valid JSON ({error}); it was damaged outside softlab"
                    " (softlab writes it atomically)") from None


def append_line(path: str, line: str) -> None:
  """Appends one newline-terminated line to `path`; on return it is the OS's, so it
  survives the process being killed (a reader skips a last line without its newline)."""
  with open(path, "a") as f:
    f.write(line)


class WorkdirLock:
  """An exclusive OS lock (flock) on `folder`/LOCK_NAME, held until `release()`.

  The lock file holds the holder's pid and command; a second process that asks
  for the lock gets a FileError naming them. The OS drops the lock when the
  holder exits, however it exits (kill -9 included), so no stale lock remains.
  """

  LOCK_NAME = ".lock"

  def __init__(self, folder: str, *, what: str):
    self.path = os.path.join(folder, self.LOCK_NAME)
    self.handle = open(self.path, "a+")
    try:
      fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      self.handle.seek(0)
      holder = self.handle.read().strip() or "another process"
      self.handle.close()
      raise FileError(f"{folder} is in use by {holder}; wait for it to finish or use another"
                      " folder") from None
    self.handle.seek(0)
    self.handle.truncate()
    self.handle.write(f"process {os.getpid()} ({what})")
    self.handle.flush()

  def release(self) -> None:
    if not self.handle.closed:
      self.handle.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.release()


def _sync_folder(folder: str) -> None:
  """Flushes a folder's entries (the rename) to disk where the OS allows it."""
  with contextlib.suppress(OSError):
    handle = os.open(folder, os.O_RDONLY)
    try:
      os.fsync(handle)
    finally:
      os.close(handle)

