"""Input pipeline: grain batches from the random-access TFDS sources.

grain does the mapping, batching and prefetching in threads, and in worker
processes with ``config.data.num_workers`` (default -1: none on a CPU-only
host, where a train step eats a few clips/s; on a GPU/TPU host one per core
beyond two, at most 16: benchmarks/bench_loader.py measures a few hundred
clips/s per worker, and a GPU's step eats thousands).

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
import jax
import ml_collections
import numpy as np
from absl import flags

from crnn_jax.core import processes, tabular
from crnn_jax.core.errors import UserError
from crnn_jax.data.info import DataInfo

Batch = dict[str, np.ndarray]

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


def _read_options(config: ml_collections.ConfigDict) -> grain.ReadOptions:
  """Reader threads and read-ahead. The buffer counts batches (batching
  happens before the iterator), so memory stays at a few batches whatever the
  data set's size."""
  return grain.ReadOptions(num_threads=max(1, int(config.data.get('num_threads', 4))),
                           prefetch_buffer_size=max(1, int(config.data.get('prefetch_batches', 4))))


def num_workers(config: ml_collections.ConfigDict) -> int:
  """config.data.num_workers, with -1 resolved for this host (module docstring)."""
  workers = int(config.data.num_workers)
  if workers >= 0:
    return workers
  if jax.default_backend() == 'cpu':
    return 0
  try:
    cores = len(os.sched_getaffinity(0))
  except AttributeError:  # not on Linux
    cores = os.cpu_count() or 1
  return max(1, min(16, cores - 2))


@dataclasses.dataclass(frozen=True)
class Reader:
  """One split of a prepared set as batches are read from it: its random-access
  source, how its examples become model inputs, and this process's share."""
  source: Any  # source.open_sources(config)[split]
  info: DataInfo
  config: ml_collections.ConfigDict  # config.data: reader threads, read-ahead, workers
  label_ancestors: np.ndarray | None = None  # multi-label: a child label implies its parents
  process_index: int = dataclasses.field(default_factory=jax.process_index)
  process_count: int = dataclasses.field(default_factory=jax.process_count)

  def local(self, global_batch: int) -> slice:
    """This process's columns of a global batch."""
    if global_batch % self.process_count:
      raise UserError(f'batch size {global_batch} is not divisible by {self.process_count} '
                      'processes')
    local = global_batch // self.process_count
    return slice(self.process_index * local, (self.process_index + 1) * local)


def train_batches(reader: Reader, order: np.ndarray, global_batch: int, start_batch: int = 0
                  ) -> Iterator[Batch]:
  """This process's part of each full global batch of one epoch, from start_batch on.

  The last partial batch is dropped, as the reference did.
  """
  mine = reader.local(global_batch)
  num_batches = len(order) // global_batch
  usable = order[:num_batches * global_batch].reshape(num_batches, global_batch)
  index = usable[:, mine].reshape(-1)
  transform = ToModelInputs(reader.info, reader.label_ancestors)
  ds = (grain.MapDataset.range(len(index))
        .map(lambda i: transform.map(reader.source[int(index[i])]))
        .batch(mine.stop - mine.start, drop_remainder=True))
  ds = ds[start_batch:]
  iter_ds = ds.to_iter_dataset(_read_options(reader.config))
  workers = num_workers(reader.config)
  if workers > 0:
    if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; main.py parses them,
      flags.FLAGS.mark_as_parsed()  # a notebook or library caller does not
    iter_ds = iter_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers),
                                  worker_init_fn=processes.exit_with_parent)  # no orphans
  return iter(iter_ds)


def eval_batches(reader: Reader, global_batch: int) -> Iterator[Batch]:
  """Every example once, in order; the last batch padded, with 'mask' 0 on padding."""
  n = len(reader.source)
  mine = reader.local(global_batch)
  num_batches = -(-n // global_batch)
  padded = np.arange(num_batches * global_batch)
  mask = (padded < n).astype(np.float32)
  index = np.minimum(padded, n - 1)
  index = index.reshape(num_batches, global_batch)[:, mine].reshape(-1)
  mask = mask.reshape(num_batches, global_batch)[:, mine].reshape(-1)
  transform = ToModelInputs(reader.info, reader.label_ancestors)
  ds = (grain.MapDataset.range(len(index))
        .map(lambda i: dict(transform.map(reader.source[int(index[i])]),
                            mask=np.float32(mask[i])))
        .batch(mine.stop - mine.start, drop_remainder=True))
  return iter(ds.to_iter_dataset(_read_options(reader.config)))
