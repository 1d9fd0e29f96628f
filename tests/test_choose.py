"""The recipe choice (config.recipe='auto'): folds of the training split, the
choice from out-of-fold probabilities, and (slow) the whole choice on two
tiny data sets built so that one recipe is clearly better than the others.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import tiny_config, write_tiny
from tiny_models import data_info, variables

from configs import default, finetune
from crnn_jax.core.errors import UserError
from crnn_jax.data import folds, source
from crnn_jax.evaluate import report
from crnn_jax.recipes import choose
from crnn_jax.recipes import run as recipes
from crnn_jax.train import from_weights


def _oof(track_probs: list[list[float]], labels: list[int], windows: int = 1) -> choose.OutOfFold:
  """Out-of-fold rows of tracks t0, t1, ... with ``windows`` equal clips each."""
  probs = np.repeat(np.asarray(track_probs, float), windows, axis=0)
  ids = np.repeat([f't{i}' for i in range(len(labels))], windows)
  return choose.OutOfFold(ids, np.repeat(labels, windows), probs)


LABELS = [0, 0, 1, 1]


def test_the_best_held_out_track_top1_wins_and_ties_go_to_the_lower_log_loss():
  probe = _oof([[.9, .1], [.6, .4], [.4, .6], [.6, .4]], LABELS)  # 3 of 4
  finetune = _oof([[.9, .1], [.6, .4], [.4, .6], [.3, .7]], LABELS, windows=3)  # 4 of 4
  head = _oof([[.1, .9], [.6, .4], [.4, .6], [.3, .7]], LABELS)  # 3 of 4
  choice = choose.choose({'probe': probe, 'head': head, 'finetune': finetune})
  assert (choice.scores['probe'].right, choice.scores['finetune'].right) == (3, 4)
  assert choice.scores['finetune'].tracks == 4  # three clips a track, one track
  # The average of probe and fine-tune names 4 of 4 too, less surely: the fine-tune wins.
  average = choice.scores[choose.AVERAGE]
  assert average.kept and average.right == 4
  assert choice.scores['finetune'].log_loss < average.log_loss
  assert choice.winner == 'finetune'
  assert choice.scores['probe'].log_loss == pytest.approx(
      -np.mean(np.log([.9, .6, .6, .4])))
  assert choose.choose({'probe': probe, 'finetune': probe, 'head': head}).winner == 'probe'
  # 3 of 4 each: the head is sure of its wrong t0, so the lower log-loss is the other's.
  assert choose.choose({'finetune': probe, 'head': head}).winner == 'finetune'
  record = json.loads(json.dumps(choice.to_json()))
  assert record['chosen'] == 'finetune'
  assert record['cross_validated']['probe']['track_top1_interval'] == pytest.approx(
      [0.3006, 0.9544], abs=1e-4)  # Wilson, 3 of 4
  line = choose.describe({**record, 'folds': 3})
  assert line.startswith('recipe: finetune (a tie in top-1: the lower log-loss), chosen by '
                         '3-fold cross-validation')
  assert 'probe 0.750 (0.30-0.95, 3/4; log-loss 0.511)' in line
  # Exactly equal candidates: the simpler.
  tied = choose.choose({'probe': probe, 'finetune': probe}, order=['probe', 'finetune'])
  assert choose.describe({**tied.to_json(), 'folds': 3}).startswith(
      'recipe: probe (a tie: the simpler recipe), chosen by')
  with pytest.raises(ValueError, match='different tracks'):
    choose.choose({'probe': probe, 'finetune': _oof([[.5, .5]] * 3, [0, 0, 1])})


def test_the_average_wins_where_it_names_more_tracks_than_either_and_is_kept_only_if_named():
  """The probe is sure and right on t0 and t2 and unsure and wrong on the
  others; the fine-tune the other way round: each names 2 of 4, their
  average all 4."""
  probe = _oof([[.9, .1], [.45, .55], [.2, .8], [.55, .45]], LABELS)
  finetune = _oof([[.45, .55], [.9, .1], [.55, .45], [.2, .8]], LABELS)
  choice = choose.choose({'probe': probe, 'finetune': finetune})
  assert {n: s.right for n, s in choice.scores.items()} == {'probe': 2, 'finetune': 2,
                                                           'average': 4}
  assert choice.winner == 'average'
  without = choose.choose({'probe': probe, 'finetune': finetune}, order=['probe', 'finetune'])
  assert without.winner != 'average' and not without.scores['average'].kept
  assert '(scored only: not a candidate)' in choose.describe({**without.to_json(), 'folds': 3})


def test_the_probe_wins_where_its_held_out_tracks_are_named_better():
  """Out-of-fold rows as the study's runs give them (three windows a track):
  the probe names 5 of 6 tracks (15 clips), the fine-tune 4, though it has 16
  clips right (two windows of each track it misses are right, the third is
  wrong by so much that it carries the mean): the choice is by track."""
  labels = [0, 0, 0, 1, 1, 1]
  probe = _oof([[.7, .3], [.6, .4], [.4, .6], [.3, .7], [.2, .8], [.4, .6]], labels, windows=3)
  finetune = choose.OutOfFold(
      np.repeat([f't{i}' for i in range(6)], 3), np.repeat(labels, 3),
      np.asarray([[.9, .1]] * 6 + [[.6, .4], [.6, .4], [0, 1]]
                 + [[.1, .9]] * 6 + [[.4, .6], [.4, .6], [1, 0]], float))
  right_clips = {n: int(np.sum(o.probabilities.argmax(1) == o.labels))
                 for n, o in (('probe', probe), ('finetune', finetune))}
  assert right_clips == {'probe': 15, 'finetune': 16}
  choice = choose.choose({'probe': probe, 'finetune': finetune})
  assert choice.winner == 'probe'
  assert (choice.scores['probe'].right, choice.scores['finetune'].right) == (5, 4)


def test_the_finetune_wins_where_its_held_out_tracks_are_named_better():
  labels = [0, 0, 1, 1, 2, 2]
  probe = _oof(np.eye(3)[[0, 1, 1, 2, 2, 0]] * .5 + .1, labels)  # 3 of 6
  finetune = _oof(np.eye(3)[[0, 0, 1, 1, 2, 1]] * .5 + .1, labels)  # 5 of 6
  choice = choose.choose({'probe': probe, 'finetune': finetune})
  assert choice.winner == 'finetune' and choice.scores['finetune'].right == 5
  assert choice.scores['finetune'].interval[0] > 0.4  # Wilson, 5 of 6


def test_folds_keep_groups_whole_stratify_and_are_seeded():
  rng = np.random.default_rng(0)
  groups = np.repeat([f'artist{i}' for i in range(30)], rng.integers(1, 4, 30))
  labels = np.array([int(g[6:]) % 3 for g in groups])
  fold = folds.assign(labels, groups, 3, seed=5, class_names=['a', 'b', 'c'])
  for g in set(groups):
    assert len(set(fold[groups == g])) == 1
  for k in range(3):
    assert set(labels[fold == k]) == {0, 1, 2}
  # A class with as many groups as folds, of unequal sizes: one group in each fold.
  few = np.array([f't{i}' for i in range(9)] + ['x', 'x', 'x', 'y', 'z'])
  few_fold = folds.assign(np.array([0] * 9 + [1] * 5), few, 3, 0, ['a', 'b'])
  assert sorted(few_fold[9:].tolist()) == sorted([few_fold[9]] * 3 + [k for k in range(3)
                                                                     if k != few_fold[9]])
  np.testing.assert_array_equal(fold, folds.assign(labels, groups, 3, 5, ['a', 'b', 'c']))
  assert not np.array_equal(fold, folds.assign(labels, groups, 3, 6, ['a', 'b', 'c']))
  with pytest.raises(UserError, match=r"training split: 3 folds: .* too few in {'b': 2}; add "
                                      'tracks, lower --config.recipe_folds'):
    folds.assign(np.array([0, 0, 0, 1, 1]), np.array(['x', 'y', 'z', 'v', 'w']), 3, 0,
                 ['a', 'b'])


def test_a_fold_view_trains_on_the_other_folds_and_tests_on_its_own(tiny_data_dir):
  config = tiny_config(tiny_data_dir)
  whole = source.read_track_ids(config, 'train')
  validation = source.read_track_ids(config, 'validation')
  config.data.cv_folds = 3
  held_out = []
  for k in range(3):
    config.data.cv_fold = k
    train, test = source.read_track_ids(config, 'train'), source.read_track_ids(config, 'test')
    assert not set(train) & set(test) and sorted([*train, *test]) == sorted(whole)
    np.testing.assert_array_equal(source.read_track_ids(config, 'validation'), validation)
    sizes = source.load_info(config).split_sizes
    assert (sizes['train'], sizes['test'], sizes['validation']) == (len(train), len(test), 16)
    labels = source.train_labels(config)
    assert len(labels) == len(train) and set(labels) == {0, 1}
    held_out += list(test)
  assert sorted(held_out) == sorted(whole)  # each training track held out once; test never read
  config.data.cv_fold = 3
  with pytest.raises(UserError, match=r'config.data.cv_fold=3: use 0..2'):
    source.load_info(config)


def test_candidates_are_checked(tiny_data_dir):
  config = tiny_config(tiny_data_dir)
  assert choose.candidates_of(config) == ['probe', 'finetune', 'average']  # head where named
  config.recipe_candidates = 'finetune, head,probe'
  assert choose.candidates_of(config) == ['probe', 'head', 'finetune']
  config.recipe_candidates = 'probe,lasso'
  with pytest.raises(UserError, match="config.recipe_candidates 'probe,lasso'"):
    choose.candidates_of(config)
  config.recipe_candidates = 'average,finetune'
  with pytest.raises(UserError, match='average is the mean of probe and finetune: name both'):
    choose.candidates_of(config)


# --------------------------------------------------------------------------
# The whole choice (slow: 2 fine-tunes on folds, then the winner)
# --------------------------------------------------------------------------
def _backbone(path, blind: bool = False) -> str:
  """tiny_models' pretrained model reading the tiny set's 1.47-s clips; with
  ``blind``, its last conv block's batch-norm scales are zero, so its
  embedding is the same for every input."""
  config = default.get_config()
  info = data_info(clip=1.47)
  weights = variables(config, info, seed=1)
  if blind:
    weights['params']['conv5']['bn']['scale'] = np.zeros(64, np.float32)
  from_weights.write_workdir(str(path), config, weights, info)
  return str(path)


def _auto_config(data_dir: str, backbone: str):
  config = finetune.get_config()
  config.data.name, config.data.data_dir = 'tiny', data_dir
  config.init_from, config.recipe, config.recipe_folds = backbone, 'auto', 2
  config.train.eval_batch_size = 16
  return config


@pytest.mark.slow
def test_the_probe_wins_where_a_faint_cue_is_clear_in_the_pretrained_features(tmp_path):
  """The classes differ by a faint band (12 of 255 brighter than noise of
  0-60). In the pretrained features it is a small shift, the same on every
  track: the probe standardises them and reads it exactly. The fine-tune
  (configs/finetune.py as it is: 8 epochs of 4 steps on 32 clips) fits its
  training clips yet names held-out ones at chance. So the probe is clearly
  best."""
  data_dir = write_tiny(str(tmp_path / 'tfds'), brightness=12)
  config = _auto_config(data_dir, _backbone(tmp_path / 'backbone'))
  results = recipes.train(config, str(tmp_path / 'w'))
  cv = results['recipe']['cross_validated']
  assert results['recipe']['chosen'] == 'probe'
  assert cv['probe']['track_top1'] >= 0.95 and cv['probe']['tracks'] == 64
  assert cv['finetune']['track_top1'] <= 0.75
  assert (tmp_path / 'w' / 'probe.json').exists() and results['test']['top1'] >= 0.9


@pytest.mark.slow
def test_the_finetune_wins_where_the_pretrained_features_are_blind(tiny_data_dir, tmp_path):
  """The pretrained model's embedding is constant (its last block's scales
  are zero): the probe on it can only guess the commonest class; training
  every layer (batch norm updating, a learning rate for the body) turns the
  scales on and learns the bright band. So the fine-tune is clearly best."""
  config = _auto_config(tiny_data_dir, _backbone(tmp_path / 'backbone', blind=True))
  config.finetune.body_lr_scale, config.train.max_lr = 1.0, 3e-3
  workdir = tmp_path / 'w'
  results = recipes.train(config, str(workdir))
  cv = results['recipe']['cross_validated']
  assert results['recipe']['chosen'] == 'finetune'
  assert cv['finetune']['track_top1'] >= 0.9
  assert cv['probe']['track_top1'] <= 0.6
  assert results['test']['top1'] >= 0.8 and not (workdir / 'probe.json').exists()
  # The fold runs tested training tracks only: the test split was read once, at the end.
  test_tracks = set(source.read_track_ids(config, 'test'))
  for k in range(2):
    held_out = set(report.read_predictions(str(workdir / 'cv' / f'finetune_fold{k}'),
                                           'test')['track_id'])
    assert held_out and not held_out & test_tracks
  # A rerun reuses the finished fold runs (their logs are not written again).
  logs = sorted((workdir / 'cv').glob('*/log.txt'))
  sizes = [log.stat().st_size for log in logs]
  again = recipes.train(config, str(workdir))
  assert again['recipe'] == results['recipe'] and len(logs) == 2
  assert [log.stat().st_size for log in logs] == sizes
