"""PNG figures for reports: confusion matrix, training curves, LR range test.

Built on ``matplotlib.figure.Figure`` (rendered by Agg) rather than pyplot,
so no global backend or figure state is touched: safe on a headless machine,
inside tests, and next to other code that uses pyplot. Each function writes
to a temporary name and renames, so a PNG on disk is always complete, and
returns the path written.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from crnn_jax.core import storage


def _figure(width: float, height: float) -> Figure:
  return Figure(figsize=(width, height), layout='constrained')


def _save(fig: Figure, path: str, dpi: int) -> str:
  path = os.fspath(path)
  with storage.atomic_write(path, 'wb') as f:
    fig.savefig(f, dpi=dpi, format='png')
  return path


def plot_confusion_matrix(cm: np.ndarray, class_names: Sequence[str], path: str,
                          title: str = 'Confusion matrix', dpi: int = 120) -> str:
  """Counts in every non-zero cell, colour = share of the true class (row).

  Rows are true classes, columns predictions, class names on both axes. The
  figure grows with the number of classes and the count font shrinks, so 20
  classes stay readable; zero cells are left blank to keep the eye on errors.
  """
  cm = np.asarray(cm)
  n = len(class_names)
  if cm.shape != (n, n):
    raise ValueError(f'{n} class names for a confusion matrix of shape {cm.shape}')
  support = cm.sum(axis=1, keepdims=True)
  share = np.divide(cm, support, out=np.zeros(cm.shape), where=support > 0)
  longest = max([len(str(c)) for c in class_names] + [1])
  cell = 0.42 if n > 12 else 0.6
  side = max(4.5, n * cell) + 0.09 * longest
  fig = _figure(side + 1.6, side + 0.4)
  ax = fig.add_subplot()
  image = ax.imshow(share, cmap='Blues', vmin=0.0, vmax=1.0, interpolation='nearest')
  fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label='share of true class (row)')
  font = 10 if n <= 10 else 8 if n <= 16 else 7
  for i in range(n):
    for j in range(n):
      if cm[i, j]:
        ax.text(j, i, str(int(cm[i, j])), ha='center', va='center', fontsize=font,
                color='white' if share[i, j] > 0.55 else 'black',
                fontweight='bold' if i == j else 'normal')
  ticks = np.arange(n)
  ax.set_xticks(ticks, [str(c) for c in class_names], rotation=45, ha='right',
                rotation_mode='anchor', fontsize=font + 1)
  ax.set_yticks(ticks, [str(c) for c in class_names], fontsize=font + 1)
  ax.set_xlabel('predicted')
  ax.set_ylabel('true')
  ax.set_xticks(ticks[:-1] + 0.5, minor=True)
  ax.set_yticks(ticks[:-1] + 0.5, minor=True)
  ax.grid(which='minor', color='0.85', linewidth=0.5)
  ax.tick_params(which='minor', length=0)
  total = cm.sum()
  accuracy = np.trace(cm) / total if total else float('nan')
  ax.set_title(f'{title}  (n={int(total)}, accuracy {accuracy:.3f})' if title else
               f'n={int(total)}, accuracy {accuracy:.3f}')
  return _save(fig, path, dpi)


def _series(history: Sequence[Mapping], key: str) -> tuple[np.ndarray, np.ndarray]:
  """(epochs, values) for the records that carry a finite number under key."""
  xs, ys = [], []
  for i, record in enumerate(history):
    value = record.get(key)
    if isinstance(value, (int, float)) and math.isfinite(value):
      xs.append(record.get('epoch', i + 1))
      ys.append(value)
  return np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)


def plot_training_curves(history: Sequence[Mapping], path: str,
                         lr_schedule: Sequence[float] | None = None,
                         steps_per_epoch: int | None = None,
                         title: str = 'Training', dpi: int = 110) -> str:
  """Loss, accuracy and learning rate per epoch from per-epoch dicts.

  Loss panel: every key ending in 'loss' (train_loss, val_loss, ...);
  accuracy panel: every key containing 'accuracy' or named like 'top5';
  learning-rate panel: 'learning_rate' (or 'lr') per epoch, the per-step
  ``lr_schedule`` when given (step s drawn at epoch s / steps_per_epoch;
  without steps_per_epoch the schedule is taken to span the epochs in
  history), and 'beta1' on a second axis when present.
  """
  if not history:
    raise ValueError('no epochs to plot')
  keys = list(dict.fromkeys(k for record in history for k in record))
  loss_keys = [k for k in keys if k.endswith('loss')]
  acc_keys = [k for k in keys if 'accuracy' in k or (k.startswith(('top', 'val_top')))]
  lr_key = 'learning_rate' if 'learning_rate' in keys else 'lr' if 'lr' in keys else None
  fig = _figure(14, 4.2)
  axes = fig.subplots(1, 3)
  for ax, group, label in ((axes[0], loss_keys, 'loss'), (axes[1], acc_keys, 'accuracy')):
    for key in group:
      x, y = _series(history, key)
      if len(x):
        ax.plot(x, y, marker='o', markersize=3.5, label=key,
                linestyle='--' if key.startswith('train') else '-')
    ax.set_xlabel('epoch')
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    if ax.lines:
      ax.legend(fontsize=8)
  best_x, best_y = _series(history, 'val_accuracy')
  if len(best_y):
    k = int(np.argmax(best_y))
    axes[1].annotate(f'best {best_y[k]:.3f}', (best_x[k], best_y[k]), textcoords='offset points',
                     xytext=(0, 8), ha='center', fontsize=8)
  ax = axes[2]
  if lr_schedule is not None and len(lr_schedule):
    if not steps_per_epoch:
      last_epoch = max(record.get('epoch', i + 1) for i, record in enumerate(history))
      steps_per_epoch = len(lr_schedule) / last_epoch
    steps = np.arange(1, len(lr_schedule) + 1) / steps_per_epoch
    ax.plot(steps, lr_schedule, color='tab:green', linewidth=1.2, label='lr (per step)')
  if lr_key:
    x, y = _series(history, lr_key)
    ax.plot(x, y, 'o', color='tab:green', markersize=3.5, label=f'{lr_key} (end of epoch)')
  ax.set_xlabel('epoch')
  ax.set_ylabel('learning rate')
  ax.ticklabel_format(axis='y', style='sci', scilimits=(-2, 2))
  ax.grid(alpha=0.3)
  if ax.lines:
    ax.legend(fontsize=8, loc='upper left')
  x, y = _series(history, 'beta1')
  if len(x):
    twin = ax.twinx()
    twin.plot(x, y, 's:', color='tab:purple', markersize=3, label='beta1')
    twin.set_ylabel('beta1', color='tab:purple')
    twin.legend(fontsize=8, loc='upper right')
  fig.suptitle(title)
  return _save(fig, path, dpi)


def plot_lr_finder(lrs: Sequence[float], losses: Sequence[float], path: str,
                   suggested_lr: float | None = None,
                   raw_losses: Sequence[float] | None = None,
                   title: str = 'Learning-rate range test', dpi: int = 110) -> str:
  """Smoothed loss against learning rate (log x), the suggestion marked.

  ``raw_losses`` (per-batch, unsmoothed) are drawn faintly behind when given.
  """
  lrs = np.asarray(lrs, dtype=np.float64)
  losses = np.asarray(losses, dtype=np.float64)
  if lrs.shape != losses.shape or lrs.ndim != 1 or len(lrs) == 0:
    raise ValueError(f'lrs {lrs.shape} and losses {losses.shape} must be equal, non-empty 1-D')
  if np.any(lrs <= 0):
    raise ValueError('learning rates must be positive for a log axis')
  fig = _figure(7.5, 4.8)
  ax = fig.add_subplot()
  if raw_losses is not None:
    ax.plot(lrs, np.asarray(raw_losses, dtype=np.float64), color='0.75', linewidth=0.8,
            label='loss per batch')
  ax.plot(lrs, losses, color='tab:blue', linewidth=1.8, label='smoothed loss')
  ax.set_xscale('log')
  finite = losses[np.isfinite(losses)]
  if finite.size:
    # keep the divergence tail from flattening the interesting part
    lo, hi = finite.min(), min(finite.max(), finite[0] + 2.0 * (finite[0] - finite.min()) + 1e-3)
    pad = 0.08 * (hi - lo) + 1e-6
    ax.set_ylim(lo - pad, hi + pad)
  if suggested_lr is not None and math.isfinite(suggested_lr) and suggested_lr > 0:
    k = int(np.argmin(np.abs(np.log(lrs) - np.log(suggested_lr))))
    ax.axvline(suggested_lr, color='tab:red', linestyle='--', linewidth=1)
    ax.plot([lrs[k]], [losses[k]], 'o', color='tab:red', markersize=7,
            label=f'suggested max_lr {suggested_lr:.3g}')
  ax.set_xlabel('learning rate (log scale)')
  ax.set_ylabel('loss')
  ax.grid(alpha=0.3, which='major')
  ax.legend(fontsize=9)
  ax.set_title(title)
  return _save(fig, path, dpi)
