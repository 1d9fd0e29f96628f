"""Writes prepared clips as a TFDS data set in ArrayRecord files (the features
of crnn_jax.data.schema), which training reads with ``tfds.data_source``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds

from crnn_jax.data import schema
from data_prep.decode import load_image, read_image_record

Example = Mapping[str, Any]


def make_example(key: str, d: Mapping[str, Any], image: np.ndarray
                 ) -> tuple[str, dict[str, Any]]:
  """(key, small picklable description, spectrogram) -> (key, TFDS example)."""
  label_set = np.zeros(d['num_classes'], np.uint8)
  label_set[list(d['label_set'])] = 1
  return key, {
      'spectrogram': image,
      'tabular': np.asarray(d['tabular'], np.float32),
      'label': int(d['label']),
      'label_set': label_set,
      'track_id': d['track_id'],
      'artist_id': d['artist_id'],
  }


def cached_example(item: tuple[str, Mapping[str, Any]]) -> tuple[str, dict[str, Any]]:
  """A single-machine build's example: the image from the local per-track cache."""
  key, d = item
  return make_example(key, d, load_image(d['cache_file'], d.get('window', 0)))


def beam_examples(split: str, items: list[tuple[str, Mapping[str, Any]]], images: str) -> Any:
  """A Beam build's examples of one split: the spectrograms flow in as elements
  from the decode pipeline's files (``images``: a file pattern, local
  or remote), joined by track id with the split's descriptions (a track of
  several windows: one example per window)."""
  import apache_beam as beam  # pylint: disable=import-outside-toplevel  # optional extra
  by_track: dict[str, list[tuple[str, Mapping[str, Any]]]] = {}
  for key, d in items:
    by_track.setdefault(d['track_id'], []).append((key, d))

  def examples(track_id: str, image: np.ndarray) -> list[tuple[str, dict[str, Any]]]:
    return [make_example(key, d, image[d.get('window', 0)] if image.ndim == 3 else image)
            for key, d in by_track.get(track_id, [])]

  return (f'ReadImages_{split}' >> beam.io.ReadFromText(images)
          | f'DecodeImages_{split}' >> beam.Map(read_image_record)
          | f'Examples_{split}' >> beam.FlatMapTuple(examples))


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
  feature_dict = schema.features(class_names, num_tabular, frames)

  # Not registered: the class is made per call, and a process may write the
  # same name twice (a rebuild); readers find the data by folder, not class.
  class _Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = tfds.core.Version(schema.VERSION)
    RELEASE_NOTES: ClassVar[dict[str, str]] = {schema.VERSION: 'Prepared by crnn_jax data_prep.'}

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

  builder_cls = type(schema.builder_class_name(name), (_Builder,), {'__module__': __name__},
                     skip_registration=True)
  builder = builder_cls(data_dir=data_dir, file_format='array_record')
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(
          try_download_gcs=False, beam_runner=beam_runner, beam_options=beam_options))
  return builder
