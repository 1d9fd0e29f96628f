r"""Writes the shipped models (crnn_jax/pretrained/) from the reference's checkpoints.

  python -m crnn_jax.regenerate_pretrained --checkpoints=DIR [--out=crnn_jax/pretrained]

DIR holds ``crnn_genre_model.pth`` and ``crnn_concat_metal_model.pth`` (or the
reference repository's layout, ``genre_classifier/...``), from commit
``a9eac89`` of github.com/iarfmoose/genre_classifier; each file's SHA-256 is
checked first. They are read safely and converted by the same code as
``crnn_jax.import_reference`` (crnn_jax/reference), then written as
crnn_jax.pretrained.store says. The same files give the same bytes, so the
shipped files can be checked against a fresh run (tests/test_pretrained.py).

Only this command needs torch (``pip install -e '.[torch]'``), to read the pickles.

The metal model ships without its tabular standardisation: the reference
standardised 13 Spotify columns with its random training split's mean and
std, and neither those numbers nor the table they came from are in its
repository or checkpoint. Its data_info says so, and prediction refuses it
with that reason; fine-tuning from it (``--config.init_from=metal``) needs no
statistics (the new data set brings its own).
"""

from __future__ import annotations

from crnn_jax.core import xla_defaults

xla_defaults.apply()  # before jax is imported, as the other entry points

import dataclasses
import json
import os
from typing import Any

from absl import flags

from configs import genres, metal
from crnn_jax import import_reference
from crnn_jax.core import storage
from crnn_jax.core.errors import UserError, run_command
from crnn_jax.pretrained import store
from crnn_jax.reference import torch_pickle

REPOSITORY = 'https://github.com/iarfmoose/genre_classifier'
COMMIT = 'a9eac89fb3444deea5544c76f6f6f9fd683591a2'
LICENSE = 'MIT (LICENSE beside this file): Copyright (c) 2020 Adam Montgomerie'
UNPUBLISHED_STATS = (
    "unavailable: the reference standardised its 13 continuous tabular inputs with the mean and "
    'sample std of its random 64% training split of metal_track_data.csv, and neither those '
    'statistics nor that table are in its repository or checkpoint. The weights serve fine-tuning '
    '(--config.init_from=metal); to score audio, import the .pth with that table '
    "(python -m crnn_jax.import_reference --config=configs/metal.py --tabular_csv=...)")


@dataclasses.dataclass(frozen=True)
class Source:
  """A reference checkpoint and what the shipped model made from it is."""
  path: str  # in the reference repository
  sha256: str
  config: Any  # the configs module whose class order is the reference's
  description: str


SOURCES = {
    'genres': Source(
        'genre_classifier/crnn_genre_model.pth',
        '936e56a2510e8d87804411fbeb7615d2c2b062c59b2a33d1073e792f89847029', genres,
        "the reference's genre CRNN: 10 genres from 30 s of audio (80.76% top-1 on its own "
        'test split of Spotify previews, 2020)'),
    'metal': Source(
        'metal_subgenre_classifier/crnn_concat_metal_model.pth',
        '3c8ee29d23eaadcecd93353fffcd70e545f06d822c45cfcd051500f1344f7526', metal,
        "the reference's metal-subgenre CRNN: 20 subgenres from 30 s of audio and 16 Spotify "
        'track features; for fine-tuning only (its tabular standardisation was never published)'),
}
MODEL_CONFIG_FIELDS = ('model', 'multilabel')  # with train.dtype: what builds and reads the model


def find_checkpoint(folder: str, source: Source) -> str:
  """The .pth in ``folder`` (flat, or the repository's layout), its hash checked."""
  for path in (os.path.join(folder, os.path.basename(source.path)),
               os.path.join(folder, source.path)):
    if os.path.isfile(path):
      if storage.sha256(path) != source.sha256:
        raise UserError(f'{path} is not the reference\'s {os.path.basename(path)} of commit '
                        f'{COMMIT[:7]}: its SHA-256 differs from {source.sha256}')
      return path
  raise UserError(f'{os.path.basename(source.path)} not found in {folder!r} (nor {source.path})')


def shipped_config(config: Any) -> dict[str, Any]:
  """The config fields that build and read the model, in JSON form."""
  full = json.loads(config.to_json_best_effort())
  return {**{k: full[k] for k in MODEL_CONFIG_FIELDS}, 'train': {'dtype': full['train']['dtype']}}


def shipped_data_info(config: Any, num_tabular: int, checkpoint: str,
                      source: Source) -> dict[str, Any]:
  """import_reference's data_info, citing the source instead of a local path."""
  info = import_reference.build_data_info(
      config, num_tabular, checkpoint,
      tabular_stats=import_reference.IDENTITY_STATS if num_tabular else None)
  metadata = info['metadata']
  metadata['source'] = f'{REPOSITORY} {source.path} at {COMMIT[:7]}'
  metadata['imported_from'] = {'file': source.path, 'sha256': source.sha256}
  if num_tabular:
    metadata.update(tabular_mean=[], tabular_std=[], tabular_stats_source=UNPUBLISHED_STATS)
  return info


def regenerate(checkpoints: str, out: str = store.PACKAGE_DIR) -> list[str]:
  """Converts both checkpoints into ``out``; returns the files written."""
  paths = {name: find_checkpoint(checkpoints, source) for name, source in SOURCES.items()}
  os.makedirs(out, exist_ok=True)
  for name, source in SOURCES.items():
    config = source.config.get_config()
    variables, num_tabular = import_reference.convert_checkpoint(
        torch_pickle.read_state_dict(paths[name]), config)
    store.write(out, name, shipped_config(config), variables,
                shipped_data_info(config, num_tabular, paths[name], source),
                {'repository': REPOSITORY, 'commit': COMMIT, 'path': source.path,
                 'sha256': source.sha256, 'license': LICENSE}, source.description)
  store.write_checksums(out)
  return store.shipped_files(out) + [store.CHECKSUMS_FILE]


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise UserError(f'unexpected arguments: {argv[1:]}')
  f = flags.FLAGS
  if not f.checkpoints:
    raise UserError('--checkpoints is required: the folder with the reference\'s .pth files')
  out = f.out or store.PACKAGE_DIR
  for name in regenerate(f.checkpoints, out):
    print(f'wrote {os.path.join(out, name)} ({os.path.getsize(os.path.join(out, name)):,} bytes)')


def run() -> None:
  flags.DEFINE_string('checkpoints', None, "Folder with the reference's two .pth files.")
  flags.DEFINE_string('out', None, 'Where to write (default: the crnn_jax.pretrained package).')
  run_command(main)


if __name__ == '__main__':
  run()
