"""The TFDS features of a prepared data set: one example per clip.

  spectrogram  uint8 (128, frames)  the reference's stored image (core/audio.py)
  tabular      float32 (k,)         raw tabular values (core/tabular.py; k may be 0)
  label        ClassLabel           the single training label
  label_set    uint8 (num_classes,) multi-hot: every mapped label of the track
  track_id     text
  artist_id    text

Data-set-level facts live in ``DatasetInfo.metadata``: tabular column names,
which columns are categorical, the training split's standardisation
statistics, and the clip settings, so prediction can reproduce the input.

The spectrogram is stored as one raw byte string (``Encoding.BYTES``; without an
encoding TFDS writes every pixel as an int64): the ArrayRecord files compress
every record themselves, so a TFDS zlib encoding on top compressed twice. Measured
on real-music clips: zlib cost 5-6 ms a clip to write (two thirds of the whole
write, serial in the writing process) and 1 ms to read, for records 10% smaller.
Data sets built with the zlib encoding read as before (TFDS decodes with the
features stored beside the data).
"""

from __future__ import annotations

import re

import numpy as np
import tensorflow_datasets as tfds

from crnn_jax.core import audio

VERSION = '1.0.0'
SPLITS = ('train', 'validation', 'test')
SPECTROGRAM_ENCODING = tfds.features.Encoding.BYTES  # see the module docstring


def check_name(name: str) -> str:
  """A data set name as TFDS requires it (snake_case); ValueError otherwise."""
  if not re.fullmatch(r'[a-z][a-z0-9_]*', name):
    raise ValueError(f'data set name {name!r} must be snake_case: '
                     'lower-case letters, digits and underscores, starting with a letter')
  return name


def builder_class_name(name: str) -> str:
  """The CamelCase class name TFDS derives a snake_case data set name from."""
  return ''.join(part.capitalize() or '_' for part in check_name(name).split('_'))


def features(class_names: list[str], num_tabular: int, frames: int | None = None
             ) -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict({
      'spectrogram': tfds.features.Tensor(shape=(audio.N_MELS, frames), dtype=np.uint8,
                                          encoding=SPECTROGRAM_ENCODING),
      'tabular': tfds.features.Tensor(shape=(num_tabular,), dtype=np.float32),
      'label': tfds.features.ClassLabel(names=class_names),
      'label_set': tfds.features.Tensor(shape=(len(class_names),), dtype=np.uint8),
      'track_id': tfds.features.Text(),
      'artist_id': tfds.features.Text(),
  })
