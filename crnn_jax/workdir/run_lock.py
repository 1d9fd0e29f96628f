"""One writer per workdir: ``WORKDIR/run.lock`` (a crnn_jax.core.file_lock).

Training, the LR range test and imports write a workdir, so they hold its
lock (the ``holds_workdir`` decorator); a second one refuses with one line
naming the holder. Reading a workdir (``--mode=eval`` of a finished run,
predict, export) takes no lock.

A multi-process run holds one lock: process 0 takes it and tells the others
the outcome, so either every process runs or every process stops with the
same message.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import jax
import numpy as np
from jax.experimental import multihost_utils

from crnn_jax.core.errors import UserError
from crnn_jax.core.file_lock import FileLock, LockHeld, holding
from crnn_jax.workdir import checkpoints, files

LOCK_FILE = 'run.lock'
_MESSAGE_BYTES = 2048  # the refusal, sent from process 0 to the others
F = TypeVar('F', bound=Callable[..., Any])


def lock_path(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), LOCK_FILE)


@contextlib.contextmanager
def hold(workdir: str, purpose: str) -> Iterator[None]:
  """Holds the workdir's lock (process 0 for all processes) for the block.

  On entry the holder also removes what a killed predecessor left half-done
  (orbax's temporary folders of an interrupted save): only the lock holder
  writes checkpoints, so only it may.
  """
  workdir = files.ensure_workdir(workdir)
  lock, refusal = None, None
  if jax.process_index() == 0:
    try:
      lock = FileLock(lock_path(workdir), purpose).acquire()
    except UserError as e:
      refusal = e
  if jax.process_count() > 1:
    text = _from_process_0(str(refusal or ''))
    refusal = refusal or (LockHeld(text) if text else None)
  if refusal:
    raise refusal
  try:
    if lock is not None:
      checkpoints.remove_unfinished_saves(workdir)
    yield
  finally:
    if lock is not None:
      lock.release()


def holds_workdir(purpose: str) -> Callable[[F], F]:
  """Decorates a function with a ``workdir`` argument: it runs holding that
  workdir's lock."""
  return holding(lambda workdir: hold(workdir, purpose))


def _from_process_0(text: str) -> str:
  """Process 0's ``text`` on every process."""
  data = np.zeros(_MESSAGE_BYTES, np.uint8)
  raw = text.encode('utf-8', 'replace')[:_MESSAGE_BYTES]
  data[:len(raw)] = np.frombuffer(raw, np.uint8)
  data = np.asarray(multihost_utils.broadcast_one_to_all(data))
  return bytes(data).rstrip(b'\0').decode('utf-8', 'replace')
