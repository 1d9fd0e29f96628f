"""The real-music study's table and its merged reruns, its grouped folds and
the held-out validation."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from crnn_jax.data.folds import group_folds
from experiments.real_music import folds, runs, study, tables


def _music_row(name, clip_top1, tracks_right, tracks=60):
  track = {'top1': tracks_right / tracks, 'count': tracks, 'macro': {'f1': 0.5}}
  test = {'top1': clip_top1, 'count': 3 * tracks, 'macro': {'f1': 0.4}, 'track': track,
          'class_names': ['a', 'b', 'c', 'd', 'e'],
          'per_class': {c: {'support': 36} for c in 'abcde'}}
  return {'row': name, 'seconds': 100.0, 'test': test,
          'checkpoint': {'checkpoint': 'best', 'epoch': 7}}


def test_real_music_table_intervals_and_merged_reruns(tmp_path):
  path = str(tmp_path / 'results.json')
  tables.merge_results(path, [_music_row('fine-tune', 0.8, 40)], ['scratch', 'fine-tune'])
  results = tables.merge_results(path, [_music_row('scratch', 0.5, 30),
                                            _music_row('fine-tune', 0.822, 50)],
                                     ['scratch', 'fine-tune'])
  assert [r['row'] for r in results] == ['scratch', 'fine-tune']  # the table's order
  lines = tables.table(results, 0.2).splitlines()
  # Wilson 95% intervals of 30 and 50 of 60 tracks; the rerun's fine-tune row replaced the first.
  assert lines[2].startswith(
      '| scratch | 0.500 | 0.500 (0.377-0.623) | 0.400 | 0.500 | best (epoch 7)')
  assert lines[3].startswith('| fine-tune | 0.822 | 0.833 (0.720-0.907) |')
  assert ('180 clips of 60 tracks, 5 styles; chance (uniform) 0.200, majority class 0.200'
          in lines[5])


def test_real_music_folds_test_every_group_once(tmp_path):
  """Grouped K-fold: no group in two folds, every style tested in every fold,
  run k tests on fold k and validates on fold k+1; the table pools tracks."""
  tracks = [('orch', f'album{g}') for g in range(4) for _ in range(3 + g)]
  tracks += [('jazz', f'groove{g}') for g in range(6) for _ in range(2)]
  tracks += [('jazz', 'album3')]  # one album holding two styles stays in one fold
  fold_of = group_folds(tracks, 4, seed=0)
  assert set(fold_of.values()) == {0, 1, 2, 3}
  for style in ('orch', 'jazz'):  # each fold holds a group of every style
    assert {fold_of[g] for s, g in tracks if s == style} == {0, 1, 2, 3}
  with pytest.raises(ValueError, match="too few in {'orch': 4}: use fewer folds"):
    group_folds(tracks, 5, seed=0)
  manifest = tmp_path / 'manifest.csv'
  manifest.write_text('path,label,artist,track_id\n' + ''.join(
      f'{s}/{i}.wav,{s},{g},{g}/{i}\n' for i, (s, g) in enumerate(tracks)))
  splits = {}  # track -> its split in each fold
  for path in folds.fold_manifests(str(manifest), 4, seed=0):
    for line in Path(path).read_text().splitlines()[1:]:
      cells = line.split(',')
      splits.setdefault(cells[3], []).append(cells[4])
  for track, per_fold in splits.items():
    k = fold_of[track.split('/')[0]]
    # Its group's fold k is run k's test split and run k-1's validation split.
    assert per_fold[k] == 'test' and per_fold[(k - 1) % 4] == 'validation'
    assert per_fold.count('test') == 1 and per_fold.count('train') == 2
  runs = [dict(_music_row('fine-tune', top1, right, tracks=10), fold=k)
          for k, (top1, right) in enumerate([(0.9, 9), (0.8, 8), (0.7, 8), (0.6, 5)])]
  lines = tables.cv_table(runs, 0.5).splitlines()
  # Clip top-1 mean 0.75, sd 0.129; tracks pooled: 30 of 40, Wilson 0.598-0.858.
  assert lines[2].startswith('| fine-tune | 0.900 0.800 0.700 0.600 | 0.750 (0.129) | '
                             '0.750 (0.598-0.858) | 0.400 | 0.500 | 400 |')
  assert "folds' test clips/tracks: 30/10 30/10 30/10 30/10" in lines[4]


def test_real_music_held_out_validation_trains_on_every_other_fold(tmp_path):
  """--cv_validation=held_out: run k tests fold k like 'fold' does, trains on
  every other fold, and validates on one track of each training group of 3 or
  more; its setup names it, so it is never pooled with the 'fold' runs."""
  tracks = [('orch', f'album{g}', 3 + g) for g in range(4)] + [('jazz', 'duo', 2)]
  tracks += [('jazz', f'groove{g}', 4) for g in range(3)]
  manifest = tmp_path / 'manifest.csv'
  manifest.write_text('path,label,artist,track_id\n' + ''.join(
      f'{s}/{g}{i}.wav,{s},{g},{g}/{i}\n' for s, g, n in tracks for i in range(n)))
  fold_of = group_folds([(s, g) for s, g, n in tracks for _ in range(n)], 3, seed=0)
  held = set()
  for k, path in enumerate(folds.fold_manifests(str(manifest), 3, 0, 'held_out')):
    for line in Path(path).read_text().splitlines()[1:]:
      group, track, split = line.split(',')[2:]
      if fold_of[group] == k:
        assert split == 'test'
      elif split == 'validation':
        held.add(track)
      else:
        assert split == 'train'
  # The same one track of each group of 3 or more in every run; the duo's two both train.
  assert sorted(t.split('/')[0] for t in held) == sorted(g for _, g, n in tracks if n >= 3)
  assert folds.fold_setup(str(manifest), 3, 0, 'held_out') == (
      folds.fold_setup(str(manifest), 3, 0) + '-held_out')
  with pytest.raises(SystemExit):
    study.parse_args(['--cv_validation=held_out'])  # one split has no folds


def test_real_music_fold_results_merge_per_row_fold_and_setup(tmp_path):
  """A rerun replaces only its own rows' folds of the same cross-validation;
  another one (other tracks, K or seed) is kept apart, never pooled."""
  path = str(tmp_path / 'results.json')
  key, order = ('row', 'fold', 'setup'), ['scratch', 'fine-tune']

  def fold_row(name, fold, setup, top1):
    return dict(_music_row(name, top1, 6, tracks=10), fold=fold, setup=setup)

  tables.merge_results(path, [fold_row(n, k, 'A', 0.5) for n in order for k in range(3)],
                           order, key=key)
  tables.merge_results(path, [fold_row('fine-tune', k, 'B', 0.1) for k in range(4)],
                           order, key=key)
  results = tables.merge_results(path, [fold_row('fine-tune', 1, 'A', 0.9)], order, key=key)
  assert [(r['row'], r['fold'], r['setup'], r['test']['top1']) for r in results
          if r['setup'] == 'A'] == [
      ('scratch', 0, 'A', 0.5), ('scratch', 1, 'A', 0.5), ('scratch', 2, 'A', 0.5),
      ('fine-tune', 0, 'A', 0.5), ('fine-tune', 1, 'A', 0.9), ('fine-tune', 2, 'A', 0.5)]
  assert sum(r['setup'] == 'B' for r in results) == 4
  with pytest.raises(SystemExit):
    study.parse_args(['--folds=2'])


def test_every_run_is_a_config_file_with_its_own_row_and_name(tmp_path):
  every = runs.all_runs()
  rows = [r.row for r in every]
  assert rows == sorted(set(rows)) and len({r.name for r in every}) == len(every)
  by_name = {os.path.basename(r.config_file): r for r in every}
  assert runs.chosen_runs(every, '6,finetune') == [every[5], by_name['finetune.py']]
  with pytest.raises(SystemExit, match='no run'):
    runs.chosen_runs(every, '99')
  (tmp_path / 'plain.py').write_text('from configs import default\nget_config = default.get_config\n')
  with pytest.raises(SystemExit, match='config.study must give'):
    runs.all_runs(str(tmp_path))


def test_a_run_is_its_config_file_plus_the_work_folders(tmp_path, monkeypatch):
  """main.py gets the run's config file; only runs from the reference model get
  it and the class map; a one-window run is then graded on rm_windows."""
  commands = []

  def execute(command, log):
    del log
    commands.append(command)
    workdir = next(a.split('=', 1)[1] for a in command if a.startswith('--workdir='))
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, 'results.json'), 'w') as f:
      json.dump({'test': {'top1': 0.5}, 'checkpoint': {'checkpoint': 'best'}}, f)
    return 1.0

  monkeypatch.setattr(runs, 'execute', execute)
  by_name = {os.path.basename(r.config_file): r for r in runs.all_runs()}
  reference = runs.reference_flags(str(tmp_path), ['electronic', 'jazz'])
  assert reference[1] == '--config.finetune.class_map=electronic=techno'
  scratch = runs.train_run(by_name['scratch.py'], 'D', str(tmp_path), 'log', reference)
  assert commands[0][2] == '--config=experiments/real_music/configs/scratch.py'
  assert not [a for a in commands[0] if 'init_from' in a or 'class_map' in a]
  single = runs.train_run(by_name['finetune_single.py'], 'D', str(tmp_path), 'log', reference)
  assert all(set(reference) <= set(c) for c in commands[1:])
  assert commands[1][-1] == '--config.data.name=rm_single'
  assert commands[2][-2:] == ['--config.data.name=rm_windows', '--mode=eval']
  assert scratch['row'] == 'small-data recipe, from scratch' and len(single['commands']) == 2
