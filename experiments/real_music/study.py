r"""Real music, little data: training recipes and fine-tuning on real recordings.

  python -m experiments.real_music                        # assemble, prepare, train, table
  python -m experiments.real_music --work=data/real_music --rows=2,5   # two of the runs
  python -m experiments.real_music --rows=5 --folds=4     # one run, 4-fold cross-validation

1. Assemble (library.py): whole tracks with a clear style from Debian's
   game-soundtrack packages, and renderings of mma's grooves for jazz, rock and
   latin, into a manifest CSV (path, label, artist = source package, album or
   groove family: the split's group). A model can tell rendered from recorded
   audio by its sound, so with both kinds the task is closer to two smaller ones
   (recorded styles apart, rendered styles apart); ``--styles`` picks the set.
2. Prepare with ``python -m data_prep build`` twice, same tracks, same split
   (it is computed per track before windows are cut): ``rm_windows`` stores
   ``--windows`` 30-s windows spread over each track, ``rm_single`` one window
   at the track's centre.
3. Import the reference's genre checkpoint (``python -m crnn_jax.import_reference``).
4. Train every run (one config file each in configs/, runs.py) with ``python
   main.py`` (the commands are printed and saved); runs trained on ``rm_single``
   are then evaluated (``--mode=eval``) on ``rm_windows``, so every run is graded
   on the same test split, per clip and per track (mean of the window probabilities).
5. Print one table (tables.py): clip and track top-1 (with a 95% interval),
   macro F1, wall time.

With ``--folds=K`` every chosen run runs K times instead, on a grouped K-fold
cross-validation of the same tracks (folds.py): fold k is the test split, fold
k+1 the validation split and the rest train. Every track is tested exactly once,
so the table gives each fold's clip top-1, their mean and spread, and track top-1
pooled over all tracks. With ``--cv_validation=held_out`` run k trains on every
fold but k instead, one more group per style; one track of each training group is
held out as its validation split, which can then only monitor (it shares groups
with training), so every run keeps its last epoch.

Sizes are flags. The defaults (at most 12 tracks per style, 3 windows each)
keep the whole run near 40 minutes on 2 idle CPU cores; the README beside this
module has the measured tables and their exact commands.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence

from data_prep import split
from experiments.real_music import folds, library, runs, tables


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--work', default='data/real_music', help='everything is written here')
  p.add_argument('--debs_dir', default='', help='.deb files already downloaded (default: '
                 'WORK/debs, filled with apt-get download)')
  p.add_argument('--checkpoint', default=runs.REFERENCE_CHECKPOINT, help='the reference '
                 "genre model's .pth (docs/reference.md section 8)")
  p.add_argument('--styles', default=library.DEFAULT_STYLES, help='recorded: orchestral, '
                 'electronic, rock_metal, ambient; rendered from mma grooves: jazz, rock, latin')
  p.add_argument('--tracks_per_style', type=int, default=12)
  p.add_argument('--windows', type=int, default=3, help='30-s windows per track (rm_windows)')
  p.add_argument('--split', default='0.55,0.15,0.30', help='train,validation,test fractions')
  p.add_argument('--rows', default='', help='comma-separated runs to train: row numbers '
                 '(1-based, the tables\' order) or config file names (default: all)')
  p.add_argument('--seed', type=int, default=0, help='which tracks are chosen (and, with '
                 '--folds, how groups are dealt)')
  p.add_argument('--folds', type=int, default=0, help='K >= 3: grouped K-fold cross-validation '
                 'of the chosen runs instead of one split (0: one split, --split)')
  p.add_argument('--cv_validation', choices=split.CV_VALIDATION, default='fold',
                 help="with --folds, what run k validates on: 'fold', fold k+1 (its best epoch "
                 "is kept); 'held_out', one track of each training group, every other fold "
                 'trains, the last epoch is kept')
  args = p.parse_args(argv)
  if args.cv_validation != 'fold' and not args.folds:
    p.error(f'--cv_validation={args.cv_validation} needs --folds=K (one split: --split)')
  if args.folds and args.folds < 3:
    p.error(f'--folds={args.folds}: cross-validation needs 3 or more folds (test, validation '
            'and training each take one or more); 0 runs one split')
  return args


def prepare(args: argparse.Namespace, manifest: str, log: str) -> dict[str, list[str]]:
  """The two data sets of one split and the imported reference model; their commands."""
  data_dir = os.path.join(args.work, 'tfds')
  commands = {}
  for name, windows in runs.windows_per_track(args.windows).items():
    commands[name] = runs.build_command(manifest, data_dir, name, windows,
                                        [f'--split={args.split}'])
    runs.execute(commands[name], log)
  commands.update(runs.import_reference(args.work, args.checkpoint, log))
  return commands


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  every_run = runs.all_runs()
  chosen = runs.chosen_runs(every_run, args.rows)
  order = [run.name for run in every_run]
  os.makedirs(args.work, exist_ok=True)
  log = os.path.join(args.work, 'log.txt')
  t0 = time.time()
  manifest = library.assemble(args)
  chance = 1 / len(library.styles_of(args))
  if args.folds:
    runs.import_reference(args.work, args.checkpoint, log)
    print(tables.cv_table(folds.run_folds(args, manifest, chosen, order, log), chance))
    where = os.path.join(args.work, 'folds', 'results.json')
  else:
    prepare(args, manifest, log)
    data_dir, runs_dir = os.path.join(args.work, 'tfds'), os.path.join(args.work, 'runs')
    reference = runs.reference_flags(args.work, library.styles_of(args))
    results = tables.merge_results(
        os.path.join(args.work, 'results.json'),
        [runs.train_run(run, data_dir, runs_dir, log, reference) for run in chosen], order)
    print(tables.table(results, chance))
    where = os.path.join(args.work, 'results.json')
  print(f'\ntotal {time.time() - t0:.0f} s; commands and results in {where}')
  return 0
