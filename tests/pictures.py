"""What a saved matplotlib figure shows, read back from its artists: the tests of
the pictures check the plotted data (an image's array, a line's points, the texts),
not only that a PNG is there and not blank."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import pytest
from matplotlib.figure import Figure


@contextlib.contextmanager
def figures_kept() -> Iterator[list[Figure]]:
  """Every matplotlib figure saved inside the block (and saved as usual)."""
  kept: list[Figure] = []
  real = Figure.savefig

  def save(figure, *args, **kwargs):
    kept.append(figure)
    return real(figure, *args, **kwargs)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(Figure, 'savefig', save)
    yield kept


def figure_titled(figures: list[Figure], words: str) -> Figure:
  """The one kept figure whose title (or an axes' title) contains ``words``."""
  def titles(figure):
    return [figure.get_suptitle()] + [ax.get_title() for ax in figure.axes]
  found = [f for f in figures if any(words in t for t in titles(f))]
  assert len(found) == 1, [titles(f) for f in figures]
  return found[0]


def drawn_counts(ax) -> dict[tuple[int, int], str]:
  """(row, column) -> the text drawn at that cell of an image axes."""
  return {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text()
          for t in ax.texts}


def assert_confusion_picture(figure, cm: np.ndarray, class_names) -> None:
  """The picture shows the matrix: each cell coloured by its share of the true class
  (row), its count written in it (zero cells left blank), the names on both axes."""
  ax = figure.axes[0]
  (image,) = ax.get_images()
  support = cm.sum(axis=1, keepdims=True)
  np.testing.assert_allclose(np.asarray(image.get_array()),
                             np.divide(cm, support, out=np.zeros(cm.shape), where=support > 0))
  assert drawn_counts(ax) == {(i, j): str(cm[i, j]) for i, j in zip(*np.nonzero(cm))}
  assert [t.get_text() for t in ax.get_xticklabels()] == list(class_names)
  assert [t.get_text() for t in ax.get_yticklabels()] == list(class_names)


def drawn_lines(ax) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  return {line.get_label(): (np.asarray(line.get_xdata(), np.float64),
                             np.asarray(line.get_ydata(), np.float64)) for line in ax.lines}


def assert_curves_picture(figure, history, lr_schedule=None, steps_per_epoch=None) -> None:
  """Each curve of the training picture is its history key's values at its epochs;
  the per-step learning rate at step / steps_per_epoch."""
  loss, accuracy, lr = figure.axes[:3]
  epochs = np.array([row['epoch'] for row in history], np.float64)
  for ax, keys in ((loss, ('train_loss', 'val_loss')),
                   (accuracy, ('train_accuracy', 'val_accuracy'))):
    drawn = drawn_lines(ax)
    assert set(drawn) == set(keys)
    for key in keys:
      np.testing.assert_array_equal(drawn[key][0], epochs)
      np.testing.assert_allclose(drawn[key][1], [row[key] for row in history], rtol=1e-12)
  drawn = drawn_lines(lr)
  np.testing.assert_allclose(drawn['learning_rate (end of epoch)'][1],
                             [row['learning_rate'] for row in history], rtol=1e-12)
  if lr_schedule is not None:
    x, y = drawn['lr (per step)']
    np.testing.assert_allclose(y, lr_schedule, rtol=1e-12)
    np.testing.assert_allclose(x, np.arange(1, len(lr_schedule) + 1) / steps_per_epoch)
  (beta1,) = [ax for ax in figure.axes[3:] if ax.lines]
  np.testing.assert_allclose(beta1.lines[0].get_ydata(), [row['beta1'] for row in history])
