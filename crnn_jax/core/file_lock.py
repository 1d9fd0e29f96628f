"""One writer at a time: a lock file that names its holder.

A run that writes a workdir (training, the LR range test, an import) or a data
set (``data_prep build``) holds a lock file beside what it writes. A second
run refuses with one line naming the holder: host, process id, since when and
what it runs. The lock file holds JSON, created in one step (a hard link of a
finished file), so it is never seen half-written, also on NFS.

A lock left behind by a run that was killed (SIGKILL, OOM killer, power cut)
is taken over, with a warning, when it is provably stale:

  * it was taken on this machine (same host name, same boot, same PID
    namespace) by a process that no longer exists, or whose PID now belongs
    to a process started later (PID reuse: the start time, in clock ticks
    since boot from /proc/PID/stat, differs); or
  * it was taken on this host name before the last reboot (another boot id).

A lock taken on another machine, or in another container (another PID
namespace), cannot be checked from here and is never taken over: the message
says so, and that the lock file may be deleted by hand once that run is known
to be gone. Two processes breaking the same stale lock at once are serialised
with ``flock`` on the stale file, so only one of them removes it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import fcntl
import functools
import inspect
import json
import os
import secrets
import socket
import sys
from collections.abc import Callable
from typing import Any, Self, TypeVar

from crnn_jax.core import storage
from crnn_jax.core.errors import UserError

F = TypeVar('F', bound=Callable[..., Any])


class LockHeld(UserError):
  """Another live run holds the lock."""


@dataclasses.dataclass(frozen=True)
class Holder:
  """Who holds a lock: enough to tell whether that process is still running."""
  host: str
  pid: int
  started: int | None  # start time in clock ticks after boot (Linux), else None
  boot_id: str | None
  pid_namespace: int | None
  since: str  # ISO 8601, UTC
  purpose: str
  command: str
  token: str  # unique per acquisition: a release removes only its own lock

  @classmethod
  def of_this_process(cls, purpose: str) -> Holder:
    pid = os.getpid()
    return cls(host=socket.gethostname(), pid=pid, started=_start_ticks(pid),
               boot_id=_boot_id(), pid_namespace=_pid_namespace(),
               since=datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds'),
               purpose=purpose, command=' '.join(sys.argv)[:300], token=secrets.token_hex(8))

  @classmethod
  def from_json(cls, text: str) -> Holder:
    d = json.loads(text)
    if not isinstance(d, dict) or not isinstance(d.get('host'), str) or \
       not isinstance(d.get('pid'), int):
      raise TypeError('no host and pid in it')
    return cls(**{f.name: d.get(f.name) for f in dataclasses.fields(cls)})

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), sort_keys=True) + '\n'

  def describe(self) -> str:
    return (f'{self.purpose or "a run"} on host {self.host}, pid {self.pid}, since '
            f'{self.since}' + (f' ({self.command})' if self.command else ''))


def _read_text(path: str) -> str | None:
  try:
    with open(path, encoding='utf-8') as f:
      return f.read()
  except OSError:
    return None


def _start_ticks(pid: int) -> int | None:
  """A process's start time (clock ticks after boot), or None where /proc has none."""
  text = _read_text(f'/proc/{pid}/stat')
  if not text:
    return None
  # Field 2 (the command) may hold spaces and parentheses: split after its last ')'.
  return int(text[text.rindex(')') + 2:].split()[19])


def _boot_id() -> str | None:
  text = _read_text('/proc/sys/kernel/random/boot_id')
  return text.strip() if text else None


def _pid_namespace() -> int | None:
  try:
    return os.stat('/proc/self/ns/pid').st_ino
  except OSError:
    return None


def stale_reason(holder: Holder) -> str | None:
  """Why ``holder`` is certainly gone, or None when it may be running (or
  cannot be checked from this machine)."""
  if holder.host != socket.gethostname():
    return None
  if holder.boot_id and _boot_id() and holder.boot_id != _boot_id():
    return 'this machine was restarted since'
  if holder.pid_namespace != _pid_namespace():
    return None  # another container with the same host name: its PIDs are not ours
  try:
    os.kill(holder.pid, 0)
  except ProcessLookupError:
    return f'process {holder.pid} no longer exists'
  except PermissionError:
    pass  # exists, owned by another user
  if holder.started is not None and _start_ticks(holder.pid) not in (None, holder.started):
    return f'process {holder.pid} ended; that PID now belongs to a later process'
  return None


class FileLock:
  """An exclusive lock on whatever ``path`` guards (see the module docstring).

  Use as a context manager, or ``acquire()`` / ``release()``.
  """

  def __init__(self, path: str | os.PathLike, purpose: str, warn: Any = None):
    self.path = os.path.abspath(os.fspath(path))
    self.purpose = purpose
    self.holder: Holder | None = None
    self._warn = warn or (lambda message: print(message, file=sys.stderr, flush=True))

  def __enter__(self) -> Self:
    return self.acquire()

  def __exit__(self, *exc: object) -> None:
    self.release()

  def acquire(self) -> Self:
    """Takes the lock, breaking a stale one; LockHeld when a live run holds it."""
    if self.holder is not None:
      raise RuntimeError(f'{self.path} is already held by this FileLock')
    me = Holder.of_this_process(self.purpose)
    for _ in range(5):  # each pass either ends or removed a stale lock / saw one vanish
      if self._create_or_storage_error(me):
        self.holder = me
        return self
      holder = self.current_holder()
      if holder is None:
        continue  # released meanwhile
      reason = stale_reason(holder)
      if reason is None:
        raise LockHeld(self._refusal(holder))
      if self._break(holder):
        self._warn(f'warning: took over the stale lock {self.path} of {holder.describe()}: '
                   f'{reason}')
    raise LockHeld(f'could not take the lock {self.path}: other runs keep taking it')

  def release(self) -> None:
    """Removes the lock if it is still ours (a run that lost it removes nothing)."""
    holder, self.holder = self.holder, None
    if holder is not None and self.current_holder() == holder:
      with contextlib.suppress(FileNotFoundError):
        os.remove(self.path)

  def current_holder(self) -> Holder | None:
    """The holder written in the lock file; None when there is no lock file."""
    text = _read_text(self.path)
    if text is None:
      return None
    try:
      return Holder.from_json(text)
    except (ValueError, TypeError) as e:
      raise LockHeld(f'the lock file {self.path} is unreadable ({e}); delete it if no run is '
                     'using this folder') from None

  def _refusal(self, holder: Holder) -> str:
    where = ('this machine' if holder.host == socket.gethostname() and
             holder.pid_namespace == _pid_namespace() else 'another machine or container')
    hint = ('wait for it to finish or stop it' if where == 'this machine' else
            f'it runs on {where}, which cannot be checked from here: wait for it, or delete '
            f'{self.path} if you are sure that run is gone')
    return (f'{os.path.dirname(self.path)} is in use by {holder.describe()}; {hint} '
            '(one writer at a time)')

  def _create_or_storage_error(self, me: Holder) -> bool:
    try:
      os.makedirs(os.path.dirname(self.path), exist_ok=True)
      return self._create(me)
    except OSError as e:
      storage.raise_if_storage_error(e, self.path)
      raise

  def _create(self, me: Holder) -> bool:
    """Writes our lock file in one step; False if a lock file exists."""
    tmp = f'{self.path}.{me.host}.{me.pid}.{me.token}.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
      f.write(me.to_json())
      f.flush()
      os.fsync(f.fileno())
    try:
      os.link(tmp, self.path)
      return True
    except FileExistsError:
      return False
    except OSError as e:  # a file system without hard links: exclusive create
      if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
        raise
      return self._create_exclusive(me)
    finally:
      os.remove(tmp)

  def _create_exclusive(self, me: Holder) -> bool:
    try:
      fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, 'w', encoding='utf-8') as f:
      f.write(me.to_json())
    return True

  def _break(self, stale: Holder) -> bool:
    """Removes the lock file if it still is ``stale``'s; True if this call removed it."""
    try:
      fd = os.open(self.path, os.O_RDONLY)
    except FileNotFoundError:
      return False
    try:
      fcntl.flock(fd, fcntl.LOCK_EX)
      try:  # still the same file (not replaced since we opened it), still that holder?
        same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
      except FileNotFoundError:
        return False
      with os.fdopen(os.dup(fd), encoding='utf-8') as f:
        text = f.read()
      if not same or Holder.from_json(text) != stale:
        return False
      os.remove(self.path)
      return True
    finally:
      os.close(fd)  # also releases the flock


def holding(lock_of: Callable[..., contextlib.AbstractContextManager]) -> Callable[[F], F]:
  """Decorates a function to run inside the lock ``lock_of(...)`` returns, which
  is called with the decorated function's arguments of the same names."""
  wanted = list(inspect.signature(lock_of).parameters)

  def decorate(fn: F) -> F:
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def locked(*args: Any, **kwargs: Any) -> Any:
      bound = signature.bind(*args, **kwargs)
      bound.apply_defaults()
      with lock_of(**{k: bound.arguments[k] for k in wanted}):
        return fn(*args, **kwargs)
    return locked  # type: ignore[return-value]
  return decorate


def exclusive(lock_path_of: Callable[..., str], purpose: str) -> Callable[[F], F]:
  """Decorates a function to run holding the lock file at ``lock_path_of(...)``,
  e.g. ``@exclusive(lambda data_dir, name: f'{data_dir}/{name}.lock', 'a build')``."""

  @functools.wraps(lock_path_of)  # its signature: the arguments ``holding`` passes
  def lock_of(*args: Any, **kwargs: Any) -> FileLock:
    return FileLock(lock_path_of(*args, **kwargs), purpose)
  return holding(lock_of)
