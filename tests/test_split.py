"""Grouped K-fold cross-validation (crnn_jax.data.folds.group_folds): whole
groups per fold, every label in every fold; and what each run validates on
(data_prep.split)."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from crnn_jax.data import folds
from crnn_jax.data.folds import group_folds
from data_prep import split
from data_prep.records import Track


def _tracks():
  """(label, group) per track: 5 albums of 2-6 orchestral tracks, 4 jazz grooves
  of 2, and one album holding both labels."""
  tracks = [('orch', f'album{g}') for g in range(5) for _ in range(2 + g)]
  tracks += [('jazz', f'groove{g}') for g in range(4) for _ in range(2)]
  return tracks + [('orch', 'mixed'), ('jazz', 'mixed')]


def test_group_folds_keeps_groups_whole_and_every_label_in_every_fold():
  tracks = _tracks()
  fold_of = group_folds(tracks, 3, seed=0)
  assert set(fold_of) == {g for _, g in tracks}  # one fold per group: never split
  for label in ('orch', 'jazz'):
    assert {fold_of[g] for s, g in tracks if s == label} == {0, 1, 2}
  per_fold = collections.Counter(fold_of[g] for s, g in tracks if s == 'orch')
  assert max(per_fold.values()) - min(per_fold.values()) <= 2  # 21 tracks dealt about evenly


def test_group_folds_are_seeded():
  tracks = [('orch', f'album{g}') for g in range(6) for _ in range(3)]
  assert group_folds(tracks, 3, seed=0) == group_folds(tracks, 3, seed=0)
  assert any(group_folds(tracks, 3, seed=0) != group_folds(tracks, 3, seed=s)
             for s in range(1, 5))


def test_group_folds_refuse_what_cannot_fill_every_fold():
  with pytest.raises(ValueError, match=r"too few in {'jazz': 2}: use fewer folds"):
    group_folds([('orch', 'a'), ('orch', 'b'), ('orch', 'c'),
                       ('jazz', 'd'), ('jazz', 'e')], 3, seed=0)
  # Every orchestral group also holds jazz; jazz, dealt first, puts its own
  # group c alone in a fold, which then has no orchestral track.
  shared = ([('jazz', 'a')] + [('orch', 'a')] * 2 + [('jazz', 'b'), ('orch', 'b')] * 2
            + [('jazz', 'c')] * 2 + [('jazz', 'd')] + [('orch', 'd')] * 3)
  with pytest.raises(ValueError, match=r"leave folds {'orch': \[0\]} without a track"):
    group_folds(shared, 3, seed=0)


def _track(track_id: str, artist_id: str, artist_known: bool) -> Track:
  return Track(track_id=track_id, path='', label='x', labels=('x',), artist_id=artist_id,
               origin='', artist_known=artist_known)


def test_the_folds_group_an_artist_as_the_build_split_does():
  """The build keeps 'Nightwish; Tarja' with 'nightwish' (the first artist, case
  folded); the folds of its training split must too, or an artist's tracks
  train in one fold and test in another."""
  artist_ids = ['Nightwish; Tarja', 'nightwish', 'NIGHTWISH ', 'Opeth', 'opeth; Steven Wilson',
                'Ghost', 'ghost', 'Tool', 'tool']
  labels = np.array([0, 0, 0, 1, 1, 0, 0, 1, 1])
  fold = folds.assign(labels, artist_ids, 2, seed=0, class_names=['sym', 'prog'])
  assert len({fold[i] for i in range(3)}) == 1
  assert fold[3] == fold[4] and fold[5] == fold[6] and fold[7] == fold[8]
  keys = [split.artist_key(_track(f't{i}', a, artist_known=True)) for i, a in enumerate(artist_ids)]
  assert keys == ['artist:' + g for g in folds.groups_of(artist_ids)]
  no_artist = _track('t9', 't9', artist_known=False)
  assert split.artist_key(no_artist) == 'track:t9' and list(folds.groups_of(['t9'])) == ['t9']


def test_each_run_tests_its_fold_and_validates_as_asked():
  splits = [split.fold_split(fold, 1, 4, held_out=False) for fold in range(4)]
  assert splits == ['train', 'test', 'validation', 'train']  # run k validates on fold k+1
  assert split.fold_split(0, 3, 4, held_out=False) == 'validation'  # wraps around
  held = [split.fold_split(fold, 1, 4, held_out=True, validation='held_out') for fold in (0, 1)]
  assert held == ['validation', 'test']  # a held-out track validates wherever it trains
  assert split.fold_split(2, 1, 4, held_out=False, validation='held_out') == 'train'


def test_held_out_tracks_one_per_group_of_three_or_more():
  tracks = [('a', 'a/1'), ('a', 'a/2'), ('a', 'a/3'), ('b', 'b/1'), ('b', 'b/2')]
  held = split.held_out_tracks(tracks, seed=0)
  assert len(held) == 1 and held.pop().startswith('a/')
  assert split.held_out_tracks(tracks, seed=0, min_group=2) & {'b/1', 'b/2'}
  assert split.held_out_tracks(tracks, seed=0) == split.held_out_tracks(tracks, seed=0)
