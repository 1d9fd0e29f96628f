"""Model selection on validation: which epoch is the best, and early stopping.

With config.train.best_metric set, the trainer keeps the best epoch's
checkpoint beside the latest; evaluation and prediction then use it. With
early_stopping_patience > 0 it stops once that many epochs passed without a
new best. The best so far is part of each checkpoint's meta, so a resumed run
decides exactly as an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import ml_collections

from crnn_jax.core.errors import UserError

METRICS = ('val_accuracy', 'val_loss')


def check(config: ml_collections.ConfigDict) -> tuple[str, int]:
  """(best_metric, early_stopping_patience), checked."""
  metric = config.train.get('best_metric', '')
  patience = int(config.train.get('early_stopping_patience', 0))
  if metric and metric not in METRICS:
    raise UserError(f"config.train.best_metric {metric!r}: use 'val_accuracy', 'val_loss' or '' "
                    '(off)')
  if patience < 0:
    raise UserError(f'config.train.early_stopping_patience={patience} must be >= 0 (0: off)')
  if patience and not metric:
    raise UserError('early stopping watches config.train.best_metric: set '
                    '--config.train.best_metric=val_accuracy (or val_loss)')
  return metric, patience


def improves(row: Mapping[str, Any], best: Mapping[str, Any], metric: str) -> bool:
  """Whether an epoch's row beats the best so far. Accuracy ties (common on a
  small validation split) go to the lower loss."""
  if not math.isfinite(row['val_loss']):
    return False
  if not best:
    return True
  if metric == 'val_loss':
    return row['val_loss'] < best['val_loss']
  return (row['val_accuracy'], -row['val_loss']) > (best['val_accuracy'], -best['val_loss'])


def summary(row: Mapping[str, Any]) -> dict[str, Any]:
  """What the meta remembers of the best epoch."""
  return {k: row[k] for k in ('epoch', 'step', 'val_accuracy', 'val_loss')}


def patience_exhausted(epoch: int, best: Mapping[str, Any], patience: int) -> bool:
  """After ``epoch`` (1-based) finished: has the best not moved for ``patience`` epochs?"""
  return bool(patience and best and epoch - int(best['epoch']) >= patience)
