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


def _runs(indices: np.ndarray) -> int:
  """How many ranges of consecutive positions the sorted indices form."""
  return int(len(indices) > 0) + int((np.diff(indices) > 1).sum())


def test_spec_augment_masks_whole_bands_and_frames_of_the_drawn_widths():
  """Per clip, up to 3 ranges of up to 20 mel bands and up to 2 of up to 10 frames
  are set to the clip's mean (across all frames / all bands), nothing else changes;
  widths are drawn uniformly up to those limits; the same key masks the same cells."""
  x = _batch(b=64)  # uniform noise: no cell equals its clip's mean by chance
  s = augment.Settings(freq_masks=3, freq_mask_bands=20, time_masks=2, time_mask_frames=10)
  y = np.asarray(augment.spec_augment(jax.random.key(3), x, s))
  np.testing.assert_array_equal(y, augment.spec_augment(jax.random.key(3), x, s))
  assert not np.array_equal(y, augment.spec_augment(jax.random.key(4), x, s))
  masked = {'bands': [], 'frames': []}
  for i in range(x.shape[0]):
    changed = y[i, :, :, 0] != np.asarray(x[i, :, :, 0])
    bands, frames = np.flatnonzero(changed.all(axis=1)), np.flatnonzero(changed.all(axis=0))
    expected = np.zeros_like(changed)
    expected[bands, :] = expected[:, frames] = True
    np.testing.assert_array_equal(changed, expected)  # whole bands and frames only
    np.testing.assert_allclose(y[i][changed], float(x[i].mean()), rtol=1e-6)
    assert _runs(bands) <= 3 and _runs(frames) <= 2
    masked['bands'].append(len(bands))
    masked['frames'].append(len(frames))
  bands, frames = np.array(masked['bands']), np.array(masked['frames'])
  assert bands.max() <= 3 * 20 and frames.max() <= 2 * 10
  assert (bands > 0).mean() > 0.9 and (frames > 0).mean() > 0.8  # masks are there
  # Uniform widths in 0..20 (0..10) per mask: about 3 x 10 bands (2 x 5 frames) per clip,
  # less where masks overlap; a fixed full width would give about 55 (19).
  assert 20 < bands.mean() < 40 and 6 < frames.mean() < 14, (bands.mean(), frames.mean())


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
  batch = next(pipeline.train_batches(pipeline.Reader(src['train'], info, config), np.arange(16),
                                      16))
  state = state_lib.create_train_state(config, info, jax.random.key(0),
                                       state_lib.make_optimizer(config, 10))
  options = steps.TrainOptions.from_config(config)
  step = jax.jit(lambda s, b, o=options: steps.train_step(s, b, jnp.ones(2), False, o))
  plain = jax.jit(lambda s, b: steps.train_step(s, b, jnp.ones(2), False))
  a, b, c = step(state, batch)[1], step(state, batch)[1], plain(state, batch)[1]
  assert float(a['loss']) == float(b['loss']) != float(c['loss'])
  later = state.replace(step=state.step + 1)
  assert float(step(later, batch)[1]['loss']) != float(a['loss'])


def _log_softmax(logits: np.ndarray) -> np.ndarray:
  z = np.asarray(logits, np.float64)
  z = z - z.max(axis=-1, keepdims=True)
  return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def test_mixup_loss_weights_each_clips_two_labels_by_its_share(tiny_data_dir):
  """The train step's loss with mixup, by hand: each blended clip's cross entropy
  against its own label (weight lam) and its partner's (1 - lam), class-weighted
  like torch's: sum(lam w_y l_y + (1 - lam) w_y' l_y') / sum(lam w_y + (1 - lam) w_y')."""
  config = tiny_config(tiny_data_dir)
  config.seed, config.augment.mixup_alpha = 5, 0.4
  info = source.load_info(config)
  src = source.open_sources(config)
  batch = next(pipeline.train_batches(pipeline.Reader(src['train'], info, config), np.arange(16),
                                      16))
  state = state_lib.create_train_state(config, info, jax.random.key(0),
                                       state_lib.make_optimizer(config, 10))
  state = state.replace(step=state.step + 3)
  class_weights = jnp.asarray([0.25, 3.0])
  options = steps.TrainOptions.from_config(config)
  _, m = jax.jit(lambda s, b: steps.train_step(s, b, class_weights, False, options))(state, batch)
  # The draws of step 3 of seed 5, as the step makes them (README: from (seed, step)).
  _, k_mixup = jax.random.split(jax.random.fold_in(jax.random.key(5), 3))
  partner, lam = jax.device_get(augment.mixup_pairs(k_mixup, 16, 0.4))
  spec, tab = steps.model_inputs(batch)
  logits, _ = state.apply_fn({'params': state.params, 'batch_stats': state.batch_stats},
                             augment.mix(spec, partner, lam), tab, train=True,
                             mutable=['batch_stats'])
  nll = -_log_softmax(logits)
  own, other = np.asarray(batch['label']), np.asarray(batch['label'])[partner]
  w, w_other = np.asarray(class_weights)[own], np.asarray(class_weights)[other]
  rows = np.arange(16)
  expected = ((lam * w * nll[rows, own] + (1 - lam) * w_other * nll[rows, other]).sum()
              / (lam * w + (1 - lam) * w_other).sum())
  np.testing.assert_allclose(float(m['loss']), expected, rtol=1e-5)
  unmixed = (w * nll[rows, own]).sum() / w.sum()  # the blend's own labels alone
  assert (own != other).sum() >= 4 and abs(expected - unmixed) > 1e-3
