"""Opening a prepared TFDS data set (ArrayRecord, no TensorFlow) and checking it
against the config: clear one-line errors for a missing, half-written or
mismatched data set.
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from crnn_jax.core import tabular
from crnn_jax.core.errors import UserError
from crnn_jax.data import folds
from crnn_jax.data.info import DataInfo
from crnn_jax.data.schema import SPLITS


def _builder(config: ml_collections.ConfigDict):
  name, data_dir = config.data.name, config.data.data_dir
  if not name:
    raise UserError('config.data.name is empty: set --config.data.name=NAME '
                    '(a data set prepared with `python -m data_prep build`)')
  if not data_dir or not os.path.isdir(data_dir):
    raise UserError(f'data directory {data_dir!r} does not exist: prepare a data set with '
                    '`python -m data_prep build --data_dir=DIR --name=NAME` or set '
                    '--config.data.data_dir')
  if not os.path.isdir(os.path.join(data_dir, name)):
    present = sorted(d for d in os.listdir(data_dir)
                     if os.path.isdir(os.path.join(data_dir, d)) and not d.startswith('.')
                     and d != 'downloads')
    raise UserError(f'no data set {name!r} in {data_dir!r} (found: {", ".join(present) or "none"}); '
                    'prepare it with `python -m data_prep build` or fix --config.data.name')
  try:
    return tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # noqa: BLE001  tfds raises many types for half-written folders
    raise UserError(f'data set {name!r} in {data_dir!r} cannot be read ({type(e).__name__}: '
                    f'{str(e).splitlines()[0][:200]}); rebuild it with `python -m data_prep build`'
                    ) from None


def load_info(config: ml_collections.ConfigDict) -> DataInfo:
  """Reads the data set's description and checks it against the config."""
  builder = _builder(config)
  info = builder.info
  class_names = tuple(info.features['label'].names)
  wanted = tuple(config.data.class_names or ())
  if wanted and wanted != class_names:
    raise UserError(f'config.data.class_names {list(wanted)} do not match data set '
                    f'{config.data.name!r} classes {list(class_names)} (order matters); fix the '
                    'config or prepare the data set with these classes')
  split_sizes = {s: int(info.splits[s].num_examples) for s in info.splits}
  missing = [s for s in SPLITS if s not in split_sizes]
  if missing:
    raise UserError(f'data set {config.data.name!r} has no {"/".join(missing)} examples; rebuild '
                    'it with `python -m data_prep build` from more tracks, more windows per track '
                    '(--windows=all) or other --split fractions')
  empty = [s for s in SPLITS if split_sizes[s] == 0]
  if empty:
    raise UserError(f'data set {config.data.name!r} has empty {"/".join(empty)} split(s); '
                    'prepare it from more tracks, more windows per track (data_prep build '
                    '--windows=all) or other --split fractions')
  fold_of = train_folds(config)
  if fold_of is not None:
    split_sizes = folds.split_sizes(split_sizes, fold_of, int(config.data.cv_fold))
  metadata = dict(info.metadata or {})
  metadata.setdefault('tabular_names', [])
  encoding = config.data.categorical_encoding
  try:
    num_tabular = tabular.encoded_size(metadata, encoding)
  except (ValueError, KeyError) as e:
    raise UserError(f'bad tabular settings: {e}') from None
  wanted_tabular = int(config.data.get('num_tabular', -1))  # -1: the data set's, any number
  columns = list(metadata['tabular_names'])
  if wanted_tabular >= 0 and wanted_tabular != len(columns):
    raise UserError(f'config.data.num_tabular={wanted_tabular} but data set {config.data.name!r} '
                    f'has {len(columns)} tabular columns {columns}; prepare it with the right '
                    'columns (python -m data_prep build --tabular=...), or take the data set\'s '
                    'with --config.data.num_tabular=-1')
  frames = info.features['spectrogram'].shape[1]
  return DataInfo(name=config.data.name, class_names=class_names, num_tabular=num_tabular,
                  categorical_encoding=encoding, split_sizes=split_sizes, frames=frames,
                  metadata=metadata)


def open_sources(config: ml_collections.ConfigDict, skip: tuple[str, ...] = ()
                 ) -> dict[str, Any]:
  """Random-access sources per split; features in ``skip`` stay undecoded bytes
  (reading every label should not decompress every spectrogram). With
  config.data.cv_folds, the fold view of the training split (data/folds.py)."""
  sources = _data_sources(config, skip)
  fold_of = train_folds(config)
  return sources if fold_of is None else folds.view(sources, fold_of, int(config.data.cv_fold))


def _data_sources(config: ml_collections.ConfigDict, skip: tuple[str, ...]) -> dict[str, Any]:
  _builder(config)  # same clear errors as load_info
  decoders = {name: tfds.decode.SkipDecoding() for name in skip} or None
  return dict(tfds.data_source(config.data.name, data_dir=config.data.data_dir,
                               decoders=decoders))


def train_folds(config: ml_collections.ConfigDict) -> np.ndarray | None:
  """With config.data.cv_folds = K > 1, the fold of every example of the
  data set's training split (data/folds.py); else None."""
  k = int(config.data.get('cv_folds', 0))
  if k < 2:
    return None
  fold = int(config.data.get('cv_fold', 0))
  if not 0 <= fold < k:
    raise UserError(f'config.data.cv_fold={fold}: use 0..{k - 1} (config.data.cv_folds={k})')
  train = _data_sources(config, ('spectrogram',))['train']
  labels, groups = [], []
  for i in range(len(train)):  # one pass reads both
    example = train[i]
    labels.append(example['label'])
    groups.append(_text(example['artist_id']))
  return folds.assign(np.asarray(labels, np.int64), np.asarray(groups), k, int(config.seed),
                      _builder(config).info.features['label'].names)


def read_labels(source: Any) -> np.ndarray:
  """All labels of a split (one pass; needed for the epoch order and weights).
  Fastest from a source opened with ``skip=('spectrogram',)``."""
  return np.asarray([source[i]['label'] for i in range(len(source))], dtype=np.int64)


def train_labels(config: ml_collections.ConfigDict) -> np.ndarray:
  return read_labels(open_sources(config, skip=('spectrogram',))['train'])


def read_track_ids(config: ml_collections.ConfigDict, split: str) -> np.ndarray:
  """The track of every example of a split, in order: the windows of one track
  share it (track-level evaluation averages them)."""
  return read_text(config, split, 'track_id')


def read_text(config: ml_collections.ConfigDict, split: str, feature: str) -> np.ndarray:
  """A text feature ('track_id', 'artist_id': the group the split keeps
  together) of every example of a split, in order."""
  src = open_sources(config, skip=('spectrogram',))[split]
  return np.asarray([_text(src[i][feature]) for i in range(len(src))], dtype=object)


def _text(value: Any) -> str:
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)
