"""The study's runs: one config file each in ``configs/``, trained with ``main.py``.

A run's config file is an ordinary config (built on ``configs/default.py``,
``small_data.py`` or ``finetune.py``, with only its differences) that also holds
the study's settings of the run in ``config.study`` (``with_study``):

  row             its place in the tables (and its number for ``--rows``)
  name            its line in the tables; results are kept and merged by it
  data            the data set it trains on: 'rm_windows' (several 30-s windows per
                  track) or 'rm_single' (one centred window)
  from_reference  it starts from the reference genre model (imported into the
                  work folder), its head rows mapped by CLASS_MAP

Adding a run is adding a config file. The study adds what depends on the work
folder: the data set's folder and name, the imported model, the workdir.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence

import ml_collections

CONFIGS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs')
DATA_SETS = ('rm_windows', 'rm_single')
REFERENCE_CHECKPOINT = '../shared/reference/checkpoints/crnn_genre_model.pth'
REFERENCE_WORKDIR = 'reference_genres'  # in the work folder
# Head rows of the reference genre model a style starts from when fine-tuning
# (jazz and rock have the reference's own names).
CLASS_MAP = {'orchestral': 'classical', 'electronic': 'techno', 'rock_metal': 'metal'}
EVAL_BATCH = 16  # memory, not results: evaluation does not depend on it


@dataclasses.dataclass(frozen=True)
class Run:
  """A run's config file and the study's settings in it."""
  config_file: str  # relative to the repository root, as main.py is given it
  row: int
  name: str
  data: str
  from_reference: bool


def with_study(config: ml_collections.ConfigDict, row: int, name: str, data: str,
               from_reference: bool = False) -> ml_collections.ConfigDict:
  """A run config's study settings (the module docstring says what each means)."""
  config.study = ml_collections.ConfigDict(
      {'row': row, 'name': name, 'data': data, 'from_reference': from_reference})
  return config


def without_augmentation(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Augmentation switched off (its amounts stay as the recipe sets them)."""
  config.augment.time_shift = 0.0
  config.augment.freq_masks = 0
  config.augment.time_masks = 0
  config.augment.mixup_alpha = 0.0
  return config


def load_config(path: str) -> ml_collections.ConfigDict:
  """A config file's ``get_config()``, as main.py's ``--config`` reads it."""
  spec = importlib.util.spec_from_file_location(
      'real_music_run_' + os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def all_runs(configs_dir: str = CONFIGS_DIR) -> list[Run]:
  """Every run of the study, in the tables' order; SystemExit for a config
  file without valid study settings, or two on one row."""
  runs = []
  for path in sorted(glob.glob(os.path.join(configs_dir, '*.py'))):
    study = load_config(path).get('study')
    where = os.path.relpath(path)
    if study is None or study.get('data') not in DATA_SETS:
      raise SystemExit(f'{where}: config.study must give row, name, from_reference and data '
                       f'(one of {DATA_SETS})')
    runs.append(Run(where, int(study.row), str(study.name), study.data,
                    bool(study.from_reference)))
  rows = [r.row for r in runs]
  if len(set(rows)) != len(rows):
    raise SystemExit(f'two run configs in {configs_dir} on one row: {sorted(rows)}')
  return sorted(runs, key=lambda r: r.row)


def chosen_runs(runs: Sequence[Run], rows: str) -> list[Run]:
  """``--rows``: row numbers or config file names (without .py), comma-separated."""
  if not rows:
    return list(runs)
  by_key = {str(r.row): r for r in runs}
  by_key.update({os.path.splitext(os.path.basename(r.config_file))[0]: r for r in runs})
  wanted = [key.strip() for key in rows.split(',') if key.strip()]
  unknown = [key for key in wanted if key not in by_key]
  if unknown:
    raise SystemExit(f'--rows: no run {unknown}; rows: {", ".join(sorted(by_key))}')
  return [by_key[key] for key in wanted]


def execute(command: list[str], log_path: str) -> float:
  """Runs a command (output to a log), raises if it fails; returns its wall time."""
  print('$ ' + ' '.join(command), flush=True)
  t0 = time.time()
  with open(log_path, 'a') as log:
    done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
  if done.returncode:
    raise SystemExit(f'failed ({done.returncode}): see {log_path}')
  return time.time() - t0


def windows_per_track(windows: int) -> dict[str, str]:
  """The study's data sets and the windows each stores per track."""
  return {'rm_windows': str(windows), 'rm_single': '1'}


def build_command(manifest: str, data_dir: str, name: str, windows: str,
                  split: Sequence[str]) -> list[str]:
  return [sys.executable, '-m', 'data_prep', 'build', f'--input={manifest}',
          f'--data_dir={data_dir}', f'--name={name}', '--clip_position=center',
          f'--windows={windows}', *split, '--no_progress']


def import_reference(work: str, checkpoint: str, log: str) -> dict[str, list[str]]:
  """The reference genre model as a crnn_jax workdir (once per work folder)."""
  reference = os.path.join(work, REFERENCE_WORKDIR)
  if os.path.isdir(os.path.join(reference, 'checkpoints')):
    return {}
  command = [sys.executable, '-m', 'crnn_jax.import_reference', '--config=configs/genres.py',
             f'--checkpoint={checkpoint}', f'--workdir={reference}']
  execute(command, log)
  return {'import': command}


def reference_flags(work: str, styles: Sequence[str]) -> list[str]:
  """What a run from the reference genre model is given: the imported model
  and the head rows its styles start from."""
  class_map = ','.join(f'{k}={v}' for k, v in CLASS_MAP.items() if k in styles)
  return [f'--config.init_from={os.path.abspath(os.path.join(work, REFERENCE_WORKDIR))}',
          f'--config.finetune.class_map={class_map}']


def train_run(run: Run, data_dir: str, runs_dir: str, log: str, reference: Sequence[str],
              extra: Sequence[str] = ()) -> dict:
  """Trains (and, from rm_single, evaluates on rm_windows) with the
  ``reference`` model's flags where it starts from it, then ``extra`` (a
  cross-validation's); its results."""
  workdir = os.path.join(runs_dir, run.name.replace(' ', '_').replace(',', ''))
  shutil.rmtree(workdir, ignore_errors=True)  # a fresh run, not a resumed one
  base = [sys.executable, 'main.py', f'--config={run.config_file}', f'--workdir={workdir}',
          f'--config.data.data_dir={data_dir}', f'--config.train.eval_batch_size={EVAL_BATCH}',
          *(reference if run.from_reference else ()), *extra]
  commands = [base + [f'--config.data.name={run.data}']]
  if run.data != 'rm_windows':
    commands.append(base + ['--config.data.name=rm_windows', '--mode=eval'])
  seconds = execute(commands[0], log)  # the table's wall time: training and its evaluation
  for command in commands[1:]:
    execute(command, log)
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  return {'row': run.name, 'commands': [' '.join(c[1:]) for c in commands],
          'seconds': seconds, 'test': results['test'], 'checkpoint': results['checkpoint']}
