"""Orbax checkpoints of a workdir: save and restore a train state with its
``Progress`` (training resumes from it), or load a model for use
(``load_for_use``: evaluation, prediction, export and fine-tuning, which need
no optimiser).

``checkpoints/`` holds the latest steps (training resumes from them);
``checkpoints_best/`` the best one by a validation metric, when the run keeps
it (config.train.best_metric). A model for use is the best where there is one
(``checkpoint='best'``), else the latest.

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
import dataclasses
import errno
import gc
import glob
import io
import logging
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple, TypeVar

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from crnn_jax.core import storage
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


@dataclasses.dataclass
class Progress:
  """Where a run stands: each checkpoint's 'meta', written and read only
  through this class. ``partial`` holds the running sums of an epoch
  interrupted midway (loss_sum, correct, seen); ``best`` the best epoch so far
  (crnn_jax/train/selection.py); ``imported``: finished weights made into a
  workdir, not trained in it."""
  epoch: int = 0
  batch_in_epoch: int = 0
  history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  partial: dict[str, float] = dataclasses.field(default_factory=dict)
  best: dict[str, Any] = dataclasses.field(default_factory=dict)
  stopped_early: bool = False
  imported: bool = False

  def to_meta(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_meta(cls, meta: Mapping[str, Any]) -> Progress:
    return cls(epoch=int(meta.get('epoch', 0)), batch_in_epoch=int(meta.get('batch_in_epoch', 0)),
               history=list(meta.get('history') or []), partial=dict(meta.get('partial') or {}),
               best=dict(meta.get('best') or {}), stopped_early=bool(meta.get('stopped_early')),
               imported=bool(meta.get('imported')))


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
    storage.raise_if_storage_error(e, os.path.join(str(mgr.directory), str(step)))
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
  failed = False
  try:
    yield
    stderr.write(sys.stderr.getvalue())
  except BaseException:
    failed = True
    time.sleep(0.5)  # stragglers report within milliseconds
    gc.collect()  # failed futures and coroutines report when collected: now, while quiet
    raise
  finally:
    sys.stderr, sys.unraisablehook = stderr, unraisable
    for logger, level in zip(loggers, levels):
      logger.setLevel(level)
    if failed:
      _hide_orbax_stragglers()  # those collected later still, on a busy machine


_ORBAX_DIR = os.path.dirname(ocp.__file__) + os.sep


def _is_orbax(code: Any) -> bool:
  """Whether a code object (a frame's, a coroutine's) is orbax's own."""
  return code is not None and code.co_filename.startswith(_ORBAX_DIR)


class _OrbaxTaskReports(logging.Filter):
  """Drops asyncio's reports of orbax's own futures: "... exception was never
  retrieved" (a task or a gathering future) of an error raised in orbax's code,
  and "Task was destroyed but it is pending" of a task running orbax's code."""

  def filter(self, record: logging.LogRecord) -> bool:
    message = record.getMessage()
    first_line = message.partition('\n')[0]
    if first_line.endswith('exception was never retrieved'):
      return not _raised_in_orbax(record.exc_info[1] if record.exc_info else None)
    if first_line.startswith('Task was destroyed but it is pending'):
      return f'defined at {_ORBAX_DIR}' not in message
    return True


def _raised_in_orbax(error: BaseException | None) -> bool:
  """Whether a frame of the error's traceback, or of an error it chains, is orbax's."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if any(_is_orbax(frame.f_code) for frame, _ in traceback.walk_tb(error.__traceback__)):
      return True
    error = error.__cause__ or error.__context__
  return False


class _OrbaxCoroutineHook:
  """An unraisable hook that drops "Exception ignored in: <coroutine ...>" of
  orbax's coroutines (closed when collected) and passes the rest on."""

  def __init__(self, previous: Callable[[Any], None]):
    self.previous = previous

  def __call__(self, unraisable: Any) -> None:
    if not _is_orbax(getattr(unraisable.object, 'cr_code', None)):
      self.previous(unraisable)


def _hide_orbax_stragglers() -> None:
  """Once per process, after orbax failed: the late reports of its own tasks
  and coroutines that failed with the save or read which already raised, each
  with a traceback, are dropped (the error raised said it once); every other
  report passes."""
  if not isinstance(sys.unraisablehook, _OrbaxCoroutineHook):
    sys.unraisablehook = _OrbaxCoroutineHook(sys.unraisablehook)
  asyncio_logger = logging.getLogger('asyncio')
  if not any(isinstance(f, _OrbaxTaskReports) for f in asyncio_logger.filters):
    asyncio_logger.addFilter(_OrbaxTaskReports())


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
    raise storage.StorageError(errno.ENOSPC, os.strerror(errno.ENOSPC), directory)


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


def check_shapes(expected: Any, given: Any, what: str,
                 config: ml_collections.ConfigDict | None = None, workdir: str = '') -> None:
  """A one-line UserError when ``given`` (arrays, ShapeDtypeStructs or orbax's
  recorded metadata) is not shaped like ``expected``, the model's: it names
  the first leaf that differs and, given ``config`` and the ``workdir`` that
  wrote ``given``, why: another config (config.json compared with ``config``)
  or another data set. The one shape check of every checkpoint and weight read."""
  want, got = _leaf_shapes(expected), _leaf_shapes(given)
  if got == want:
    return
  first = next(k for k in sorted(want.keys() | got.keys()) if want.get(k) != got.get(k))
  where = (f'{what} does not fit this model ({first}: {got.get(first, "absent")} in the checkpoint, '
           f'{want.get(first, "absent")} now)')
  if config is None or not workdir:
    raise UserError(where)
  changed = files.config_differences(workdir, config)
  if changed:
    raise UserError(f'{where}; it was written by a different config ({"; ".join(changed)}): '
                    'use the config it was trained with, or a fresh --workdir')
  raise UserError(f'{where}, yet {workdir}/config.json matches this config: the data set '
                  'changed since (classes or tabular columns); use a fresh --workdir')


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

  def fits(step: int) -> None:
    check_shapes(abstract, mgr.item_metadata(step)['state'].tree,
                 f'checkpoint {mgr.directory}/{step}', config,
                 os.path.dirname(str(mgr.directory)))

  found = restore_intact(mgr, read, fits)
  if found is None:
    return None
  restored = found[1]
  return restored.state, dict(restored.meta)


def read_progress(workdir: str) -> Progress:
  """The latest checkpoint's Progress (its meta alone: the whole run's history)."""
  mgr = manager(workdir)
  try:
    found = restore_intact(mgr, lambda step: mgr.restore(
        step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())))
  finally:
    mgr.close()
  if found is None:
    raise UserError(f'no checkpoint in {mgr.directory}: train or import a model first')
  return Progress.from_meta(found[1].meta)


# --------------------------------------------------------------------------
# A checkpoint for use: evaluation, prediction, export, init_from
# --------------------------------------------------------------------------
class LoadedModel(NamedTuple):
  """A workdir's model as its users need it (no optimiser state)."""
  config: ml_collections.ConfigDict  # config.json: the config it was trained with
  variables: dict[str, Any]  # {'params', 'batch_stats'}, numpy arrays
  data_info: dict[str, Any]  # data_info.json
  description: dict[str, Any]  # which checkpoint: {'checkpoint': 'best', epoch, ...}
  step: int  # the checkpoint's train step


def load_for_use(workdir: str, checkpoint: str = 'best') -> LoadedModel:
  """The workdir's model from the checkpoint ``checkpoint`` chooses: 'best'
  (the best epoch where the run kept one, else the latest) or 'latest'. The
  one way evaluation, prediction, export and fine-tuning pick and read one.

  The newest intact checkpoint of the chosen folder is read; a best folder
  with none intact costs a warning and the latest is used. The caller checks
  the variables against the model it builds (``check_shapes``).
  """
  members = files.average_members(workdir)
  if members:
    raise UserError(f'{workdir!r} holds an average of models ({files.AVERAGE_FILE}), no '
                    'checkpoint of its own: predict, serve, export and main.py --mode=eval use '
                    f'it; to fine-tune, name one of its members ({", ".join(members)})')
  config = files.load_config(workdir)
  variables, description, step = _restore_chosen(workdir, checkpoint)
  return LoadedModel(config, variables, files.load_data_info(workdir), description, step)


def restore_variables(workdir: str, checkpoint: str = 'best') -> dict[str, Any]:
  """``load_for_use``'s variables alone: reads a checkpoint folder without
  config.json too."""
  return _restore_chosen(workdir, checkpoint)[0]


def _restore_chosen(workdir: str, checkpoint: str
                    ) -> tuple[dict[str, Any], dict[str, Any], int]:
  """(variables, description, step) of the chosen checkpoint (``load_for_use``)."""
  def read(directory: str) -> Callable[[], tuple[int, Any] | None]:
    return lambda: _restore_numpy(workdir, directory)

  found = _best_else_latest(chosen_directory(workdir, checkpoint), read(BEST_DIR),
                            read(CHECKPOINT_DIR))
  if found is None:
    raise UserError(f'no checkpoint in {os.path.join(workdir, CHECKPOINT_DIR)!r}: '
                    'train or import a model first')
  (step, restored), directory = found
  progress = Progress.from_meta(restored.meta)
  description = ({'checkpoint': 'best', **progress.best} if directory == BEST_DIR else
                 {'checkpoint': 'latest', 'epoch': progress.epoch})
  state = restored.state
  variables = {'params': state['params'], 'batch_stats': state.get('batch_stats') or {}}
  return variables, description, int(state.get('step', step))


def chosen_directory(workdir: str, checkpoint: str = 'best') -> str:
  """The folder of the checkpoint to use: the best where the run kept one and
  ``checkpoint`` is 'best', else the latest."""
  if checkpoint not in CHOICES:
    raise UserError(f"checkpoint {checkpoint!r}: use 'best' or 'latest'")
  best = os.path.join(os.path.abspath(workdir), BEST_DIR)
  if checkpoint == 'best' and os.path.isdir(best) and ocp.utils.checkpoint_steps(best):
    return BEST_DIR
  return CHECKPOINT_DIR


def _best_else_latest(chosen: str, read_best: Callable[[], T | None],
                      read_latest: Callable[[], T | None]) -> tuple[T, str] | None:
  """(``read_best()``, BEST_DIR) where ``chosen`` is the best folder and it
  reads back intact, else (``read_latest()``, CHECKPOINT_DIR): a damaged best
  checkpoint (reported and moved aside by ``restore_intact``) costs a warning,
  not the evaluation or the prediction."""
  if chosen == BEST_DIR:
    try:
      found = read_best()
    except UserError as e:
      _warn(f'warning: {e}; using the latest checkpoint')
      found = None
    if found is not None:
      return found, BEST_DIR
  latest = read_latest()
  return None if latest is None else (latest, CHECKPOINT_DIR)


def _restore_numpy(workdir: str, directory: str) -> tuple[int, Any] | None:
  """(step, restored state and meta) of the newest intact checkpoint in
  ``directory``, as numpy arrays (each process reads the whole of every array,
  whatever the sharding it was saved with); None if it has none (the folder is
  not created when missing, as a manager would)."""
  if not os.path.isdir(os.path.join(workdir, directory)):
    return None
  mgr = manager(workdir, directory=directory)

  def read(step: int) -> Any:
    recorded = mgr.item_metadata(step)['state'].tree
    target = jax.tree_util.tree_map(lambda m: np.empty(m.shape, m.dtype), recorded)
    return mgr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
  try:
    return restore_intact(mgr, read)
  finally:
    mgr.close()
