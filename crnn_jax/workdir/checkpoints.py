"""Orbax checkpoints of a workdir: save, restore into a given state, or read
only the model's variables (for prediction and export, which need no optimiser).

``checkpoints/`` holds the latest steps (training resumes from them);
``checkpoints_best/`` the best one by a validation metric, when the run keeps
it (config.train.best_metric). Evaluation and prediction read the best where
there is one (``checkpoint='best'``), else the latest.

Orbax writes each checkpoint to a temporary folder and renames it when
complete, so a run killed mid-save still finds its previous checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from crnn_jax.core.errors import UserError
from crnn_jax.workdir import files

CHECKPOINT_DIR = 'checkpoints'
BEST_DIR = 'checkpoints_best'
CHOICES = ('best', 'latest')


def manager(workdir: str, max_to_keep: int = 2, directory: str = CHECKPOINT_DIR
            ) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      os.path.join(os.path.abspath(workdir), directory),
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
      item_names=('state', 'meta'))


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


def save(mgr: ocp.CheckpointManager, step: int, state: Any, meta: Mapping[str, Any]) -> None:
  """Saves and waits. A step saved before (a stop at an epoch's last batch,
  then the resumed run's end-of-epoch save) is replaced: the newer meta wins."""
  if step in mgr.all_steps():
    mgr.delete(step)
  mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                         meta=ocp.args.JsonSave(dict(meta))), force=True)
  mgr.wait_until_finished()


def restore(mgr: ocp.CheckpointManager, target_state: Any, step: int | None = None
            ) -> tuple[Any, dict[str, Any]] | None:
  """Restores the latest (or given) checkpoint into target_state's structure
  and shardings; None when there is none. An incompatible model is a UserError."""
  step = mgr.latest_step() if step is None else step
  if step is None:
    return None
  abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target_state)
  try:
    restored = mgr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
  except (ValueError, KeyError, TypeError) as e:
    raise UserError(f'checkpoint {mgr.directory}/{step} does not fit this model '
                    f'({str(e).splitlines()[0][:160]}); it was written by a different config: '
                    'use a fresh --workdir or the config it was trained with') from None
  return restored.state, dict(restored.meta)


def restore_variables(workdir: str, checkpoint: str = 'best') -> dict[str, Any]:
  """{'params', 'batch_stats'} of the best (else latest) or the latest
  checkpoint, as numpy arrays.

  Read without a target, so the caller needs no optimiser to rebuild; the
  caller checks the shapes against the model it builds (``check_variables``).
  """
  mgr = manager(workdir, directory=chosen_directory(workdir, checkpoint))
  try:
    step = mgr.latest_step()
    if step is None:
      raise UserError(f'no checkpoint in {os.path.join(workdir, CHECKPOINT_DIR)!r}: '
                      'train or import a model first')
    restored = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  finally:
    mgr.close()
  state = restored.state
  return {'params': jax.tree_util.tree_map(np.asarray, state['params']),
          'batch_stats': jax.tree_util.tree_map(np.asarray, state.get('batch_stats') or {})}


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
