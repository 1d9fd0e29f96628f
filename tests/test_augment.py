"""Augmentation: each transform does what it says, is a function of its key,
and the train step draws from (seed, step)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

from crnn_jax.core.errors import UserError
from crnn_jax.data import augment, pipeline, source
from crnn_jax.train import state as state_lib
from crnn_jax.train import steps


def _batch(b=4, mel=128, frames=64):
  return jax.random.uniform(jax.random.key(1), (b, mel, frames, 1))


def test_time_shift_rolls_each_clip_within_its_window():
  x = _batch()
  y = augment.time_shift(jax.random.key(0), x, 0.25)
  for i in range(x.shape[0]):
    shifts = [k for k in range(-16, 17) if np.array_equal(np.roll(x[i], k, axis=1), y[i])]
    assert len(shifts) == 1
  np.testing.assert_array_equal(y, augment.time_shift(jax.random.key(0), x, 0.25))
  assert not np.array_equal(y, augment.time_shift(jax.random.key(1), x, 0.25))


def test_spec_augment_masks_bands_and_frames_with_the_clip_mean():
  x = _batch()
  s = augment.Settings(freq_masks=1, freq_mask_bands=20, time_masks=1, time_mask_frames=10)
  y = np.asarray(augment.spec_augment(jax.random.key(3), x, s))
  changed = y != np.asarray(x)
  for i in range(x.shape[0]):
    mean = float(x[i].mean())
    np.testing.assert_allclose(y[i][changed[i]], mean, rtol=1e-6)
    rows = changed[i, :, :, 0].all(axis=1).sum()  # fully masked mel bands
    cols = changed[i, :, :, 0].all(axis=0).sum()  # fully masked frames
    assert rows <= 20 and cols <= 10


def test_mixup_blends_pairs_with_the_larger_share_on_the_clip_itself():
  partner, lam = augment.mixup_pairs(jax.random.key(0), 8, 0.4)
  assert sorted(np.asarray(partner).tolist()) == list(range(8))
  assert np.all((lam >= 0.5) & (lam <= 1.0))
  x = _batch(8)
  mixed = augment.mix(x, partner, lam)
  np.testing.assert_allclose(mixed[2], lam[2] * x[2] + (1 - lam[2]) * x[partner[2]], rtol=1e-6)


def test_settings_are_checked():
  config = tiny_config('')
  config.augment.time_shift = 1.5
  with pytest.raises(UserError, match='time_shift'):
    augment.Settings.from_config(config)
  config = tiny_config('')
  config.augment.freq_masks = -1
  with pytest.raises(UserError, match='freq_masks must not be negative'):
    augment.Settings.from_config(config)
  assert not augment.Settings.from_config(tiny_config('')).any


def test_augmented_train_step_is_a_function_of_seed_and_step(tiny_data_dir):
  config = tiny_config(tiny_data_dir)
  config.augment.time_shift = 0.5
  config.augment.freq_masks = 2
  config.augment.mixup_alpha = 0.4
  info = source.load_info(config)
  src = source.open_sources(config)
  batch = next(pipeline.train_batches(src['train'], np.arange(16), info, 16, 0, config))
  state = state_lib.create_train_state(config, info, jax.random.key(0),
                                       state_lib.make_optimizer(config, 10))
  options = steps.TrainOptions.from_config(config)
  step = jax.jit(lambda s, b, o=options: steps.train_step(s, b, jnp.ones(2), False, o))
  plain = jax.jit(lambda s, b: steps.train_step(s, b, jnp.ones(2), False))
  a, b, c = step(state, batch)[1], step(state, batch)[1], plain(state, batch)[1]
  assert float(a['loss']) == float(b['loss']) != float(c['loss'])
  later = state.replace(step=state.step + 1)
  assert float(step(later, batch)[1]['loss']) != float(a['loss'])
