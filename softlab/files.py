"""Files a run or a study writes, written so that no crash leaves them half-written.

`write_text` / `write_json` replace a file atomically: the content goes to a
temporary file in the same folder, is flushed to disk (fsync), then renamed over
the target, so a reader (or a rerun after kill -9) sees the old file or the new
one, never a truncated mix. `replacing` is that mechanism for any writer that
takes a file name (a plot's savefig). `read_json` reads one back with a one-line
error naming the file. `WorkdirLock` holds an OS lock on a folder for one process.
"""

import contextlib
import fcntl
import json
import os
import secrets
from collections.abc import Iterator
from typing import Any


class FileError(ValueError):
  """A file the user has is missing, unreadable or damaged: printed as one line."""


@contextlib.contextmanager
def replacing(path: str) -> Iterator[str]:
  """Yields a new temporary path beside `path`; when the block ends, moves it over `path`.

  For writers that take a file name (matplotlib's savefig) as well as our own:
  what the block writes there is flushed to disk (fsync) and renamed over
  `path` in one step, so `path` holds the old content or the new, never part of
  it. If the block raises, the temporary file is removed and `path` is
  untouched. The temporary file gets the mode `open` would give (0666 less the
  umask), so the result is not private the way a mkstemp file is.
  """
  folder, name = os.path.split(os.path.abspath(path))
  temporary = _create_beside(folder, name)
  try:
    yield temporary
    _sync_file(temporary)
    os.replace(temporary, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.unlink(temporary)
    raise
  _sync_folder(folder)


def write_text(path: str, text: str) -> None:
  """Replaces `path` with `text` atomically (temporary file, fsync, rename)."""
  with replacing(path) as temporary, open(temporary, "w") as f:
    f.write(text)


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


def _create_beside(folder: str, name: str) -> str:
  """Creates an empty, new file `.name.<random>.tmp` in `folder` (mode 0666 less the umask)."""
  while True:
    temporary = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.tmp")
    try:
      os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
      return temporary
    except FileExistsError:
      continue


def _sync_file(path: str) -> None:
  """Flushes a written file (or a folder's entries) to disk; a disk that is full or failing
  raises here."""
  handle = os.open(path, os.O_RDONLY)
  try:
    os.fsync(handle)
  finally:
    os.close(handle)


def _sync_folder(folder: str) -> None:
  """Flushes a folder's entries (the rename) to disk where the OS allows it."""
  with contextlib.suppress(OSError):
    _sync_file(folder)
