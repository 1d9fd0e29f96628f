"""Cross-validation folds of a data set's training split.

With ``config.data.cv_folds`` = K > 1 a run sees a view of the data set: the
training split's examples are dealt into K folds, whole groups per fold
(artist_id: an artist or album where the source names one, else the track, so
a track's windows stay together), every class in every fold, seeded by
``config.seed``; fold ``config.data.cv_fold`` becomes the run's test split
and the other folds its training split, while the validation split stays as
it is. The data set's own test split is never read, so K such runs estimate
how a recipe does on tracks it has not seen (crnn_jax/recipes/choose.py)
without touching the test figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from crnn_jax.core.errors import UserError


def assign(labels: np.ndarray, groups: np.ndarray, folds: int, seed: int,
           class_names: Sequence[str]) -> np.ndarray:
  """The fold (0..folds-1) of every example, every fold holding every class.

  Each class's groups (rarest class first) are dealt largest first, in a
  seeded order among equals, to the fold holding the fewest examples of that
  class (ties: the fewest examples). A class with at least ``folds`` groups
  then reaches every fold, so every fold's complement trains on every class,
  which scikit-learn's StratifiedGroupKFold does not promise. A UserError,
  naming the fix, where a class has fewer groups than folds."""
  labels, groups = np.asarray(labels, np.int64), np.asarray(groups).astype(str)
  names, group_of = np.unique(groups, return_inverse=True)
  counts = np.zeros((len(names), len(class_names)), np.int64)
  np.add.at(counts, (group_of.reshape(-1), labels), 1)
  have = (counts > 0).sum(axis=0)
  rng = np.random.default_rng(seed)
  fold_of_group = np.full(len(names), -1)
  held = np.zeros((folds, len(class_names)), np.int64)
  for c in sorted(np.flatnonzero(have), key=lambda c: (have[c], c)):
    if have[c] < folds:
      raise UserError(f'class {class_names[c]!r} has {have[c]} group(s) (tracks, or artists '
                      f'where the data set names them) in the training split; {folds}-fold '
                      f'cross-validation needs {folds}: add tracks, lower --config.recipe_folds, '
                      'or pick a recipe by hand (--config.recipe=probe|head|finetune)')
    mine = rng.permutation([g for g in np.flatnonzero(counts[:, c]) if fold_of_group[g] < 0])
    for g in sorted(mine, key=lambda g: -counts[g].sum()):
      k = min(range(folds), key=lambda f: (held[f, c], held[f].sum()))
      fold_of_group[g] = k
      held[k] += counts[g]
  for c in np.flatnonzero(have):
    if not held[:, c].all():  # groups shared with other classes were dealt first
      raise UserError(f'class {class_names[c]!r} is missing from a fold: its groups hold other '
                      f'classes too; lower --config.recipe_folds or pick a recipe by hand')
  return fold_of_group[group_of.reshape(-1)]


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
