"""The work directory: orbax checkpoints plus the JSON files that describe them.

Layout of a workdir:
  config.json       the run's full config (what built the model)
  data_info.json    class names, tabular encoding and clip settings, so that
                    evaluation and prediction work without the data set
  checkpoints/N/    orbax: 'state' (params, batch stats, optimiser, step) and
                    'meta' (epoch, position within the epoch, history)
Orbax writes each checkpoint to a temporary folder and renames it when
complete, so a run killed mid-save still finds its previous checkpoint.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from crnn_jax.errors import UserError

CONFIG_FILE = 'config.json'
DATA_INFO_FILE = 'data_info.json'


def ensure_workdir(workdir: str) -> str:
  workdir = os.path.abspath(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
    # Per-process name: processes sharing the workdir must not race on it.
    probe = os.path.join(workdir, f'.write_test.{socket.gethostname()}.{os.getpid()}')
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise UserError(f'workdir {workdir!r} is not writable ({e.strerror or e}); '
                    'choose another --workdir') from None
  return workdir


def write_json(path: str, obj: Any) -> None:
  """Writes atomically (temp file + rename): a kill never leaves half a file."""
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=2, sort_keys=True)
    f.write('\n')
  os.replace(tmp, path)


def read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


def save_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  write_json(os.path.join(workdir, CONFIG_FILE), json.loads(config.to_json_best_effort()))


def load_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise UserError(f'{path} not found: {workdir!r} is not a crnn_jax workdir '
                    '(train with main.py or import a model first)')
  return ml_collections.ConfigDict(_tuples(read_json(path)))


def _tuples(x: Any) -> Any:
  """JSON lists back to tuples, as the configs write them (hashable, static)."""
  if isinstance(x, dict):
    return {k: _tuples(v) for k, v in x.items()}
  if isinstance(x, list):
    return tuple(_tuples(v) for v in x)
  return x


def manager(workdir: str, max_to_keep: int = 2) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      os.path.join(os.path.abspath(workdir), 'checkpoints'),
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
      item_names=('state', 'meta'))


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


def save_data_info(workdir: str, data_info: Mapping[str, Any]) -> None:
  write_json(os.path.join(workdir, DATA_INFO_FILE), dict(data_info))


def load_data_info(workdir: str) -> dict[str, Any]:
  path = os.path.join(workdir, DATA_INFO_FILE)
  if not os.path.exists(path):
    raise UserError(f'{path} not found: train a model in {workdir!r} or import one first')
  return read_json(path)


def save_pretrained(workdir: str, config: ml_collections.ConfigDict, variables: Mapping[str, Any],
                    data_info: Mapping[str, Any]) -> None:
  """Makes a workdir from finished weights (e.g. an imported reference model).

  The checkpoint is a full train state at step 0 with a fresh optimiser, so
  evaluation, prediction and even fine-tuning use the ordinary code paths.
  """
  from crnn_jax import input_pipeline, train  # pylint: disable=import-outside-toplevel
  workdir = ensure_workdir(workdir)
  info = input_pipeline.DataInfo.from_json(data_info)
  target = train.abstract_train_state(config, info)
  expected = jax.tree_util.tree_map(lambda x: x.shape, {'params': target.params,
                                                        'batch_stats': target.batch_stats})
  given = jax.tree_util.tree_map(lambda x: x.shape, {'params': variables['params'],
                                                     'batch_stats': variables['batch_stats']})
  if expected != given:
    raise UserError('weights do not fit the model built from the config '
                    f'(expected {expected}, got {given})')
  state = train.state_from_variables(config, info, variables)
  save_config(workdir, config)
  save_data_info(workdir, info.to_json())
  mgr = manager(workdir)
  save(mgr, 0, state, {'epoch': config.train.num_epochs, 'batch_in_epoch': 0, 'history': [],
                       'partial': {}, 'imported': True})
  mgr.close()


def load_pretrained(workdir: str) -> tuple[ml_collections.ConfigDict, dict[str, Any], dict[str, Any]]:
  """(config, {'params', 'batch_stats'}, data_info) of a workdir's latest checkpoint."""
  from crnn_jax import input_pipeline, train  # pylint: disable=import-outside-toplevel
  config = load_config(workdir)
  data_info = load_data_info(workdir)
  info = input_pipeline.DataInfo.from_json(data_info)
  mgr = manager(workdir)
  restored = restore(mgr, train.abstract_train_state(config, info))
  mgr.close()
  if restored is None:
    raise UserError(f'no checkpoint in {workdir!r}/checkpoints: train or import a model first')
  state, _ = restored
  return config, {'params': state.params, 'batch_stats': state.batch_stats}, data_info
