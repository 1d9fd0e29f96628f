"""Your music, prepared for training on first run: ``prepare(config, workdir, clip)``.

``config.data.folder`` names a folder with one sub-folder of audio files per
class (or a manifest CSV, as ``python -m data_prep build --input`` takes).
``prepare`` checks it before decoding anything, builds the data set through
``build.build_dataset`` (the code path of ``data_prep build``: decoded clips
cached, an interrupted build resumed, an identical one reused, every skipped
file listed in ``NAME_report.csv``), checks that every class reached every
split, and returns the config pointing at the set: ``config.data.data_dir``
(default ``WORKDIR/data``) and ``config.data.name`` (default: the folder's
name). Each problem a user can fix is one line naming the fix.
"""

from __future__ import annotations

import collections
import os
import re
from collections.abc import Mapping
from typing import Any

import ml_collections

from crnn_jax.core import audio
from crnn_jax.core.errors import UserError
from crnn_jax.data.schema import SPLITS
from data_prep import build
from data_prep.build_input import read_source

# A class needs a track in each of train, validation and test: with the 64/16/20
# split, three tracks of a class can all miss the validation split.
MIN_TRACKS_PER_CLASS = 4
ENOUGH_TRACKS_PER_CLASS = 20  # said in the error: what a useful model wants


def prepare(config: ml_collections.ConfigDict, workdir: str, clip: audio.ClipSettings,
            cv_folds: int = 0) -> ml_collections.ConfigDict:
  """Builds (or reuses) the data set of config.data.folder; the config that reads it.
  ``cv_folds``: the folds the training split is cut into to choose a recipe."""
  path = folder_path(config)
  classes = check_source(path, cv_folds)
  out = reading_config(config, workdir)
  data_dir, name = out.data.data_dir, out.data.name
  print(f'preparing {path} as data set {name!r} in {data_dir} (decoded clips are cached: '
        'a rerun resumes or reuses it)', flush=True)
  try:
    summary = build.build_dataset(
        path, data_dir, name, clip=clip, windows=str(config.data.windows),
        group_by_artist=config.data.split_by == 'artist', seed=int(config.seed))
  except ValueError as e:  # no usable track, an empty split, a held lock
    raise UserError(f'{e}') from None
  check_summary(summary, classes)
  return out


def folder_path(config: ml_collections.ConfigDict) -> str:
  return os.path.abspath(os.path.expanduser(config.data.folder))


def reading_config(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
  """The config with config.data.folder's data set as its data: data_dir
  (default WORKDIR/data) and name (default: the folder's)."""
  out = config.copy_and_resolve_references()
  out.data.data_dir = config.data.data_dir or os.path.join(os.path.abspath(workdir), 'data')
  out.data.name = config.data.name or dataset_name(folder_path(config))
  return out


def dataset_name(path: str) -> str:
  """A TFDS name (snake_case) from the folder's or CSV's name."""
  stem = os.path.splitext(os.path.basename(path.rstrip(os.sep)))[0]
  name = re.sub(r'[^a-z0-9]+', '_', stem.lower()).strip('_')
  return name if re.match(r'[a-z]', name) else f'music_{name}'.rstrip('_')


def check_source(path: str, cv_folds: int = 0) -> collections.Counter[str]:
  """The folder's (or manifest's) classes, before any decoding: one line for
  a missing path, no class, one class, an empty class folder, or a class with
  fewer tracks than the splits (and ``cv_folds`` folds of the training split) need."""
  if not os.path.exists(path):
    raise UserError(f'config.data.folder {path!r} does not exist: give a folder with one '
                    'sub-folder of audio files per class (or a manifest CSV)')
  try:
    tracks = collections.Counter(t.label for t in read_source(path).tracks)
  except ValueError as e:
    raise UserError(f'config.data.folder: {e}') from None
  folders = class_folders(path) if os.path.isdir(path) else []
  empty = [f for f in folders if not tracks[f]]
  if empty:
    raise UserError(f'class folder {os.path.join(path, empty[0])!r} holds no audio files '
                    f'({", ".join(audio.AUDIO_EXTENSIONS)}): add some, or remove the folder')
  if not tracks:
    raise UserError(f'{path!r} holds no classes: put each class\'s audio files in its own '
                    f'sub-folder, {os.path.join(path, "<class>")}')
  if len(tracks) == 1:
    raise UserError(f'{path!r} has one class ({next(iter(tracks))}): a classifier needs two or '
                    'more; add a sub-folder of audio files for each other class')
  few = sorted((n, c) for c, n in tracks.items() if n < MIN_TRACKS_PER_CLASS)
  if few:
    raise UserError(f'class {few[0][1]!r} has {few[0][0]} track(s): splitting into train, '
                    f'validation and test needs at least {MIN_TRACKS_PER_CLASS} per class (a '
                    f'useful model {ENOUGH_TRACKS_PER_CLASS} or more); add tracks')
  # Every fold needs a track of every class, and validation and test one each.
  needed = cv_folds + 2
  few = sorted((n, c) for c, n in tracks.items() if n < needed)
  if cv_folds and few:
    raise UserError(f'class {few[0][1]!r} has {few[0][0]} track(s): choosing the recipe by '
                    f'{cv_folds}-fold cross-validation needs at least {needed} per class ({cv_folds} '
                    'in the training split, one each for validation and test); add tracks, lower '
                    '--config.recipe_folds, or pick a recipe by hand (--config.recipe=probe)')
  return tracks


def class_folders(path: str) -> list[str]:
  """The sub-folders a folder source reads as classes."""
  return sorted(d for d in os.listdir(path)
                if os.path.isdir(os.path.join(path, d)) and not d.startswith('.'))


def check_summary(summary: Mapping[str, Any], classes: Mapping[str, int]) -> None:
  """After the build: files that could not be used (one line, the report
  names each); a class left without tracks, or missing from a split, once
  they are left out."""
  if summary['skipped']:
    reasons = ', '.join(f'{k} {v}' for k, v in summary['skipped_by_reason'].items())
    print(f"warning: {summary['skipped']} file(s) left out ({reasons}); {summary['report']} "
          'names each and why: fix or remove them, then rerun (decoded clips are cached)',
          flush=True)
  lost = [c for c in classes if c not in summary['classes']]
  if lost:
    raise UserError(f'class {lost[0]!r}: none of its {classes[lost[0]]} file(s) could be read '
                    f"({summary['report']} says why): replace them with readable audio")
  for split in SPLITS:
    missing = [c for c in summary['classes'] if not summary['clips'][split][c]]
    if missing:
      raise UserError(f'class {missing[0]!r} has no usable track for the {split} split (files '
                      f"that could not be read are in {summary['report']}): add readable tracks "
                      'of that class')
