"""Writing files so that a kill, a crash or a full disk never leaves half of one.

Every file the project writes for later reading (JSON, CSV, PNG, cached
spectrograms) goes through :func:`atomic_write`: the bytes land in a
temporary file beside the target, which replaces the target only when
complete. A reader therefore sees the old file or the new one, never a torn
one, and a failed write (ENOSPC, an exception, Ctrl-C) leaves the old file
as it was.

Storage that refuses a write (full, over quota, read-only, no permission, a
file over its size limit) is a :class:`StorageError`: one line naming the file
and what to do, raised by ``atomic_write`` and by :func:`raise_if_storage_error`
for the writers this module does not own (orbax, TFDS).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import threading
from collections.abc import Iterator
from typing import IO, Any

from crnn_jax.core.errors import UserError

# errno values that mean "the storage refuses", with what to tell the user.
STORAGE_ERRNOS = {
    errno.ENOSPC: ('disk full', 'free some space'),
    errno.EDQUOT: ('disk quota exceeded', 'free some space or raise the quota'),
    errno.EROFS: ('read-only file system', 'write somewhere else'),
    errno.EACCES: ('permission denied', 'fix the permissions or write somewhere else'),
    errno.EPERM: ('operation not permitted', 'fix the permissions or write somewhere else'),
    # A file over the file system's largest (FAT's 4 GiB) or the process's limit (ulimit -f).
    errno.EFBIG: ('file too large', 'raise the file size limit or write somewhere else'),
}
# Only writing can fail with these, so they are storage errors wherever raised.
_WRITE_ONLY_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)
# tensorstore (orbax) and absl-status texts carry the errno as text.
_STATUS_ERRNO = re.compile(r"os_error_code='?(\d+)")
_STATUS_TEXTS = {'No space left on device': errno.ENOSPC, 'Disk quota exceeded': errno.EDQUOT,
                 'Read-only file system': errno.EROFS, 'File too large': errno.EFBIG}


class StorageError(UserError, OSError):
  """A write the storage refused. ``str()`` is one line: what, where, what to do.

  An OSError (``errno``, ``filename``) as well as a UserError, so the entry
  points print it as one line and code catching OSError still does.
  """

  def __str__(self) -> str:
    what, fix = STORAGE_ERRNOS.get(self.errno, (self.strerror or 'write failed', 'fix it'))
    where = f' writing {self.filename!r}' if self.filename else ''
    return (f'{what}{where}: nothing written before was damaged; {fix}, then rerun the same '
            'command to continue')


def storage_errno(exc: BaseException) -> int | None:
  """The errno of a storage refusal behind ``exc`` (its cause chain, or the
  text of a tensorstore / absl status error), else None."""
  seen = set()
  e: BaseException | None = exc
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno in _WRITE_ONLY_ERRNOS:
      return e.errno
    text = str(e)
    match = _STATUS_ERRNO.search(text)
    if match and int(match.group(1)) in STORAGE_ERRNOS:
      return int(match.group(1))
    for phrase, code in _STATUS_TEXTS.items():
      if phrase in text:
        return code
    e = e.__cause__ or e.__context__
  return None


def raise_if_storage_error(exc: BaseException, path: str | os.PathLike) -> None:
  """Raises a StorageError for ``path`` when ``exc`` is a storage refusal."""
  if isinstance(exc, StorageError):
    raise exc
  code = storage_errno(exc)
  if code is not None:
    raise StorageError(code, os.strerror(code), os.fspath(path)) from exc


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
  files that must survive a power cut, not only a killed process). A full,
  read-only or forbidden destination raises StorageError.
  """
  path = os.fspath(path)
  tmp = _temporary_name(path)
  try:
    with _refused_as_storage_error(path, every_errno=True):
      os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
      f = open(tmp, mode, **open_kwargs)  # noqa: SIM115  closed by the block below
    with _refused_as_storage_error(path), f:
      yield f
      if fsync:
        f.flush()
        os.fsync(f.fileno())
    with _refused_as_storage_error(path, every_errno=True):
      os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


@contextlib.contextmanager
def _refused_as_storage_error(path: str, every_errno: bool = False) -> Iterator[None]:
  """OSErrors of the storage as StorageError. Permission errors only where
  ``every_errno`` (our own open/rename): inside a block they may come from
  reading some other file."""
  try:
    yield
  except StorageError:
    raise
  except OSError as e:
    if e.errno in _WRITE_ONLY_ERRNOS or (every_errno and e.errno in STORAGE_ERRNOS):
      raise StorageError(e.errno, e.strerror, path) from e
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


def sha256(path: str | os.PathLike) -> str:
  """The hex SHA-256 of a file's bytes, read a MiB at a time."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()
