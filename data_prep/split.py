"""Train / validation / test splits: stratified by label, whole artists per split;
and the splits of each run of a grouped K-fold cross-validation (the folds:
crnn_jax.data.folds.group_folds)."""

from __future__ import annotations

import collections
import math
import random
from collections.abc import Sequence

import numpy as np

from crnn_jax.data import folds
from crnn_jax.data.schema import SPLITS
from data_prep.records import Track


def artist_key(track: Track) -> str:
  """The group a track is split with: its normalised first artist, else itself."""
  name = folds.first_artist(track.artist_id) if track.artist_known else ''
  return 'artist:' + name if name else 'track:' + track.track_id


def grouping(tracks: Sequence[Track], group_by_artist: bool) -> str:
  """What the split was really grouped by, for the metadata and the summary."""
  if not group_by_artist:
    return 'track'
  unknown = sum(1 for t in tracks if not artist_key(t).startswith('artist:'))
  if not unknown:
    return 'artist'
  if unknown == len(tracks):
    return 'track (no artist information)'
  return (f'artist ({unknown} of {len(tracks)} tracks without artist information, '
          'each its own group)')


def assign_splits(labels: Sequence[int], groups: Sequence[str],
                  fractions: Sequence[float] = (0.64, 0.16, 0.20), seed: int = 42,
                  group_by_artist: bool = True, stratify: bool = True) -> list[str]:
  """Split name for every track.

  Default: whole artist groups are placed greedily (largest first, ties in
  seeded random order) into the split that most needs the group's labels
  relative to its target share, so labels are stratified and no artist is in
  two splits. ``group_by_artist=False, stratify=False`` is the reference's
  per-track random split: ceil(20%) test, then floor(20%) of the rest as
  validation (sklearn's and fastai's rounding).
  """
  n = len(labels)
  frac = np.asarray(fractions, dtype=np.float64)
  if frac.shape != (3,) or np.any(frac < 0) or not math.isclose(frac.sum(), 1.0, abs_tol=1e-6):
    raise ValueError(f'split fractions must be 3 non-negative numbers summing to 1, got {fractions}')
  rng = np.random.default_rng(seed)
  out = [''] * n
  if not group_by_artist and not stratify:
    perm = rng.permutation(n)
    n_test = math.ceil(frac[2] * n)
    rest = perm[n_test:]
    # 0.16 / 0.8 is 0.19999999999999998 in floats: rounded, fastai's int(0.2 * n).
    n_val = int(round(frac[1] / max(frac[0] + frac[1], 1e-12), 9) * len(rest))
    for i in perm[:n_test]:
      out[i] = 'test'
    for i in rest[:n_val]:
      out[i] = 'validation'
    for i in rest[n_val:]:
      out[i] = 'train'
    return out
  keys = list(groups) if group_by_artist else [str(i) for i in range(n)]
  strata = list(labels) if stratify else [0] * n
  members: dict[str, list[int]] = collections.defaultdict(list)
  for i, k in enumerate(keys):
    members[k].append(i)
  names = sorted(members)
  order = rng.permutation(len(names))
  ordered = sorted((names[j] for j in order), key=lambda g: -len(members[g]))  # stable
  num_strata = max(strata) + 1 if n else 1
  totals = np.bincount(strata, minlength=num_strata).astype(np.float64)
  target = frac[:, None] * totals[None, :]
  current = np.zeros_like(target)
  for g in ordered:
    counts = np.bincount([strata[i] for i in members[g]], minlength=num_strata)
    need = ((target - current) * counts[None, :] / np.maximum(totals, 1)[None, :]).sum(axis=1)
    need[frac == 0] = -np.inf
    s = int(np.argmax(need))
    current[s] += counts
    for i in members[g]:
      out[i] = SPLITS[s]
  # Tiny sets: a split with a non-zero share must not be empty (TFDS cannot
  # write an empty split); move it the smallest group of the fullest split.
  placed = {g: out[members[g][0]] for g in ordered}
  for s, f in zip(SPLITS, frac):
    if f > 0 and s not in placed.values():
      donors = collections.Counter(placed.values())
      donor = max(donors, key=lambda d: (donors[d], -SPLITS.index(d)))
      if donors[donor] < 2:
        raise ValueError(f'too few {"artists" if group_by_artist else "tracks"} '
                         f'({len(ordered)}) to fill the three splits {tuple(fractions)}')
      g = next(g for g in reversed(ordered) if placed[g] == donor)
      placed[g] = s
      for i in members[g]:
        out[i] = s
  return out


def source_splits(tracks: Sequence[Track]) -> list[str]:
  """Each track's split as its source gives it (a manifest's split column,
  FMA's set.split, MTG-Jamendo's split files), for ``build --split_by=source``."""
  missing = [t for t in tracks if t.split not in SPLITS]
  if missing:
    raise ValueError(f'{len(missing)} of {len(tracks)} tracks have no official split in the '
                     f'source (first: {missing[0].origin}); the source must give one for each '
                     '(a manifest split column, FMA tracks.csv, an MTG-Jamendo split folder), '
                     'or use another --split_by')
  return [t.split for t in tracks]


# What run k of a grouped K-fold cross-validation validates on: 'fold', the
# groups of fold k+1 (the rest train); 'held_out', one track of each training
# group of at least HOLD_OUT_MIN_GROUP tracks (every fold but k trains).
CV_VALIDATION = ('fold', 'held_out')
HOLD_OUT_MIN_GROUP = 3


def fold_split(fold: int, k: int, folds: int, held_out: bool, validation: str = 'fold') -> str:
  """The split, in run k of a grouped K-fold, of a track whose group is in fold
  ``fold``: fold k tests; ``validation`` (CV_VALIDATION) says what validates
  (``held_out``: the track is one held_out_tracks chose)."""
  if fold == k:
    return 'test'
  if validation == 'fold':
    return 'validation' if fold == (k + 1) % folds else 'train'
  return 'validation' if held_out else 'train'


def held_out_tracks(tracks: Sequence[tuple[str, str]], seed: int,
                    min_group: int = HOLD_OUT_MIN_GROUP) -> set[str]:
  """(group, track id) per track -> one track id of each group of ``min_group``
  or more (seeded): the validation split of ``held_out``, wherever its group trains."""
  members: dict[str, list[str]] = {}
  for group, track_id in tracks:
    members.setdefault(group, []).append(track_id)
  rng = random.Random(seed)
  return {rng.choice(sorted(ids)) for _, ids in sorted(members.items()) if len(ids) >= min_group}
