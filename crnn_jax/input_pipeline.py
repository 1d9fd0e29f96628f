"""Input pipeline: TFDS ArrayRecord data sets read with ``tfds.data_source`` + grain.

No TensorFlow: ``tfds.data_source`` gives random access to the ArrayRecord
files and grain does the mapping, batching and prefetching in threads (or
worker processes with ``config.data.num_workers``).

Determinism and exact resumption: each epoch's example order is a pure
function of (seed, epoch) computed up front, so a run resumed at batch k of
epoch e reads exactly the batches an uninterrupted run would have. With
several processes, each reads only its own slice of every global batch.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping
from typing import Any

import grain
import ml_collections
import numpy as np

from crnn_jax import tabular
from crnn_jax.errors import UserError

Batch = dict[str, np.ndarray]
SPLITS = ('train', 'validation', 'test')


@dataclasses.dataclass(frozen=True)
class DataInfo:
  """What the model, reports and prediction need to know about a data set."""
  name: str
  class_names: tuple[str, ...]
  num_tabular: int  # width after encoding: the model's tabular input
  categorical_encoding: str
  split_sizes: Mapping[str, int]
  frames: int | None
  metadata: Mapping[str, Any]  # the data set's own metadata (tabular stats, clip, ...)

  def to_json(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d['class_names'] = list(self.class_names)
    d['split_sizes'] = dict(self.split_sizes)
    d['metadata'] = _jsonable(self.metadata)
    return d

  @classmethod
  def from_json(cls, d: Mapping[str, Any]) -> DataInfo:
    return cls(name=d['name'], class_names=tuple(d['class_names']),
               num_tabular=int(d['num_tabular']),
               categorical_encoding=d['categorical_encoding'],
               split_sizes=dict(d['split_sizes']), frames=d.get('frames'),
               metadata=dict(d['metadata']))


def _jsonable(x: Any) -> Any:
  if isinstance(x, Mapping):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, np.ndarray):
    return x.tolist()
  if isinstance(x, np.generic):
    return x.item()
  return x


def _builder(config: ml_collections.ConfigDict):
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
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
    raise UserError(f'data set {config.data.name!r} lacks splits {missing}; rebuild it')
  empty = [s for s in SPLITS if split_sizes[s] == 0]
  if empty:
    raise UserError(f'data set {config.data.name!r} has empty {"/".join(empty)} split(s); '
                    'prepare it from more clips or with other --split fractions')
  metadata = dict(info.metadata or {})
  metadata.setdefault('tabular_names', [])
  encoding = config.data.categorical_encoding
  try:
    num_tabular = tabular.encoded_size(metadata, encoding)
  except (ValueError, KeyError) as e:
    raise UserError(f'bad tabular settings: {e}') from None
  wanted_tabular = int(config.data.get('num_tabular', -1))
  columns = list(metadata['tabular_names'])
  if wanted_tabular >= 0 and wanted_tabular != len(columns):
    raise UserError(f'config.data.num_tabular={wanted_tabular} but data set {config.data.name!r} '
                    f'has {len(columns)} tabular columns {columns}; prepare it with the right '
                    'columns (python -m data_prep build --tabular=...) or fix the config')
  frames = info.features['spectrogram'].shape[1]
  return DataInfo(name=config.data.name, class_names=class_names, num_tabular=num_tabular,
                  categorical_encoding=encoding, split_sizes=split_sizes, frames=frames,
                  metadata=metadata)


def open_sources(config: ml_collections.ConfigDict, skip: tuple[str, ...] = ()
                 ) -> dict[str, Any]:
  """Random-access sources per split; features in ``skip`` stay undecoded bytes
  (reading every label should not decompress every spectrogram)."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  _builder(config)  # same clear errors as load_info
  decoders = {name: tfds.decode.SkipDecoding() for name in skip} or None
  return dict(tfds.data_source(config.data.name, data_dir=config.data.data_dir,
                               decoders=decoders))


class ToModelInputs(grain.transforms.Map):
  """Decoded TFDS record -> fixed-dtype arrays; tabular encoded here."""

  def __init__(self, info: DataInfo, label_ancestors: np.ndarray | None = None):
    self._info = info
    self._ancestors = label_ancestors

  def map(self, record: Mapping[str, Any]) -> Batch:
    raw_tab = np.asarray(record['tabular'], np.float32)
    label_set = np.asarray(record['label_set'], np.float32)
    if self._ancestors is not None:  # a child label implies its parents
      label_set = np.maximum(label_set, (label_set @ self._ancestors > 0).astype(np.float32))
    return {
        'spectrogram': np.asarray(record['spectrogram'], np.uint8),
        'tabular': tabular.encode(raw_tab, self._info.metadata, self._info.categorical_encoding),
        'label': np.int32(record['label']),
        'label_set': label_set,
    }


def epoch_order(labels: np.ndarray, seed: int, epoch: int, sampling: str = 'shuffle'
                ) -> np.ndarray:
  """The example indices of one training epoch, a pure function of its inputs.

  'shuffle': a permutation (the reference). 'balanced': as many draws, with
  replacement, each class equally likely (an alternative to loss weighting).
  """
  rng = np.random.default_rng([seed, epoch])
  n = len(labels)
  if sampling == 'shuffle':
    return rng.permutation(n)
  if sampling == 'balanced':
    counts = np.bincount(labels)
    weights = 1.0 / counts[labels]
    return rng.choice(n, size=n, replace=True, p=weights / weights.sum())
  raise ValueError(f"unknown sampling {sampling!r}: use 'shuffle' or 'balanced'")


def read_labels(source: Any) -> np.ndarray:
  """All labels of a split (one pass; needed for the epoch order and weights).
  Fastest from a source opened with ``skip=('spectrogram',)``."""
  return np.asarray([source[i]['label'] for i in range(len(source))], dtype=np.int64)


def train_labels(config: ml_collections.ConfigDict) -> np.ndarray:
  return read_labels(open_sources(config, skip=('spectrogram',))['train'])


def _read_options(config: ml_collections.ConfigDict) -> grain.ReadOptions:
  """Reader threads and read-ahead. The buffer counts batches (batching
  happens before the iterator), so memory stays at a few batches whatever the
  data set's size."""
  return grain.ReadOptions(num_threads=max(1, int(config.data.get('num_threads', 4))),
                           prefetch_buffer_size=max(1, int(config.data.get('prefetch_batches', 4))))


def train_batches(source: Any, order: np.ndarray, info: DataInfo, global_batch: int,
                  start_batch: int, config: ml_collections.ConfigDict,
                  process_index: int = 0, process_count: int = 1,
                  label_ancestors: np.ndarray | None = None) -> Iterator[Batch]:
  """This process's part of each full global batch of one epoch, from start_batch on.

  The last partial batch is dropped, as the reference did.
  """
  if global_batch % process_count:
    raise UserError(f'batch size {global_batch} is not divisible by {process_count} processes')
  local = global_batch // process_count
  num_batches = len(order) // global_batch
  usable = order[:num_batches * global_batch].reshape(num_batches, global_batch)
  mine = usable[:, process_index * local:(process_index + 1) * local].reshape(-1)
  transform = ToModelInputs(info, label_ancestors)
  ds = (grain.MapDataset.range(len(mine))
        .map(lambda i: transform.map(source[int(mine[i])]))
        .batch(local, drop_remainder=True))
  ds = ds[start_batch:]
  iter_ds = ds.to_iter_dataset(_read_options(config))
  if config.data.num_workers > 0:
    iter_ds = iter_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=config.data.num_workers))
  return iter(iter_ds)


def eval_batches(source: Any, info: DataInfo, global_batch: int,
                 config: ml_collections.ConfigDict, process_index: int = 0,
                 process_count: int = 1, label_ancestors: np.ndarray | None = None
                 ) -> Iterator[Batch]:
  """Every example once, in order; the last batch padded, with 'mask' 0 on padding."""
  n = len(source)
  local = global_batch // process_count
  num_batches = -(-n // global_batch)
  padded = np.arange(num_batches * global_batch)
  mask = (padded < n).astype(np.float32)
  index = np.minimum(padded, n - 1)
  sl = slice(process_index * local, (process_index + 1) * local)
  index = index.reshape(num_batches, global_batch)[:, sl].reshape(-1)
  mask = mask.reshape(num_batches, global_batch)[:, sl].reshape(-1)
  transform = ToModelInputs(info, label_ancestors)
  ds = (grain.MapDataset.range(len(index))
        .map(lambda i: dict(transform.map(source[int(index[i])]), mask=np.float32(mask[i])))
        .batch(local, drop_remainder=True))
  return iter(ds.to_iter_dataset(_read_options(config)))
