"""The shipped models' files: read (no torch, no network) and written.

Each shipped model NAME is two files in this package:

  NAME.msgpack  its variables {'params', 'batch_stats'} in flax.serialization's
                msgpack: float32 arrays with shape and dtype, keys sorted. No
                pickle, so reading it runs no code.
  NAME.json     everything else a model needs to be used: ``config`` (the model
                fields), ``data_info`` (class names, clip settings, frames,
                tabular encoding: what a workdir's data_info.json holds),
                ``source`` (repository, commit, path and SHA-256 of the PyTorch
                checkpoint it was converted from), ``weights`` (the .msgpack's
                SHA-256, checked on every load) and a one-line ``description``.

``SHA256SUMS`` lists every written file's hash (``sha256sum -c SHA256SUMS``).
The same inputs write the same bytes: JSON with sorted keys, msgpack with
sorted keys and no timestamps.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import os
from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import serialization

from crnn_jax.core import storage
from crnn_jax.core.errors import UserError
from crnn_jax.workdir import files as workdir_files

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
WEIGHTS_SUFFIX, DESCRIPTION_SUFFIX = '.msgpack', '.json'
CHECKSUMS_FILE, LICENSE_FILE = 'SHA256SUMS', 'LICENSE'
FORMAT = 'crnn_jax shipped model'


@dataclasses.dataclass
class ShippedModel:
  """A shipped model as a workdir's checkpoint would give it."""
  name: str
  config: ml_collections.ConfigDict
  variables: dict[str, Any]
  data_info: dict[str, Any]
  description: str
  source: dict[str, Any]


def names(folder: str = PACKAGE_DIR) -> list[str]:
  """The models shipped in ``folder``, sorted."""
  return sorted(os.path.basename(p)[:-len(DESCRIPTION_SUFFIX)]
                for p in glob.glob(os.path.join(folder, f'*{DESCRIPTION_SUFFIX}')))


def unknown_name(name: str, folder: str = PACKAGE_DIR) -> UserError:
  return UserError(f'no shipped model {name!r}: the shipped models are '
                   f'{", ".join(names(folder)) or "(none)"}')


def read_description(name: str, folder: str = PACKAGE_DIR) -> dict[str, Any]:
  """NAME.json (config, data_info, source, weights hash); a UserError for an unknown name."""
  if name not in names(folder):
    raise unknown_name(name, folder)
  return storage.read_json(os.path.join(folder, name + DESCRIPTION_SUFFIX))


def license_path(folder: str = PACKAGE_DIR) -> str:
  """The license of the shipped weights (the reference's MIT license)."""
  return os.path.join(folder, LICENSE_FILE)


def load(name: str, folder: str = PACKAGE_DIR) -> ShippedModel:
  """A shipped model's config, variables (numpy float32) and data_info; a
  UserError for an unknown name or files that differ from what was shipped."""
  description = read_description(name, folder)
  with open(os.path.join(folder, name + WEIGHTS_SUFFIX), 'rb') as f:
    blob = f.read()
  if hashlib.sha256(blob).hexdigest() != description['weights']['sha256']:
    raise UserError(f'the shipped model {name!r} is damaged: {name}{WEIGHTS_SUFFIX} in {folder} '
                    'does not have the SHA-256 its JSON records; reinstall crnn_jax')
  variables = serialization.msgpack_restore(blob)
  return ShippedModel(
      name=name, config=workdir_files.config_from_json(description['config']),
      variables={'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})},
      data_info=description['data_info'], description=description['description'],
      source=description['source'])


def write(folder: str, name: str, config: Mapping[str, Any], variables: Mapping[str, Any],
          data_info: Mapping[str, Any], source: Mapping[str, Any], description: str) -> None:
  """Writes NAME.msgpack and NAME.json (call ``write_checksums`` after the last)."""
  variables = {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})}
  blob = serialization.msgpack_serialize(
      jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), variables))
  with storage.atomic_write(os.path.join(folder, name + WEIGHTS_SUFFIX), 'wb') as f:
    f.write(blob)
  storage.write_json(os.path.join(folder, name + DESCRIPTION_SUFFIX), {
      'format': FORMAT, 'version': 1, 'name': name, 'description': description,
      'config': dict(config), 'data_info': dict(data_info), 'source': dict(source),
      'weights': {'file': name + WEIGHTS_SUFFIX, 'sha256': hashlib.sha256(blob).hexdigest()},
  })


def shipped_files(folder: str = PACKAGE_DIR) -> list[str]:
  """Every model file in ``folder`` (the weights and JSON of each model), sorted."""
  return sorted(n + suffix for n in names(folder)
                for suffix in (WEIGHTS_SUFFIX, DESCRIPTION_SUFFIX))


def write_checksums(folder: str) -> None:
  """SHA256SUMS: the hash of every model file, as ``sha256sum`` writes it."""
  listed = shipped_files(folder)
  storage.write_text(os.path.join(folder, CHECKSUMS_FILE), ''.join(
      f'{storage.sha256(os.path.join(folder, n))}  {n}\n' for n in listed))
