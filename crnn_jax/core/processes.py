"""Worker processes that never outlive the process that started them.

A build's decoding workers and grain's loader workers are started with
multiprocessing's 'spawn'. When their parent dies by a signal it cannot catch
(SIGKILL from a scheduler, the OOM killer), nothing tells them: they live on,
re-parented to init, with their memory; so does multiprocessing's resource
tracker, which waits until every holder of its pipe has exited.

``exit_with_parent``, run first in each worker, makes the worker exit within
a moment of its parent's death, by any cause. A thread of the worker waits on
the pipe multiprocessing keeps for this (``parent_process().join()``): the
parent holds its write end, the kernel closes it when the parent dies, and the
worker's end then reads end-of-file. The tracker, its pipe's last holders
gone, then exits too (unlinking anything still registered). Why this and not:

- ``prctl(PR_SET_PDEATHSIG)``: fires when the *thread* that started the worker
  exits, not the process, and grain starts its workers from helper threads;
  Linux only; a parent dead before the call is missed.
- a process group the parent leads: someone must signal the group when the
  parent dies, and a parent killed by SIGKILL runs no code.
- polling ``getppid()``: adds a delay, and wakes every worker for nothing.

A worker inside a long call that holds the GIL exits when the call returns
(decoding a clip takes well under a second).
"""

from __future__ import annotations

import multiprocessing
import os
import threading

EXIT_CODE = 1  # a worker whose parent died; no one reads it but init


def exit_with_parent(*_: object) -> bool:
  """Makes this process exit when its multiprocessing parent dies.

  Usable as a worker initializer of any signature (grain passes the worker's
  index and count). Returns False in a process that multiprocessing did not
  start (nothing to watch).
  """
  parent = multiprocessing.parent_process()
  if parent is None:
    return False
  threading.Thread(target=_exit_after, args=(parent,), name='exit-with-parent',
                   daemon=True).start()
  return True


def _exit_after(parent: multiprocessing.process.BaseProcess) -> None:
  parent.join()  # returns at end-of-file on the parent's pipe: the parent is gone
  os._exit(EXIT_CODE)  # no cleanup: nothing this worker holds is wanted any more
