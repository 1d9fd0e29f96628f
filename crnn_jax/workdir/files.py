"""The files of a workdir besides its checkpoints: config.json, data_info.json,
results.json, average.json (and the names of predictions_{split}.npz)."""

from __future__ import annotations

import json
import math
import os
import socket
from collections.abc import Mapping
from typing import Any

import ml_collections

from crnn_jax.core import storage
from crnn_jax.core.errors import UserError

CONFIG_FILE = 'config.json'
DATA_INFO_FILE = 'data_info.json'
RESULTS_FILE = 'results.json'
# Every clip's logits, label and track of an evaluated split: enough to pool or
# average models' probabilities without running them again.
PREDICTIONS_FILE = 'predictions_{split}.npz'
# A workdir whose model is the average of other workdirs' models (its members,
# folders inside it) holds this file instead of checkpoints.
AVERAGE_FILE = 'average.json'


def ensure_workdir(workdir: str) -> str:
  """The absolute workdir, created if needed; a UserError if it cannot be written."""
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


def save_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  storage.write_json(os.path.join(workdir, CONFIG_FILE), json.loads(config.to_json_best_effort()))


def load_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise UserError(f'{path} not found: {workdir!r} is not a crnn_jax workdir '
                    '(train with main.py or import a model first)')
  return config_from_json(storage.read_json(path))


def config_from_json(data: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """A config from its JSON form: lists back to tuples, as the configs write them."""
  return ml_collections.ConfigDict(_tuples(dict(data)))


def config_differences(workdir: str, config: ml_collections.ConfigDict, limit: int = 4
                       ) -> list[str]:
  """Fields where the workdir's config.json differs from ``config``, as
  'model.gru_features: 64 in config.json, 32 now' (none: no config.json)."""
  try:
    saved = _flat(storage.read_json(os.path.join(workdir, CONFIG_FILE)))
  except (OSError, ValueError):
    return []
  now = _flat(json.loads(config.to_json_best_effort()))
  keys = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
  return [f'{k}: {saved.get(k, "(absent)")!r} in config.json, {now.get(k, "(absent)")!r} now'
          for k in keys[:limit]] + ([f'{len(keys) - limit} more'] if len(keys) > limit else [])


def _flat(tree: Any, prefix: str = '') -> dict[str, Any]:
  if not isinstance(tree, dict):
    return {prefix: tree}
  out: dict[str, Any] = {}
  for k, v in tree.items():
    out.update(_flat(v, f'{prefix}.{k}' if prefix else k))
  return out


def _tuples(x: Any) -> Any:
  """JSON lists back to tuples, as the configs write them (hashable, static)."""
  if isinstance(x, dict):
    return {k: _tuples(v) for k, v in x.items()}
  if isinstance(x, list):
    return tuple(_tuples(v) for v in x)
  return x


def save_data_info(workdir: str, data_info: Mapping[str, Any]) -> None:
  storage.write_json(os.path.join(workdir, DATA_INFO_FILE), dict(data_info))


def load_data_info(workdir: str) -> dict[str, Any]:
  path = os.path.join(workdir, DATA_INFO_FILE)
  if not os.path.exists(path):
    raise UserError(f'{path} not found: train a model in {workdir!r} or import one first')
  return storage.read_json(path)


def validation_threshold(workdir: str) -> tuple[float | None, str]:
  """(multi-label threshold chosen on validation, where it came from); None
  when results.json has none (a fresh import, or training not finished)."""
  path = os.path.join(workdir, RESULTS_FILE)
  try:
    value = storage.read_json(path).get('validation', {}).get('threshold')
  except FileNotFoundError:
    return None, 'default (no results.json)'
  except (OSError, ValueError, AttributeError):
    return None, 'default (results.json unreadable)'
  if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
    return float(value), 'chosen on validation (results.json)'
  return None, 'default (no validation threshold in results.json)'


def average_members(workdir: str) -> list[str]:
  """The member workdirs of an average's workdir (average.json), as absolute
  paths; [] for any other workdir."""
  path = os.path.join(workdir, AVERAGE_FILE)
  if not os.path.exists(path):
    return []
  members = storage.read_json(path).get('members')
  if not isinstance(members, list) or len(members) < 2:
    raise UserError(f'{path}: "members" must list two or more workdirs inside {workdir!r}')
  return [os.path.join(os.path.abspath(workdir), str(m)) for m in members]


def write_average(workdir: str, members: list[str]) -> None:
  """average.json: the model of ``workdir`` is the mean of these members'
  probabilities (folders relative to ``workdir``)."""
  storage.write_json(os.path.join(workdir, AVERAGE_FILE), {
      'members': [os.path.relpath(m, workdir) for m in members],
      'combined_by': 'the mean of the members\' probabilities (each track: then the mean over '
                     'its windows)'})
