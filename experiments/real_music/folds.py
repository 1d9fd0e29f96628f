"""Cross-validation (``--folds=K``): the same runs on K album-disjoint test splits.

Each style's groups (albums, packages, groove families) are dealt into K folds
(crnn_jax.data.folds.group_folds); run k tests on fold k. Each fold gets a manifest
with a ``split`` column, built with ``--split_by=source``; the folds share the
decoded clips, so nothing is decoded twice.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import shutil
from collections.abc import Sequence

from crnn_jax.data.folds import group_folds
from data_prep import split
from experiments.real_music import library, runs, tables


def fold_manifests(manifest: str, folds: int, seed: int, validation: str = 'fold') -> list[str]:
  """One manifest per fold beside ``manifest``, with its ``split`` column:
  run k tests on fold k; ``validation`` (split.CV_VALIDATION) says what it validates on."""
  with open(manifest, newline='') as f:
    tracks = list(csv.DictReader(f))
  try:
    fold_of = group_folds([(t['label'], t['artist']) for t in tracks], folds, seed)
  except ValueError as e:
    raise SystemExit(f'--folds={folds}: {e}') from None
  held = (split.held_out_tracks([(t['artist'], t['track_id']) for t in tracks], seed)
          if validation == 'held_out' else set())
  paths = []
  for k in range(folds):
    path = os.path.join(os.path.dirname(manifest), f'manifest_fold{k}.csv')
    with open(path, 'w', newline='') as f:
      w = csv.DictWriter(f, [*tracks[0], 'split'])
      w.writeheader()
      w.writerows({**t, 'split': split.fold_split(fold_of[t['artist']], k, folds,
                                                  t['track_id'] in held, validation)}
                  for t in tracks)
    paths.append(path)
  return paths


def fold_setup(manifest: str, folds: int, seed: int, validation: str = 'fold') -> str:
  """Names one cross-validation (its tracks, K, seed and validation), so
  results of another are never pooled with this one's."""
  with open(manifest, 'rb') as f:
    setup = f'{hashlib.sha256(f.read()).hexdigest()[:12]}-k{folds}-s{seed}'
  return setup if validation == 'fold' else f'{setup}-{validation}'


def run_folds(args: argparse.Namespace, manifest: str, chosen: Sequence[runs.Run],
              order: Sequence[str], log: str) -> list[dict]:
  """Every chosen run on every fold, each fold's results merged into
  ``work/folds/results.json`` as it ends; this cross-validation's results."""
  names = {'rm_windows'} | {run.data for run in chosen}
  per_track = runs.windows_per_track(args.windows)
  setup = fold_setup(manifest, args.folds, args.seed, args.cv_validation)
  reference = runs.reference_flags(args.work, library.styles_of(args))
  # Validation from the training groups only monitors: every run keeps its last epoch.
  keep_last = ['--config.eval.checkpoint=latest'] if args.cv_validation == 'held_out' else []
  path = os.path.join(args.work, 'folds', 'results.json')
  results: list[dict] = []
  for k, fold_manifest in enumerate(
      fold_manifests(manifest, args.folds, args.seed, args.cv_validation)):
    fold_dir = os.path.join(args.work, 'folds', f'fold{k}')
    decoded_by = os.path.join(args.work, 'tfds' if k == 0 else 'folds/fold0/tfds')
    for name in sorted(names):
      share_cache(os.path.join(decoded_by, f'{name}_cache'),
                  os.path.join(fold_dir, 'tfds', f'{name}_cache'))
      runs.execute(runs.build_command(fold_manifest, os.path.join(fold_dir, 'tfds'), name,
                                      per_track[name], ['--split_by=source']), log)
    fresh = [dict(runs.train_run(run, os.path.join(fold_dir, 'tfds'),
                                 os.path.join(fold_dir, 'runs'), log, reference, keep_last),
                  fold=k, setup=setup) for run in chosen]
    results = tables.merge_results(path, fresh, order, key=('row', 'fold', 'setup'))
  return [r for r in results if r.get('setup') == setup]


def share_cache(source: str, target: str) -> None:
  """Links decoded clips (the single-split build's, or the first fold's) into
  a fold's cache, so the folds decode nothing twice: the files are named by
  their content and replaced, never rewritten, by the build. Copies where the
  file system has no hard links."""
  if os.path.isdir(source) and not os.path.exists(target):
    try:
      shutil.copytree(source, target, copy_function=os.link)
    except (OSError, shutil.Error):
      shutil.rmtree(target, ignore_errors=True)
      shutil.copytree(source, target)
