"""Runs a command with writes past a file size refused by the kernel, unprivileged.

  python tests/limited_writes.py BYTES [--after_first_checkpoint] main.py ARGS...
  python tests/limited_writes.py BYTES -m data_prep build ARGS...

RLIMIT_FSIZE (``ulimit -f``): a write that would take any file past BYTES
fails with EFBIG (CPython ignores SIGXFSZ, so the call fails instead of the
process dying), in this process and the processes it starts. To the code
under test this is a full disk: the same write call, in orbax's tensorstore,
TFDS's array_record or ``crnn_jax.core.storage``, fails partway through a file
with an errno of the storage (EFBIG instead of ENOSPC). It needs no mount and
no root, so tests/test_disk_full.py keeps its promises where a tmpfs cannot be
mounted. Unlike a full disk it limits each file, not their sum: with
``--after_first_checkpoint`` the limit starts once a training run's first
checkpoint is complete, so that one fits and the next does not.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout

from crnn_jax.core import xla_defaults

xla_defaults.apply()  # before jax, as main.py does

import resource
import runpy
from typing import Any


def limit_file_size(nbytes: int) -> None:
  _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
  resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))


def limit_after_first_checkpoint(nbytes: int) -> None:
  """The limit from the moment the first checkpoint's manifest is written (its last file)."""
  from crnn_jax.workdir import integrity
  write_manifest = integrity.write_manifest

  def then_limit(*args: Any, **kwargs: Any) -> Any:
    result = write_manifest(*args, **kwargs)
    limit_file_size(nbytes)
    return result

  integrity.write_manifest = then_limit


def main(argv: list[str]) -> None:
  nbytes, command = int(argv[0]), argv[1:]
  if command[0] == '--after_first_checkpoint':
    command = command[1:]
    limit_after_first_checkpoint(nbytes)
  else:
    limit_file_size(nbytes)
  if command[0] == '-m':
    sys.argv = command[1:]
    runpy.run_module(command[1], run_name='__main__', alter_sys=True)
  else:
    sys.argv = command
    runpy.run_path(command[0], run_name='__main__')


if __name__ == '__main__':
  main(sys.argv[1:])
