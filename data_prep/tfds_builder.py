"""Writes prepared clips as a TFDS data set in ArrayRecord files.

The data set is what the training input pipeline reads with
``tfds.data_source`` (no TensorFlow needed). One example per clip:

  spectrogram  uint8 (128, frames)  the reference's stored image (audio.py)
  tabular      float32 (k,)         raw tabular features (k may be 0)
  label        ClassLabel           the single training label
  label_set    uint8 (num_classes,) multi-hot: every mapped label of the track
  track_id     text
  artist_id    text

Data-set-level facts live in ``DatasetInfo.metadata``: tabular column names,
which columns are categorical, the standardisation statistics of the training
split, and the clip settings, so prediction can reproduce the input exactly.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds

Example = Mapping[str, Any]
VERSION = '1.0.0'


def _class_name(dataset_name: str) -> str:
  if not re.fullmatch(r'[a-z][a-z0-9_]*', dataset_name):
    raise ValueError(f'data set name {dataset_name!r} must be snake_case: '
                     'lower-case letters, digits and underscores, starting with a letter')
  return ''.join(part.capitalize() or '_' for part in dataset_name.split('_'))


def features(class_names: list[str], num_tabular: int, frames: int | None = None
             ) -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict({
      'spectrogram': tfds.features.Tensor(shape=(128, frames), dtype=np.uint8,
                                          encoding=tfds.features.Encoding.ZLIB),
      'tabular': tfds.features.Tensor(shape=(num_tabular,), dtype=np.float32),
      'label': tfds.features.ClassLabel(names=class_names),
      'label_set': tfds.features.Tensor(shape=(len(class_names),), dtype=np.uint8),
      'track_id': tfds.features.Text(),
      'artist_id': tfds.features.Text(),
  })


def write_dataset(
    name: str,
    data_dir: str,
    class_names: list[str],
    num_tabular: int,
    split_examples: Mapping[str, Callable[[], Iterable[tuple[str, Example]]]],
    metadata: Mapping[str, Any],
    description: str = '',
    frames: int | None = None,
    beam_runner: Any = None,
    beam_options: Any = None,
) -> tfds.core.DatasetBuilder:
  """Builds ``data_dir/name/VERSION`` from per-split example generators.

  ``split_examples[split]()`` yields (unique key, example dict). Writing goes
  through a real ``GeneratorBasedBuilder`` (class created for ``name``), so
  TFDS shuffles by key, shards, and records split sizes as usual.
  ``split_examples[split]()`` may instead return a ``beam.PTransform`` of
  (key, example); TFDS then writes through Apache Beam with ``beam_runner``
  / ``beam_options`` (DirectRunner locally, or a cluster's runner).
  """
  feature_dict = features(class_names, num_tabular, frames)

  # Not registered: the class is made per call, and a process may write the
  # same name twice (a rebuild); readers find the data by folder, not class.
  class _Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = tfds.core.Version(globals()['VERSION'])
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        globals()['VERSION']: 'Prepared by crnn_jax data_prep.'}

    def _info(self) -> tfds.core.DatasetInfo:
      return tfds.core.DatasetInfo(
          builder=self, description=description, features=feature_dict,
          metadata=tfds.core.MetadataDict(dict(metadata)),
          supervised_keys=('spectrogram', 'label'))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {split: make() for split, make in split_examples.items()}

    def _generate_examples(self, examples):  # pylint: disable=arguments-renamed
      return examples

  builder_cls = type(_class_name(name), (_Builder,), {'__module__': __name__},
                     skip_registration=True)
  builder = builder_cls(data_dir=data_dir, file_format='array_record')
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(
          try_download_gcs=False, beam_runner=beam_runner, beam_options=beam_options))
  return builder
