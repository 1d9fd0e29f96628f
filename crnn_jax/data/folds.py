"""Cross-validation folds of a data set's training split.

With ``config.data.cv_folds`` = K > 1 a run sees a view of the data set: the
training split's examples are dealt into K folds, whole groups per fold
(the first artist of artist_id, as the build's split groups tracks: an artist
or album where the source names one, else the track, so a track's windows stay
together), every class in every fold, seeded by
``config.seed``; fold ``config.data.cv_fold`` becomes the run's test split
and the other folds its training split, while the validation split stays as
it is. The data set's own test split is never read, so K such runs estimate
how a recipe does on tracks it has not seen (crnn_jax/recipes/choose.py)
without touching the test figure.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np

from crnn_jax.core.errors import UserError


def first_artist(artist_id: str) -> str:
  """The artist a track is grouped by: the first of its artist_id ('A; B' ->
  'a'), case folded; '' where it names none. The build's split
  (data_prep/split.py) and the folds below group by it alike."""
  return artist_id.split(';')[0].strip().casefold()


def group_folds(tracks: Sequence[tuple[str, str]], folds: int, seed: int) -> dict[str, int]:
  """(label, group) per track -> each group's fold, 0 to ``folds`` - 1. A group
  (artist, album, package) is never split, even where it holds two labels. Each
  label's groups are dealt largest first to the fold holding the fewest of that
  label's tracks (ties: fewest tracks overall, then seeded order among groups of
  one size), so every fold holds every label. ValueError where a label has fewer
  groups than folds, or shared groups leave a fold without one of its labels."""
  sizes: dict[str, dict[str, int]] = {}
  for label, group in tracks:
    sizes.setdefault(label, {}).setdefault(group, 0)
    sizes[label][group] += 1
  few = {s: len(g) for s, g in sizes.items() if len(g) < folds}
  if few:
    raise ValueError(f'{folds} folds: every label needs as many groups (artists, albums, '
                     f'packages); too few in {few}: use fewer folds')
  rng = random.Random(seed)
  fold_of: dict[str, int] = {}
  held = {s: [0] * folds for s in sizes}
  total = [0] * folds
  for label in sorted(sizes):
    groups = sorted(g for g in sizes[label] if g not in fold_of)
    rng.shuffle(groups)  # seeded order among groups of one size
    for group in sorted(groups, key=lambda g: -sizes[label][g]):
      k = min(range(folds), key=lambda f: (held[label][f], total[f]))
      fold_of[group] = k
      for s, label_sizes in sizes.items():  # a shared group counts for each of its labels
        held[s][k] += label_sizes.get(group, 0)
        total[k] += label_sizes.get(group, 0)
  missing = {s: [k for k in range(folds) if not held[s][k]] for s in sizes}
  missing = {s: empty for s, empty in missing.items() if empty}
  if missing:
    raise ValueError(f'{folds} folds: groups shared between labels leave folds {missing} '
                     'without a track of that label: use fewer folds')
  return fold_of


def groups_of(artist_ids: Sequence[str]) -> np.ndarray:
  """Every example's group: its first artist, else its artist_id (a track
  without an artist is its own group)."""
  return np.asarray([first_artist(a) or a for a in np.asarray(artist_ids).astype(str)], object)


def assign(labels: np.ndarray, artist_ids: Sequence[str], folds: int, seed: int,
           class_names: Sequence[str]) -> np.ndarray:
  """The fold of every example (``group_folds`` over their classes and the
  groups_of their artist_ids): every class in every fold, so every fold's
  complement trains on every class, which scikit-learn's StratifiedGroupKFold
  does not promise. A UserError, naming the fix, where that cannot be."""
  groups = groups_of(artist_ids)
  try:
    fold_of = group_folds([(class_names[c], g) for c, g in zip(labels, groups)], folds, seed)
  except ValueError as e:
    reason = str(e).removesuffix(': use fewer folds')
    raise UserError(f'cross-validation of the training split: {reason}; add tracks, lower '
                    '--config.recipe_folds, or pick a recipe by hand '
                    '(--config.recipe=probe|head|finetune)') from None
  return np.asarray([fold_of[g] for g in groups], np.int64)


class Subset:
  """Some examples of a random-access source, by index, as a source."""

  def __init__(self, source: Any, indices: np.ndarray):
    self._source = source
    self._indices = np.asarray(indices, np.int64)

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, i: int) -> Any:
    return self._source[int(self._indices[i])]


def view(sources: dict[str, Any], fold_of: np.ndarray, fold: int) -> dict[str, Any]:
  """The splits a fold run sees: train = the other folds, test = this fold."""
  return {'train': Subset(sources['train'], np.flatnonzero(fold_of != fold)),
          'validation': sources['validation'],
          'test': Subset(sources['train'], np.flatnonzero(fold_of == fold))}


def split_sizes(sizes: dict[str, int], fold_of: np.ndarray, fold: int) -> dict[str, int]:
  return {**sizes, 'train': int(np.sum(fold_of != fold)), 'test': int(np.sum(fold_of == fold))}
