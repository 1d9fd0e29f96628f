"""Writing files so that a kill, a crash or a full disk never leaves half of one.

Every file the project writes for later reading (JSON, CSV, PNG, cached
spectrograms) goes through :func:`atomic_write`: the bytes land in a
temporary file beside the target, which replaces the target only when
complete. A reader therefore sees the old file or the new one, never a torn
one, and a failed write (ENOSPC, an exception, Ctrl-C) leaves the old file
as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator
from typing import IO, Any


def is_remote(path: str | os.PathLike) -> bool:
  """A path with a scheme (gs://, s3://, ...): read and written through
  etils.epath or Beam's file systems, never with ``open``."""
  return '://' in os.fspath(path)


def _temporary_name(path: str) -> str:
  """Unique per process and thread: concurrent writers never share a temp file."""
  return f'{path}.{os.getpid()}.{threading.get_ident()}.tmp'


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = 'w', fsync: bool = False,
                 **open_kwargs: Any) -> Iterator[IO]:
  """Opens a temporary file for writing; it replaces ``path`` when the block ends.

  If the block raises, the temporary file is removed and ``path`` is left as
  it was. ``fsync`` flushes the data to the device before the rename (for
  files that must survive a power cut, not only a killed process).
  """
  path = os.fspath(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = _temporary_name(path)
  try:
    with open(tmp, mode, **open_kwargs) as f:
      yield f
      if fsync:
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
  """Indented, key-sorted JSON, written atomically."""
  with atomic_write(path) as f:
    json.dump(obj, f, indent=2, sort_keys=True)
    f.write('\n')


def write_text(path: str | os.PathLike, text: str) -> None:
  with atomic_write(path, encoding='utf-8') as f:
    f.write(text)


def read_json(path: str | os.PathLike) -> Any:
  with open(path, encoding='utf-8') as f:
    return json.load(f)
