"""Orbax checkpoints of a workdir: save, restore into a given state, or read
only the model's variables (for prediction and export, which need no optimiser).

``checkpoints/`` holds the latest steps (training resumes from them);
``checkpoints_best/`` the best one by a validation metric, when the run keeps
it (config.train.best_metric). Evaluation and prediction read the best where
there is one (``checkpoint='best'``), else the latest.

Orbax writes each checkpoint to a temporary folder and renames it when
complete, so a run killed mid-save still finds its previous checkpoint; a
full disk during a save is a StorageError and leaves the previous one as it
was. Every restore goes through ``restore_intact``: the newest checkpoint
that reads back intact is used, newer damaged ones are reported and moved
aside (crnn_jax.workdir.integrity), and a checkpoint of another model is
told apart from a damaged one by its recorded shapes, not by error texts.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import glob
import io
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from crnn_jax.core import files as core_files
from crnn_jax.core.errors import UserError
from crnn_jax.workdir import files, integrity

T = TypeVar('T')
# Errors of reading damaged files (tensorstore and JSON raise ValueError, which
# orbax may wrap in a bare Exception); an error without one of these in its
# chain (TypeError, AttributeError, ...) is a bug, never "damage".
READ_ERRORS = (ValueError, OSError, KeyError, EOFError)

CHECKPOINT_DIR = 'checkpoints'
BEST_DIR = 'checkpoints_best'
CHOICES = ('best', 'latest')


def manager(workdir: str, max_to_keep: int = 2, directory: str = CHECKPOINT_DIR
            ) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      os.path.join(os.path.abspath(workdir), directory),
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=False),
      # Handlers named up front: metadata can then be read before any restore.
      item_handlers={'state': ocp.StandardCheckpointHandler(),
                     'meta': ocp.JsonCheckpointHandler()})


def best_manager(workdir: str) -> ocp.CheckpointManager:
  return manager(workdir, max_to_keep=1, directory=BEST_DIR)


def chosen_directory(workdir: str, checkpoint: str = 'best') -> str:
  """The folder of the checkpoint to evaluate or predict with: the best where
  the run kept one and ``checkpoint`` is 'best', else the latest."""
  if checkpoint not in CHOICES:
    raise UserError(f"checkpoint {checkpoint!r}: use 'best' or 'latest'")
  best = os.path.join(os.path.abspath(workdir), BEST_DIR)
  if checkpoint == 'best' and os.path.isdir(best) and ocp.utils.checkpoint_steps(best):
    return BEST_DIR
  return CHECKPOINT_DIR


def best_else_latest(chosen: str, read_best: Callable[[], T | None],
                     read_latest: Callable[[], T | None], warn: Callable[[str], Any]) -> T | None:
  """``read_best()`` where ``chosen`` (``chosen_directory``) is the best
  checkpoint and one reads back intact, else ``read_latest()``: a damaged best
  checkpoint (reported and moved aside by ``restore_intact``) costs a warning,
  not the evaluation or the prediction."""
  if chosen == BEST_DIR:
    try:
      found = read_best()
    except UserError as e:
      warn(f'warning: {e}; using the latest checkpoint')
      found = None
    if found is not None:
      return found
  return read_latest()


def save(mgr: ocp.CheckpointManager, step: int, state: Any, meta: Mapping[str, Any]) -> None:
  """Saves and waits, then records the files' manifest. A step saved before (a
  stop at an epoch's last batch, then the resumed run's end-of-epoch save) is
  replaced: the newer meta wins. A refusing disk is a StorageError."""
  if step in mgr.all_steps():
    mgr.delete(step)
  if jax.process_index() == 0:
    _check_free_space(str(mgr.directory), state)
  try:
    with _quiet_failures():
      mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                             meta=ocp.args.JsonSave(dict(meta))), force=True)
      mgr.wait_until_finished()
  except Exception as e:
    if jax.process_index() == 0:
      _remove_unfinished(str(mgr.directory), step)
    core_files.raise_if_storage_error(e, os.path.join(str(mgr.directory), str(step)))
    raise
  if jax.process_index() == 0:
    integrity.write_manifest(os.path.join(str(mgr.directory), str(step)))


@contextlib.contextmanager
def _quiet_failures() -> Iterator[None]:
  """When orbax fails (a full disk, a damaged file), each of its parallel reads
  or writes reports it from its thread (absl and asyncio logs, tracebacks of
  callbacks on a closed event loop, coroutines never awaited); the one error
  raised says it once. What a successful call prints is passed on."""
  loggers = [logging.getLogger(name) for name in ('absl', 'asyncio')]
  levels = [logger.level for logger in loggers]
  stderr, sys.stderr = sys.stderr, io.StringIO()
  unraisable, sys.unraisablehook = sys.unraisablehook, lambda _: None
  for logger in loggers:
    logger.setLevel(logging.CRITICAL)
  try:
    yield
    stderr.write(sys.stderr.getvalue())
  except BaseException:
    time.sleep(0.5)  # stragglers report within milliseconds
    gc.collect()  # failed futures and coroutines report when collected: now, while quiet
    raise
  finally:
    sys.stderr, sys.unraisablehook = stderr, unraisable
    for logger, level in zip(loggers, levels):
      logger.setLevel(level)


def _check_free_space(directory: str, state: Any) -> None:
  """A StorageError before writing anything when the state clearly does not
  fit (quotas and other writers can still fill the disk during the save)."""
  need = sum(int(getattr(x, 'nbytes', 0)) for x in jax.tree_util.tree_leaves(state))
  need = int(need * 1.1) + (1 << 20)  # orbax's metadata and index files
  try:
    free = shutil.disk_usage(directory).free
  except OSError:
    return
  if free < need:
    raise core_files.StorageError(errno.ENOSPC, os.strerror(errno.ENOSPC), directory)


def _remove_unfinished(directory: str, step: int | str = '*') -> None:
  for tmp in glob.glob(os.path.join(directory, f'{step}.orbax-checkpoint-tmp*')):
    shutil.rmtree(tmp, ignore_errors=True)


def remove_unfinished_saves(workdir: str) -> None:
  """Deletes orbax's temporary folders of saves that never finished (a killed
  run's). Only the workdir's lock holder may call it: it alone saves."""
  for directory in (CHECKPOINT_DIR, BEST_DIR):
    _remove_unfinished(os.path.join(os.path.abspath(workdir), directory))


def restore_intact(mgr: ocp.CheckpointManager, read: Callable[[int], T],
                   fits: Callable[[int], None] | None = None) -> tuple[int, T] | None:
  """(step, read(step)) of the newest checkpoint that reads back intact; None
  when there is no checkpoint. The one way every restore path reads.

  Newer checkpoints that are damaged (files unlike their manifest, or
  unreadable) are reported on stderr with the step, the file and what failed,
  moved aside by process 0 (integrity.move_aside; never deleted) and skipped.
  ``fits(step)`` raises UserError for an intact checkpoint of another model;
  that stops the search (nothing is moved). A UserError says so when
  checkpoints exist but none is intact.
  """
  damaged: list[integrity.Damage] = []
  for step in sorted(mgr.all_steps(), reverse=True):
    step_dir = os.path.join(str(mgr.directory), str(step))
    vouched, damage = integrity.verify(step_dir, step)
    if damage is None:
      try:
        if fits is not None:
          fits(step)
        with _quiet_failures():
          result = read(step)
      except Exception as e:
        if integrity.cause_of_type(e, READ_ERRORS) is None:
          raise
        if vouched:  # every byte is as written: not damage, so not ours to hide
          raise UserError(f'checkpoint {step_dir} cannot be read although its files are as '
                          f'written: {" ".join(str(e).split())[:300]}') from e
        if not os.path.isdir(step_dir):
          continue  # removed meanwhile by the run that owns it (max_to_keep)
        damage = integrity.damage_from_error(
            step, step_dir, integrity.cause_of_type(e, READ_ERRORS) or e)
      else:
        if damaged:
          mgr.reload()  # forget the steps moved aside
          _warn(f'warning: using step {step}, the newest intact checkpoint in {mgr.directory}')
        return step, result
    damaged.append(damage)
    _set_aside(step_dir, damage)
  if damaged:
    mgr.reload()
    raise UserError(f'no intact checkpoint in {mgr.directory}: {len(damaged)} damaged '
                    f'({damaged[0].describe()}); they were moved to {mgr.directory}_damaged/. '
                    'Train again in this workdir (or a fresh one) to start over')
  return None


def _set_aside(step_dir: str, damage: integrity.Damage) -> None:
  where = 'left in place'
  if jax.process_index() == 0:
    try:
      where = f'moved to {integrity.move_aside(step_dir, damage)}'
    except OSError as e:
      where = f'left in place (cannot move it: {e.strerror or e})'
  _warn(f'warning: damaged checkpoint {damage.describe()}; {where}')


def _warn(message: str) -> None:
  if jax.process_index() == 0:
    print(message, file=sys.stderr, flush=True)


def _leaf_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """{'params/conv1/kernel': shape, ...}: dataclass fields and dict keys alike."""
  def name(key: Any) -> str:
    for attr in ('name', 'key', 'idx'):
      if hasattr(key, attr):
        return str(getattr(key, attr))
    return str(key)
  return {'/'.join(name(k) for k in path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _shape_check(mgr: ocp.CheckpointManager, target_state: Any,
                 config: ml_collections.ConfigDict | None) -> Callable[[int], None]:
  """fits(step) for restore_intact: the checkpoint's recorded shapes (orbax
  metadata, no array read) against the target's; a UserError saying why they
  differ: another config (config.json compared with ``config``) or another
  data set."""
  want = _leaf_shapes(target_state)

  def fits(step: int) -> None:
    got = _leaf_shapes(mgr.item_metadata(step)['state'].tree)
    if got == want:
      return
    first = next(k for k in sorted(want.keys() | got.keys()) if want.get(k) != got.get(k))
    where = (f'checkpoint {mgr.directory}/{step} does not fit this model ({first}: '
             f'{got.get(first, "absent")} in the checkpoint, {want.get(first, "absent")} now)')
    workdir = os.path.dirname(str(mgr.directory))
    changed = files.config_differences(workdir, config) if config is not None else []
    if changed:
      raise UserError(f'{where}; it was written by a different config ({"; ".join(changed)}): '
                      'use the config it was trained with, or a fresh --workdir')
    raise UserError(f'{where}, yet {workdir}/config.json matches this config: the data set '
                    'changed since (classes or tabular columns); use a fresh --workdir')
  return fits


def restore(mgr: ocp.CheckpointManager, target_state: Any,
            config: ml_collections.ConfigDict | None = None
            ) -> tuple[Any, dict[str, Any]] | None:
  """The newest intact checkpoint restored into target_state's structure and
  shardings, with its meta; None when there is none. A checkpoint of another
  model is a UserError that names the config fields that differ."""
  abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target_state)

  def read(step: int) -> Any:
    return mgr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))

  found = restore_intact(mgr, read, _shape_check(mgr, abstract, config))
  if found is None:
    return None
  restored = found[1]
  return restored.state, dict(restored.meta)


def restore_variables(workdir: str, checkpoint: str = 'best') -> dict[str, Any]:
  """{'params', 'batch_stats'} of the best (else latest) or the latest
  checkpoint, as numpy arrays; the newest intact one of its folder, and the
  latest where no best checkpoint reads back intact.

  Read without a target, so the caller needs no optimiser to rebuild; the
  caller checks the shapes against the model it builds (``check_variables``).
  """
  found = best_else_latest(chosen_directory(workdir, checkpoint),
                           lambda: _restore_state(workdir, BEST_DIR),
                           lambda: _restore_state(workdir, CHECKPOINT_DIR),
                           warn=lambda line: print(line, file=sys.stderr, flush=True))
  if found is None:
    raise UserError(f'no checkpoint in {os.path.join(workdir, CHECKPOINT_DIR)!r}: '
                    'train or import a model first')
  state = found[1].state
  return {'params': jax.tree_util.tree_map(np.asarray, state['params']),
          'batch_stats': jax.tree_util.tree_map(np.asarray, state.get('batch_stats') or {})}


def _restore_state(workdir: str, directory: str) -> tuple[int, Any] | None:
  """(step, restored) of the newest intact checkpoint in ``directory``; None
  if it has none (the folder is not created when missing, as a manager would)."""
  if not os.path.isdir(os.path.join(workdir, directory)):
    return None
  mgr = manager(workdir, directory=directory)
  try:
    return restore_intact(mgr, lambda step: mgr.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore())))
  finally:
    mgr.close()


def load_pretrained(workdir: str, checkpoint: str = 'best'
                    ) -> tuple[ml_collections.ConfigDict, dict[str, Any], dict[str, Any]]:
  """(config, {'params', 'batch_stats'}, data_info) of a workdir's best (else
  latest) or latest checkpoint."""
  return (files.load_config(workdir), restore_variables(workdir, checkpoint),
          files.load_data_info(workdir))


def check_variables(expected: Mapping[str, Any], given: Mapping[str, Any], origin: str) -> None:
  """A UserError naming the difference when given variables do not have the
  expected tree of shapes (``expected`` may hold ShapeDtypeStructs)."""
  def shapes(tree: Mapping[str, Any]) -> Any:
    return jax.tree_util.tree_map(lambda x: tuple(x.shape), {
        'params': tree['params'], 'batch_stats': tree.get('batch_stats') or {}})
  want, got = shapes(expected), shapes(given)
  if want != got:
    raise UserError(f'{origin}: weights do not fit the model built from the config '
                    f'(expected {want}, got {got})')
