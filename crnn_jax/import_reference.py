r"""Imports one of the reference's trained PyTorch checkpoints into a workdir.

  python -m crnn_jax.import_reference --config=configs/genres.py \
      --checkpoint=crnn_genre_model.pth --workdir=workdirs/reference_genres
  python -m crnn_jax.import_reference --config=configs/metal.py \
      --checkpoint=crnn_concat_metal_model.pth \
      --workdir=workdirs/reference_metal --tabular_csv=PATH/metal_track_data.csv

The ``.pth`` files are the original repository's (docs/reference.md section 8);
both also ship with crnn_jax, imported already (docs/pretrained.md).

The workdir then holds what ``main.py --mode=eval`` and prediction read: an
orbax checkpoint (step 0, fresh optimiser), config.json and data_info.json
(class names in the reference's index order, the clip settings of
docs/reference.md section 2, and for the metal model the tabular encoding).

Only reading the pickle needs torch (``pip install -e '.[torch]'``), and it is
read safely (crnn_jax/reference/torch_pickle.py): a crafted file cannot run code.

The metal model standardises its 13 continuous tabular inputs with the mean
and sample std of the reference's training split, which the checkpoint does
not hold. Give them with one of:
  --tabular_stats=JSON  {"tabular_mean": [16 numbers], "tabular_std": [16 numbers]}
                        in docs/reference.md section 3 order (the categorical entries are
                        ignored), or {"acousticness": {"mean": m, "std": s}, ...};
  --tabular_csv=CSV     the reference's metal_track_data.csv: mean and sample
                        std over every row with one of the 20 classes (after the
                        reference's merges) and all 16 values present. The
                        reference used only its random 64% training split of
                        those rows, which cannot be recovered, so these are
                        estimates: a random 64% subset's mean differs from the
                        whole set's by ~0.75/sqrt(rows) standard deviations
                        (~0.003 for 100k rows), its std by less.
  --tabular_stats=identity
                        import without them: mean 0 and std 1 are recorded, so
                        continuous inputs are fed as given and must already be
                        standardised (data_info.json says ``"tabular_stats_source":
                        "none ..."``). Raw Spotify values, or prediction's
                        estimates from audio, then give meaningless outputs.
With none of these the metal import stops with an error saying so.
"""

from __future__ import annotations

from crnn_jax.core import xla_defaults

xla_defaults.apply()  # before jax is imported, as the other entry points

import csv
import dataclasses
import json
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from absl import flags
from ml_collections import config_flags

from crnn_jax import model as model_lib
from crnn_jax.core import audio, labels, storage, tabular
from crnn_jax.core.errors import UserError, run_command
from crnn_jax.reference import torch_pickle, weights
from crnn_jax.train import from_weights

TABULAR_NAMES = tabular.REFERENCE_COLUMNS  # the metal model's 16 inputs, in vector order
CATEGORICAL = tabular.CATEGORICAL
IDENTITY_STATS = 'identity'  # --tabular_stats value: import without standardisation


# --------------------------------------------------------------------------
# Tabular standardisation of the metal model
# --------------------------------------------------------------------------
def stats_from_json(path: str) -> tuple[list[float], list[float]]:
  """--tabular_stats: two 16-lists, or per-column {"mean", "std"} entries."""
  try:
    with open(path) as f:
      data = json.load(f)
  except (OSError, ValueError) as e:
    raise UserError(f'--tabular_stats {path!r} is not readable JSON ({e})') from None
  try:
    if 'tabular_mean' in data:
      mean = [float(x) for x in data['tabular_mean']]
      std = [float(x) for x in data['tabular_std']]
      if len(mean) != len(TABULAR_NAMES) or len(std) != len(TABULAR_NAMES):
        raise ValueError(f'need {len(TABULAR_NAMES)} values each, got {len(mean)} and {len(std)}')
    else:
      mean = [0.0 if n in CATEGORICAL else float(data[n]['mean']) for n in TABULAR_NAMES]
      std = [1.0 if n in CATEGORICAL else float(data[n]['std']) for n in TABULAR_NAMES]
  except (KeyError, TypeError, ValueError) as e:
    raise UserError(f'--tabular_stats {path!r}: {type(e).__name__} {e}; expected '
                    '{"tabular_mean": [16], "tabular_std": [16]} or {"<column>": {"mean": m, '
                    f'"std": s}}, ...}} for the columns {", ".join(TABULAR_NAMES[3:])}') from None
  if not all(math.isfinite(x) for x in mean + std) or any(
      s <= 0 for n, s in zip(TABULAR_NAMES, std) if n not in CATEGORICAL):
    raise UserError(f'--tabular_stats {path!r}: means must be finite and stds positive')
  return ([0.0 if n in CATEGORICAL else m for n, m in zip(TABULAR_NAMES, mean)],
          [1.0 if n in CATEGORICAL else s for n, s in zip(TABULAR_NAMES, std)])


def stats_from_reference_csv(path: str) -> tuple[list[float], list[float], int]:
  """--tabular_csv: mean and sample std over the reference's usable rows.

  Rows kept as the reference kept them before splitting: a track id or path, a
  genre that maps to one of the 20 classes, and all 16 values present.
  """
  try:
    with open(path, newline='', encoding='utf-8-sig', errors='replace') as f:
      reader = csv.DictReader(f)
      header = [h.strip() for h in reader.fieldnames or []]
      missing = [c for c in TABULAR_NAMES if c not in header]
      if missing:
        raise UserError(f'--tabular_csv {path!r} lacks the columns {missing}')
      rows = [row for row in (_reference_row(r) for r in reader) if row is not None]
  except (OSError, csv.Error) as e:
    raise UserError(f'--tabular_csv {path!r}: {e}') from None
  if len(rows) < 2:
    raise UserError(f'--tabular_csv {path!r}: fewer than 2 usable rows of the 20 metal classes')
  mean, std = tabular.training_stats(np.asarray(rows, np.float64), TABULAR_NAMES)
  return mean, std, len(rows)


def _reference_row(row: Mapping[str | None, Any]) -> list[float] | None:
  """The 16 stored values of a track-table row, or None if the reference dropped it."""
  row = {(k or '').strip(): v for k, v in row.items()}
  if not (str(row.get('id') or '').strip() or str(row.get('path') or '').strip()):
    return None
  genre = str(row.get('genre') or row.get('label') or '').strip().lower()
  if labels.METAL_LABEL_MAP.get(genre) is None:
    return None
  try:
    values = [tabular.to_number(c, row.get(c)) for c in TABULAR_NAMES]
  except ValueError:
    return None
  return None if any(v is None for v in values) else values


# --------------------------------------------------------------------------
# The import
# --------------------------------------------------------------------------
def build_data_info(config: Any, num_tabular: int, checkpoint: str,
                    tabular_stats: str | None = None,
                    tabular_csv: str | None = None) -> dict[str, Any]:
  """What evaluation and prediction need to know, in DataInfo's JSON form."""
  class_names = list(config.data.class_names)
  metadata: dict[str, Any] = {
      'class_names': class_names,
      'tabular_names': [],
      'tabular_categorical': {},
      'tabular_mean': [],
      'tabular_std': [],
      'clip': dataclasses.asdict(audio.ClipSettings()),  # 30 s from the start, as previews
      'source': f'imported reference checkpoint {os.path.basename(checkpoint)}',
      'imported_from': {'file': os.path.abspath(checkpoint),
                        'sha256': storage.sha256(checkpoint)},
  }
  if num_tabular:
    if tabular_stats and tabular_csv:
      raise UserError('give --tabular_stats or --tabular_csv, not both')
    if tabular_stats == IDENTITY_STATS:
      mean, std = [0.0] * num_tabular, [1.0] * num_tabular
      origin = ('none (--tabular_stats=identity): mean 0 / std 1, so continuous inputs must '
                "already be standardised with the reference training split's statistics")
    elif tabular_stats:
      mean, std = stats_from_json(tabular_stats)
      origin = f'--tabular_stats {os.path.abspath(tabular_stats)}'
    elif tabular_csv:
      mean, std, rows = stats_from_reference_csv(tabular_csv)
      origin = (f'estimated from {rows} usable rows of {os.path.abspath(tabular_csv)} (the '
                "reference's own 64% training split cannot be recovered)")
    else:
      raise UserError(
          "the metal model standardises its tabular inputs with the reference training split's "
          'mean and std, which the checkpoint does not hold: pass --tabular_csv=<the reference\'s '
          'metal_track_data.csv> (estimates them) or --tabular_stats=<stats.json>, or '
          '--tabular_stats=identity if your inputs are already standardised')
    metadata.update({
        'tabular_names': list(TABULAR_NAMES),
        'tabular_categorical': dict(CATEGORICAL),
        'tabular_mean': mean,
        'tabular_std': std,
        'tabular_stats_source': origin,
    })
  return {
      'name': config.data.name or 'reference',
      'class_names': class_names,
      'num_tabular': num_tabular,
      'categorical_encoding': config.data.categorical_encoding,
      'split_sizes': {},
      'frames': audio.num_frames(),
      'metadata': metadata,
  }


def convert_checkpoint(state_dict: Mapping[str, np.ndarray], config: Any
                       ) -> tuple[dict[str, Any], int]:
  """State dict -> (variables of the config's model, num_tabular), shape-checked."""
  is_metal = 'fcn.fc1.weight' in state_dict
  num_tabular = len(TABULAR_NAMES) if is_metal else 0
  if is_metal and config.data.categorical_encoding != 'raw':
    raise UserError('the reference metal model takes raw categorical codes: use '
                    '--config.data.categorical_encoding=raw')
  if not config.data.class_names:
    raise UserError('config.data.class_names is empty: use configs/genres.py or '
                    'configs/metal.py, whose class order is the reference\'s')
  head = state_dict.get('final_layer.bias' if is_metal else 'rnn.linear.bias')
  if head is not None and np.shape(head)[0] != len(config.data.class_names):
    raise UserError(f'the checkpoint classifies {np.shape(head)[0]} classes ('
                    f'{"metal subgenres" if is_metal else "genres"}), config.data.class_names has '
                    f'{len(config.data.class_names)}: use '
                    f'{"configs/metal.py" if is_metal else "configs/genres.py"}')
  model = model_lib.create_model(config.model, len(config.data.class_names), num_tabular)
  template = model_lib.abstract_variables(model, audio.N_MELS, audio.num_frames())
  try:
    return weights.convert_for(state_dict, template), num_tabular
  except weights.ReferenceWeightsError as e:
    raise UserError(f'checkpoint does not fit the config: {e}') from None


def import_checkpoint(checkpoint: str, config: Any, workdir: str,
                      tabular_stats: str | None = None,
                      tabular_csv: str | None = None) -> dict[str, Any]:
  """Reads, converts and writes; returns the data_info written."""
  existing = os.path.join(workdir, 'checkpoints')
  if os.path.isdir(existing) and os.listdir(existing):
    raise UserError(f'{existing} already holds checkpoints (their latest step would win over '
                    'the import); choose an empty --workdir')
  state_dict = torch_pickle.read_state_dict(checkpoint)
  variables, num_tabular = convert_checkpoint(state_dict, config)
  data_info = build_data_info(config, num_tabular, checkpoint, tabular_stats, tabular_csv)
  from_weights.write_workdir(workdir, config, variables, data_info)
  return data_info


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise UserError(f'unexpected arguments: {argv[1:]}')
  f = flags.FLAGS
  if f.config is None or not f.checkpoint or not f.workdir:
    raise UserError('--checkpoint, --config and --workdir are required (see --helpfull)')
  info = import_checkpoint(f.checkpoint, f.config, f.workdir, f.tabular_stats, f.tabular_csv)
  print(f'imported {f.checkpoint} -> {os.path.abspath(f.workdir)}: '
        f'{len(info["class_names"])} classes, {info["num_tabular"]} tabular inputs')
  if info['num_tabular']:
    print(f'tabular standardisation: {info["metadata"]["tabular_stats_source"]}')


def _define_flags() -> None:
  config_flags.DEFINE_config_file('config', None, 'configs/genres.py or configs/metal.py.')
  flags.DEFINE_string('checkpoint', None, 'A reference .pth file (dict with "model", "opt").')
  flags.DEFINE_string('workdir', None, 'An empty or new directory to write.')
  flags.DEFINE_string('tabular_stats', None, "Metal model: JSON with the 16 means and stds, or "
                      "'identity' (inputs already standardised).")
  flags.DEFINE_string('tabular_csv', None,
                      "Metal model: the reference's metal_track_data.csv to estimate them from.")


def run() -> None:
  _define_flags()
  run_command(main)


if __name__ == '__main__':
  run()
