"""Plots: each writes a complete, valid PNG of a sensible size; bad input fails early."""

from __future__ import annotations

import os

import numpy as np
import pytest
from pictures import assert_confusion_picture, assert_curves_picture, drawn_lines, figures_kept

from crnn_jax.evaluate import plots

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def _png_shape(path: str) -> tuple[int, ...]:
  with open(path, 'rb') as f:
    assert f.read(8) == PNG_MAGIC
  import matplotlib.image as mpimg
  image = mpimg.imread(path)
  assert image.ndim == 3 and image.shape[2] in (3, 4)
  assert image[..., :3].std() > 0.01  # not a blank canvas
  return image.shape


def test_confusion_matrix_png_20_classes(tmp_path):
  rng = np.random.default_rng(0)
  names = ['glam metal', 'hard rock', 'screamo', 'metalcore', 'melodic death metal',
           'death metal', 'black metal', 'doom metal', 'thrash metal', 'power metal',
           'heavy metal', 'nu metal', 'progressive metal', 'sludge metal', 'stoner rock',
           'grindcore', 'deathcore', 'symphonic metal', 'folk metal', 'post-metal']
  cm = rng.integers(0, 4, (20, 20)) + np.diag(rng.integers(10, 40, 20))
  cm[3, 7] = 0
  path = plots.plot_confusion_matrix(cm, names, str(tmp_path / 'sub' / 'cm.png'), 'metal test')
  assert path == str(tmp_path / 'sub' / 'cm.png') and not os.path.exists(path + '.tmp')
  h, w, _ = _png_shape(path)
  assert h >= 900 and w >= 900  # grows with the class count: 20 names stay legible
  small = plots.plot_confusion_matrix(cm[:3, :3], names[:3], str(tmp_path / 'cm3.png'))
  assert _png_shape(small)[0] < h
  with pytest.raises(ValueError):
    plots.plot_confusion_matrix(cm, names[:5], str(tmp_path / 'bad.png'))


def test_training_curves_png(tmp_path):
  history = [{'epoch': e, 'step': 10 * e, 'train_loss': 2.0 / e, 'val_loss': 2.2 / e,
              'train_accuracy': 0.3 + 0.06 * e, 'val_accuracy': 0.25 + 0.06 * e,
              'learning_rate': 1e-3 * np.sin(np.pi * e / 11), 'beta1': 0.9}
             for e in range(1, 11)]
  schedule = 1e-3 * np.sin(np.pi * np.arange(1, 101) / 110)
  path = plots.plot_training_curves(history, str(tmp_path / 'curves.png'), lr_schedule=schedule,
                                    steps_per_epoch=10)
  _png_shape(path)
  # minimal history (one epoch, no lr) still plots
  _png_shape(plots.plot_training_curves([{'train_loss': 1.0}], str(tmp_path / 'one.png')))
  with pytest.raises(ValueError):
    plots.plot_training_curves([], str(tmp_path / 'none.png'))


def test_lr_finder_png(tmp_path):
  lrs = np.geomspace(1e-7, 10, 100)
  losses = 2.3 - 1.5 / (1 + np.exp(-(np.log10(lrs) + 3.5) * 2)) + np.where(lrs > 0.3, lrs, 0)
  raw = losses + np.random.default_rng(1).normal(0, 0.05, 100)
  path = plots.plot_lr_finder(lrs, losses, str(tmp_path / 'lr.png'), suggested_lr=3e-4,
                              raw_losses=raw)
  _png_shape(path)
  with pytest.raises(ValueError):
    plots.plot_lr_finder(lrs, losses[:-1], str(tmp_path / 'bad.png'))
  with pytest.raises(ValueError):
    plots.plot_lr_finder(np.zeros(3), np.ones(3), str(tmp_path / 'bad.png'))


def test_confusion_matrix_picture_is_the_matrix_with_its_counts(tmp_path):
  cm = np.array([[5, 0, 1, 0], [2, 7, 0, 0], [0, 3, 9, 1], [0, 0, 0, 0]])
  names = ['swing', 'metal', 'strings', 'unseen']
  with figures_kept() as figures:
    plots.plot_confusion_matrix(cm, names, str(tmp_path / 'cm.png'), title='demo')
  (figure,) = figures
  assert_confusion_picture(figure, cm, names)
  assert 'n=28, accuracy 0.750' in figure.axes[0].get_title()


def test_training_curves_picture_draws_the_history(tmp_path):
  rng = np.random.default_rng(2)
  history = [{'epoch': e, 'step': 10 * e, 'train_loss': float(rng.uniform(0.1, 2)),
              'val_loss': float(rng.uniform(0.1, 2)), 'train_accuracy': float(rng.uniform()),
              'val_accuracy': float(rng.uniform()), 'learning_rate': float(rng.uniform(0, 1e-3)),
              'beta1': float(rng.uniform(0.85, 0.95))} for e in range(1, 6)]
  schedule = rng.uniform(0, 1e-3, 50)
  with figures_kept() as figures:
    plots.plot_training_curves(history, str(tmp_path / 'curves.png'), lr_schedule=schedule,
                               steps_per_epoch=10)
  assert_curves_picture(figures[0], history, schedule, 10)


def test_lr_finder_picture_draws_the_losses_against_the_rates(tmp_path):
  rng = np.random.default_rng(3)
  lrs = np.geomspace(1e-6, 1.0, 40)
  losses, raw = rng.uniform(1, 2, 40), rng.uniform(1, 2, 40)
  with figures_kept() as figures:
    plots.plot_lr_finder(lrs, losses, str(tmp_path / 'lr.png'), suggested_lr=lrs[17],
                         raw_losses=raw)
  (ax,) = figures[0].axes
  drawn = drawn_lines(ax)
  for label, values in (('smoothed loss', losses), ('loss per batch', raw)):
    np.testing.assert_array_equal(drawn[label][0], lrs)
    np.testing.assert_array_equal(drawn[label][1], values)
  (marker,) = [k for k in drawn if k.startswith('suggested max_lr')]
  np.testing.assert_array_equal(drawn[marker][0], [lrs[17]])
  np.testing.assert_array_equal(drawn[marker][1], [losses[17]])
  assert ax.get_xscale() == 'log'
