"""Augmentation of training spectrograms, on the device, inside the train step.

Every draw comes from a key the train step derives from (config.seed, step),
so the same step of a resumed run sees exactly the same augmentation. Inputs
are model inputs: float32 (batch, mel, frames, 1) in [0, 1].

  time shift   each clip rolled along time by a random offset (music is close
               to stationary over a 30-s window, so the wrapped edge is
               just another moment of the same piece)
  SpecAugment  masks of random mel bands and frame ranges (Park et al. 2019),
               filled with the clip's mean
  mixup        pairs of clips blended with Beta(alpha, alpha) weights, and
               their losses with the same weights (Zhang et al. 2018)
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections

from crnn_jax.core.errors import UserError


@dataclasses.dataclass(frozen=True)
class Settings:
  """config.augment as a hashable value (a static argument of the jitted step)."""
  time_shift: float = 0.0
  freq_masks: int = 0
  freq_mask_bands: int = 16
  time_masks: int = 0
  time_mask_frames: int = 64
  mixup_alpha: float = 0.0

  @property
  def any(self) -> bool:
    return bool(self.time_shift or self.freq_masks or self.time_masks or self.mixup_alpha)

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> Settings:
    """Checked settings; multi-label runs cannot mix up (a blend has no label set)."""
    a = config.get('augment') or {}
    settings = cls(**{f.name: type(f.default)(a.get(f.name, f.default))
                      for f in dataclasses.fields(cls)})
    if not 0.0 <= settings.time_shift <= 1.0:
      raise UserError(f'config.augment.time_shift={settings.time_shift}: use a fraction of the '
                      'window in [0, 1]')
    negative = [f.name for f in dataclasses.fields(cls) if getattr(settings, f.name) < 0]
    if negative:
      raise UserError(f'config.augment.{negative[0]} must not be negative')
    if settings.mixup_alpha and config.multilabel:
      raise UserError('config.augment.mixup_alpha applies to single-label runs: a multi-label run '
                      'cannot mix up label sets; set --config.augment.mixup_alpha=0')
    return settings


def time_shift(rng: jax.Array, x: jax.Array, max_fraction: float) -> jax.Array:
  """Each clip rolled along time by a uniform offset in [-max, max] frames."""
  frames = x.shape[2]
  limit = int(max_fraction * frames)
  offsets = jax.random.randint(rng, (x.shape[0],), -limit, limit + 1)
  return jax.vmap(lambda clip, k: jnp.roll(clip, k, axis=1))(x, offsets)


def _mask(rng: jax.Array, x: jax.Array, count: int, width: int, axis: int, fill: jax.Array
          ) -> jax.Array:
  """``count`` ranges of up to ``width`` positions along ``axis`` (1 mel, 2 time)
  per clip set to ``fill`` (one value per clip)."""
  size = x.shape[axis]
  width = min(width, size)
  b = x.shape[0]
  k_width, k_start = jax.random.split(rng)
  widths = jax.random.randint(k_width, (b, count), 0, width + 1)
  starts = jax.random.randint(k_start, (b, count), 0, size) % jnp.maximum(size - widths + 1, 1)
  pos = jnp.arange(size)
  inside = ((pos[None, None] >= starts[..., None])
            & (pos[None, None] < (starts + widths)[..., None])).any(axis=1)  # (b, size)
  shape = [b, 1, 1, 1]
  shape[axis] = size
  return jnp.where(inside.reshape(shape), fill, x)


def spec_augment(rng: jax.Array, x: jax.Array, s: Settings) -> jax.Array:
  """Frequency then time masks, filled with each clip's mean (before masking)."""
  k_freq, k_time = jax.random.split(rng)
  mean = x.mean(axis=(1, 2, 3), keepdims=True)
  if s.freq_masks:
    x = _mask(k_freq, x, s.freq_masks, s.freq_mask_bands, 1, mean)
  if s.time_masks:
    x = _mask(k_time, x, s.time_masks, s.time_mask_frames, 2, mean)
  return x


def mixup_pairs(rng: jax.Array, batch_size: int, alpha: float) -> tuple[jax.Array, jax.Array]:
  """(partner index, weight of the clip itself) per clip: a random pairing
  and Beta(alpha, alpha) weights folded to >= 0.5, so each clip stays the
  main part of its own blend."""
  k_perm, k_lam = jax.random.split(rng)
  partner = jax.random.permutation(k_perm, batch_size)
  lam = jax.random.beta(k_lam, alpha, alpha, (batch_size,))
  return partner, jnp.maximum(lam, 1.0 - lam)


def mix(x: jax.Array, partner: jax.Array, lam: jax.Array) -> jax.Array:
  w = lam.reshape((-1,) + (1,) * (x.ndim - 1)).astype(x.dtype)
  return w * x + (1 - w) * x[partner]


def augment_inputs(rng: jax.Array, spec: jax.Array, s: Settings) -> jax.Array:
  """Time shift then SpecAugment (mixup, which touches labels too, is the step's)."""
  k_shift, k_spec = jax.random.split(rng)
  if s.time_shift:
    spec = time_shift(k_shift, spec, s.time_shift)
  if s.freq_masks or s.time_masks:
    spec = spec_augment(k_spec, spec, s)
  return spec
