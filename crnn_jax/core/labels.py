"""Class lists and label relations of the reference's data sets (docs/reference.md section 1).

The one definition of each class list (configs, data preparation, the
Spotify collector and the reference import read them from here), of the
metal query tags' mapping onto the 20 classes, and of the label hierarchy
(a child label implies its parents) that multi-label training, evaluation and
prediction apply alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from crnn_jax.core.errors import UserError

# The genres data set: 10 playlist-search words; classes sorted alphabetically.
GENRE_QUERIES = ('pop', 'rock', 'rap', 'metal', 'house', 'r&b', 'classical', 'techno', 'jazz',
                 'folk')
GENRES = tuple(sorted(GENRE_QUERIES))

# The 20 metal classes, index order (alphabetical).
METAL_SUBGENRES = (
    'black metal', 'death metal', 'deathcore', 'doom metal', 'folk metal', 'glam metal',
    'grindcore', 'hard rock', 'hardcore', 'industrial metal', 'melodic death metal',
    'metalcore', 'nu metal', 'power metal', 'progressive metal', 'punk', 'screamo',
    'stoner rock', 'symphonic metal', 'thrash metal')

# The 32 query tags -> 20 classes: 7 merged, 5 dropped (None), the rest as is.
METAL_LABEL_MAP: dict[str, str | None] = {
    **{c: c for c in METAL_SUBGENRES},
    'depressive black metal': 'black metal',
    'blackgaze': 'black metal',
    'slam death metal': 'death metal',
    'technical death metal': 'death metal',
    'sludge metal': 'doom metal',
    'funeral doom': 'doom metal',
    'goregrind': 'grindcore',
    'nwobhm': None,
    'crust punk': None,
    'mathcore': None,
    'drone metal': None,
    'djent': None,
}
METAL_QUERY_GENRES = tuple(METAL_LABEL_MAP)


def ancestor_matrix(class_names: Sequence[str],
                    hierarchy: Mapping[str, str | Sequence[str]]) -> np.ndarray:
  """Bool (C, C): [i, j] is True when class j is an ancestor of class i.

  ``hierarchy`` maps a child name to its parent name (or a list of parents),
  e.g. {'melodic death metal': 'death metal'}; the relation is closed
  transitively. Unknown names and cycles raise ValueError.
  """
  index = {n: i for i, n in enumerate(class_names)}
  n = len(class_names)
  direct = np.zeros((n, n), dtype=bool)
  for child, parents in hierarchy.items():
    parents = [parents] if isinstance(parents, str) else list(parents)
    for name in [child, *parents]:
      if name not in index:
        raise ValueError(f'label hierarchy names {name!r}, which is not a class')
    for parent in parents:
      direct[index[child], index[parent]] = True
  closure = direct.copy()
  for _ in range(n):  # at most n steps to close any chain
    grown = closure | ((closure.astype(np.int64) @ direct.astype(np.int64)) > 0)
    if np.array_equal(grown, closure):
      break
    closure = grown
  if np.any(np.diag(closure)):
    cyclic = [class_names[i] for i in np.flatnonzero(np.diag(closure))]
    raise ValueError(f'label hierarchy has a cycle through {cyclic}')
  return closure


def apply_hierarchy_to_targets(targets: np.ndarray, ancestors: np.ndarray) -> np.ndarray:
  """Adds every ancestor of each true label (a melodic death metal track is
  also death metal)."""
  targets = np.asarray(targets).astype(bool)
  implied = (targets.astype(np.int64) @ ancestors.astype(np.int64)) > 0
  return targets | implied


def apply_hierarchy_to_scores(scores: np.ndarray, ancestors: np.ndarray) -> np.ndarray:
  """Raises each parent's score to the highest score of its descendants, so a
  child predicted at any threshold predicts its parents too."""
  scores = np.asarray(scores, dtype=np.float64)
  out = scores.copy()
  for parent in np.flatnonzero(ancestors.any(axis=0)):
    children = np.flatnonzero(ancestors[:, parent])
    out[:, parent] = np.maximum(scores[:, parent], scores[:, children].max(axis=1))
  return out


def hierarchy_matrix(class_names: Sequence[str],
                     hierarchy: Mapping[str, str | Sequence[str]] | None) -> np.ndarray | None:
  """``config.label_hierarchy`` as an ancestor matrix; None when there is none.

  Built once per run or loaded model and handed to the input pipeline,
  evaluation and prediction, which apply it alike. A name that is not a class,
  or a cycle, is a UserError naming the config field.
  """
  hierarchy = dict(hierarchy or {})
  if not hierarchy:
    return None
  try:
    return ancestor_matrix(class_names, hierarchy)
  except ValueError as e:
    raise UserError(f'config.label_hierarchy: {e}') from None
