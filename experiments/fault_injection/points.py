"""Runs ``main.py`` or ``python -m data_prep build`` with named kill points.

  python -m experiments.fault_injection.points train|build ARGS...   (started by the harness)

Before each interesting moment the command announces it on a pipe (the file
descriptor in CRNN_JAX_FAULT_OUT) and waits for a byte on another
(CRNN_JAX_FAULT_IN), so the parent can SIGKILL it exactly there, or a chosen
delay after it. Without those variables the hooks do nothing: the command runs
as usual. The points are the phases named in ``experiments.fault_injection``.
"""

from __future__ import annotations

from crnn_jax.core import xla_defaults

xla_defaults.apply()  # before jax, as main.py does

import contextlib
import os
import runpy
import sys
from collections.abc import Callable, Iterator
from typing import Any

import orbax.checkpoint as ocp

from crnn_jax.core import storage
from crnn_jax.data import pipeline
from crnn_jax.train import trainer
from crnn_jax.workdir import integrity
from data_prep import __main__ as data_prep_main
from data_prep import build, decode, writer


def announce(phase: str) -> None:
  """Tells the parent where we are and waits until it lets us go on."""
  out, into = os.environ.get('CRNN_JAX_FAULT_OUT'), os.environ.get('CRNN_JAX_FAULT_IN')
  if out is None or into is None:
    return
  os.write(int(out), f'{phase}\n'.encode())
  os.read(int(into), 1)


def _before(phase: str, fn: Callable[..., Any]) -> Callable[..., Any]:
  def hooked(*args: Any, **kwargs: Any) -> Any:
    announce(phase)
    return fn(*args, **kwargs)
  return hooked


def install_training_points() -> None:
  batches = pipeline.train_batches

  def train_batches(*args: Any, **kwargs: Any) -> Iterator[Any]:
    for batch in batches(*args, **kwargs):
      announce('train_step')
      yield batch

  pipeline.train_batches = train_batches
  ocp.CheckpointManager.save = _before('checkpoint_save', ocp.CheckpointManager.save)
  integrity.write_manifest = _before('checkpoint_manifest', integrity.write_manifest)
  trainer.predict_split = _before('evaluation', trainer.predict_split)
  write = storage.atomic_write

  @contextlib.contextmanager
  def atomic_write(*args: Any, **kwargs: Any) -> Iterator[Any]:
    announce('file_write')
    with write(*args, **kwargs) as f:
      yield f

  storage.atomic_write = atomic_write


def install_build_points() -> None:
  # compute_track, not run_job: a job that a kill interrupted is rerun in a process of its
  # own (decode's crash isolation), which must be handed the real run_job.
  decode.compute_track = _before('decode', decode.compute_track)
  decode._atomic_savez = _before('cache_write', decode._atomic_savez)  # pylint: disable=protected-access
  writer.make_example = _before('dataset_write', writer.make_example)
  build.write_report = _before('report_write', build.write_report)


def main() -> None:
  target, args = sys.argv[1], sys.argv[2:]
  if target == 'train':
    install_training_points()
    sys.argv = ['main.py', *args]
    runpy.run_path('main.py', run_name='__main__')
  elif target == 'build':
    install_build_points()
    sys.argv = ['python -m data_prep', 'build', *args]
    sys.exit(data_prep_main.main(sys.argv[1:]))
  else:
    sys.exit(f'usage: python -m experiments.fault_injection.points train|build ARGS...; got {target!r}')


if __name__ == '__main__':
  main()
