"""SIGKILL at random (seeded) points of training and data preparation; every
resumed result equals the uninterrupted one (experiments/fault_injection,
which runs longer from the command line: --trials, --kills)."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from experiments.fault_injection import BUILD_PHASES, TRAINING_PHASES
from experiments.fault_injection import harness as fault_injection


def test_kill_points_are_seeded_cover_every_phase_and_follow_the_pipeline():
  counts = collections.Counter({'train_step': 9, 'checkpoint_save': 3, 'checkpoint_manifest': 3,
                                'evaluation': 5, 'file_write': 12})
  draw = lambda seed: fault_injection.draw_points(np.random.default_rng(seed), TRAINING_PHASES,
                                                  counts, len(TRAINING_PHASES))
  points = draw(0)
  assert points == draw(0) and points != draw(1)
  assert [p.phase for p in points] == list(TRAINING_PHASES)
  for p in points:
    assert 1 <= p.occurrence <= max(1, (counts[p.phase] + 1) // 2)
    assert 0 <= p.delay_s <= fault_injection.MAX_DELAY_S


@pytest.mark.slow
def test_killed_and_resumed_runs_equal_uninterrupted_ones(capsys):
  """One trial each: training killed at 5 points (one per phase: a train
  step, inside a checkpoint save, between a save and its manifest, during
  evaluation, while writing a file), the build at 4 (decoding, caching, the
  TFDS write, the report)."""
  rows = fault_injection.run(trials=1, kills=len(BUILD_PHASES), seed=0, only='build')
  rows += fault_injection.run(trials=1, kills=len(TRAINING_PHASES), seed=0, only='training')
  with capsys.disabled():  # the counts of trials and kill points, also under pytest
    print('\n' + fault_injection.table(rows, seed=0))
  for row in rows:
    assert row['equal'] == row['trials'], row
  build, training = rows
  assert build['kills'] >= 3 and training['kills'] >= 4
  assert {'checkpoint_save', 'evaluation'} <= set(training['by_phase'])
