"""LR range test logic: sweep, smoothing, divergence stop, suggestion."""

from __future__ import annotations

import math

import ml_collections
import numpy as np
import pytest
from conftest import tiny_config

from crnn_jax.data import pipeline
from crnn_jax.train import lr_find


def test_exponential_sweep():
  sched = lr_find.lr_schedule_for_range_test(1e-7, 10.0, 100)
  assert sched(0) == pytest.approx(1e-7)
  assert sched(100) == pytest.approx(10.0)
  assert sched(50) == pytest.approx(math.sqrt(1e-7 * 10.0))
  lrs = lr_find.range_test_lrs(1e-7, 10.0, 100)
  assert len(lrs) == 100 and lrs[-1] < 10.0  # fastai's last batch stays below end_lr
  np.testing.assert_allclose(lrs[1:] / lrs[:-1], (1e8) ** (1 / 100))
  import jax.numpy as jnp
  assert float(sched(jnp.asarray(50))) == pytest.approx(sched(50), rel=1e-5)  # traced step works
  with pytest.raises(ValueError):
    lr_find.lr_schedule_for_range_test(1.0, 0.1, 100)


def test_bias_corrected_smoothing_by_hand():
  # beta .98: avg1 = .02 * 1 -> 1.0; avg2 = .98 * .02 + .02 * 2 = .0596, / (1 - .98**2 = .0396)
  np.testing.assert_allclose(lr_find.smooth_losses([1.0, 2.0]), [1.0, 0.0596 / 0.0396])
  # a constant loss stays exactly that constant (the point of bias correction)
  np.testing.assert_allclose(lr_find.smooth_losses([3.0] * 50), 3.0)


def test_stops_on_divergence_where_fastai_would():
  losses = [2.0 - 0.01 * i for i in range(60)] + [2.0 * 1.3 ** i for i in range(60)]
  state = lr_find.LRFinderState(1e-7, 10.0, num_it=200)
  for loss in losses:
    if state.record(loss):
      break
  smooth = lr_find.smooth_losses(losses)
  best = np.minimum.accumulate(smooth)
  expected_stop = int(np.argmax(smooth > 4 * best))  # first batch over 4x best
  assert len(state.losses) == expected_stop + 1 < len(losses)
  assert 'diverged' in state.stop_reason and state.done
  np.testing.assert_allclose(state.smoothed, smooth[:expected_stop + 1])
  assert state.lrs == pytest.approx(list(lr_find.range_test_lrs(1e-7, 10.0, 200)[:expected_stop + 1]))
  with pytest.raises(RuntimeError):
    state.record(1.0)


def test_stops_on_nan_and_after_num_it():
  state = lr_find.LRFinderState(1e-7, 10.0, num_it=50)
  assert not state.record(1.0) and state.record(float('nan')) and 'diverged' in state.stop_reason
  state = lr_find.LRFinderState(1e-7, 10.0, num_it=20)
  steps = 0
  while not state.done:
    state.record(1.0)
    steps += 1
  assert steps == 20 and 'all 20' in state.stop_reason
  no_stop = lr_find.LRFinderState(1e-7, 10.0, num_it=10, stop_div=False)
  for loss in [1.0, 100.0, 1e6]:
    assert not no_stop.record(loss)


def test_suggestion_is_the_steepest_descent():
  # hand example, no skipping: gradient [-1, -1.5, -1, 0.5, 1] -> index 1
  lrs, losses = [1e-4, 1e-3, 1e-2, 1e-1, 1.0], [5.0, 4.0, 2.0, 2.0, 3.0]
  assert np.gradient(losses).argmin() == 1
  assert lr_find.suggest_lr(lrs, losses, skip_start=0, skip_end=0) == 1e-3
  assert lr_find.min_loss_lr(lrs, losses, skip_start=0, skip_end=0) == pytest.approx(1e-3)
  # a logistic drop centred at 1e-3 (log scale): steepest there
  lrs = lr_find.range_test_lrs(1e-7, 10, 100)
  curve = 2.0 - 1.5 / (1 + np.exp(-3 * (np.log10(lrs) + 3)))
  suggested = lr_find.suggest_lr(lrs, curve)
  assert abs(math.log10(suggested) + 3) < 0.1
  # non-finite tail is cut, too-short curves are refused
  assert lr_find.suggest_lr(lrs, np.r_[curve[:80], [np.nan] * 20]) == suggested
  with pytest.raises(ValueError, match='too early'):
    lr_find.suggest_lr(lrs[:12], curve[:12])


def test_range_test_on_a_quadratic_finds_a_stable_lr():
  # gradient descent on 0.5 * a * w^2 diverges for lr > 2 / a; the test must
  # stop on divergence and suggest a rate below that edge.
  a = 50.0
  w = np.array(1.0)

  def step(lr: float) -> float:
    nonlocal w
    loss = 0.5 * a * float(w) ** 2
    w = w - lr * a * w
    return loss

  state = lr_find.LRFinderState(start_lr=1e-5, end_lr=10.0, num_it=100)
  while not state.done:  # the loop lr_range_test runs with the train step
    state.record(step(state.next_lr()))
  assert 'diverged' in state.stop_reason and len(state.lrs) < 100
  suggested = lr_find.suggest_lr(state.lrs, state.smoothed)
  assert 1e-3 < suggested < 2 / a


def test_range_test_reads_the_targets_training_reads(tiny_data_dir, tmp_path, monkeypatch):
  """Multi-label with a label hierarchy: training's label sets have a child's
  parents set too, and the range test must sweep on the same targets."""
  config = tiny_config(tiny_data_dir)
  config.multilabel = True
  config.label_hierarchy = ml_collections.ConfigDict({'low': 'high'})  # 'low' implies 'high'
  config.lr_find = ml_collections.ConfigDict({'num_it': 20, 'start_lr': 1e-6, 'end_lr': 1e-2})
  real, label_sets = pipeline.train_batches, []

  def recorded(*args, **kwargs):
    for batch in real(*args, **kwargs):
      label_sets.append(batch['label_set'])
      yield batch

  monkeypatch.setattr(pipeline, 'train_batches', recorded)
  result = lr_find.lr_range_test(config, str(tmp_path))
  assert len(result['lrs']) == 20
  label_set = np.concatenate(label_sets)
  low = label_set[:, 0] == 1
  assert low.any() and np.all(label_set[low, 1] == 1)
