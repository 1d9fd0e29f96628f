"""The update and evaluation steps: pure functions of (state, batch), jitted
over the device mesh by crnn_jax.train.parallel."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from crnn_jax.core import audio
from crnn_jax.data import augment
from crnn_jax.train import finetune
from crnn_jax.train.state import TrainState

Batch = Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class TrainOptions:
  """What the train step needs from the config besides the batch (static).

  frozen_body: a linear probe: only the head is differentiated, and the body
    runs as at inference (batch norm as with frozen_batch_norm).
  frozen_batch_norm: batch norm runs on its running statistics and leaves
    them as they are (config.finetune.batch_norm='frozen').
  augment: config.augment; its random draws come from (seed, step).
  """
  frozen_body: bool = False
  frozen_batch_norm: bool = False
  augment: augment.Settings = dataclasses.field(default_factory=augment.Settings)
  seed: int = 0

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> TrainOptions:
    return cls(frozen_body=finetune.body_frozen(config),
               frozen_batch_norm=finetune.batch_norm_frozen(config),
               augment=augment.Settings.from_config(config), seed=int(config.seed))


def model_inputs(batch: Batch) -> tuple[jax.Array, jax.Array | None]:
  """uint8 spectrogram images -> [0, 1] floats, on the device (4x less to copy)."""
  spec = audio.image_to_model_input(batch['spectrogram'])
  tab = batch['tabular'] if batch['tabular'].shape[-1] else None
  return spec, tab


def per_example_loss(logits: jax.Array, batch: Batch, multilabel: bool) -> jax.Array:
  if multilabel:
    return optax.sigmoid_binary_cross_entropy(logits, batch['label_set']).mean(axis=-1)
  return optax.softmax_cross_entropy_with_integer_labels(logits, batch['label'])


def _weighted_loss(logits: jax.Array, batch: Batch, class_weights: jax.Array, multilabel: bool,
                   mixup: tuple[jax.Array, jax.Array] | None) -> jax.Array:
  """Mean loss; single-label: torch's weighted cross entropy, sum(w_y * l) / sum(w_y),
  with mixup each clip's two labels weighted by their share of the blend."""
  losses = per_example_loss(logits, batch, multilabel)
  if multilabel:
    return losses.mean()
  w = class_weights[batch['label']]
  if mixup is None:
    return (w * losses).sum() / w.sum()
  partner, lam = mixup
  other = dict(batch, label=batch['label'][partner])
  w_other = class_weights[other['label']]
  total = lam * w * losses + (1 - lam) * w_other * per_example_loss(logits, other, multilabel)
  return total.sum() / (lam * w + (1 - lam) * w_other).sum()


def _augmented(state: TrainState, spec: jax.Array, options: TrainOptions
               ) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
  """(augmented inputs, mixup pairing or None), drawn from (seed, step)."""
  a = options.augment
  if not a.any:
    return spec, None
  rng = jax.random.fold_in(jax.random.key(options.seed), state.step)
  k_inputs, k_mixup = jax.random.split(rng)
  spec = augment.augment_inputs(k_inputs, spec, a)
  if not a.mixup_alpha:
    return spec, None
  pairs = augment.mixup_pairs(k_mixup, spec.shape[0], a.mixup_alpha)
  return augment.mix(spec, *pairs), pairs


def _gradients(state: TrainState, loss_fn: Callable, frozen_body: bool
               ) -> tuple[tuple[jax.Array, Any], Any]:
  """value_and_grad of loss_fn(params); a frozen body is not differentiated
  (zero gradients, which its optimiser group ignores)."""
  if not frozen_body:
    return jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  body, head = finetune.split(state.params)
  out, head_grads = jax.value_and_grad(
      lambda h: loss_fn(finetune.join(body, h)), has_aux=True)(head)
  zeros = jax.tree_util.tree_map(jnp.zeros_like, body)
  return out, finetune.join(zeros, head_grads)


def train_step(state: TrainState, batch: Batch, class_weights: jax.Array, multilabel: bool,
               options: TrainOptions | None = None
               ) -> tuple[TrainState, dict[str, jax.Array]]:
  options = options or TrainOptions()
  spec, tab = model_inputs(batch)
  spec, mixup = _augmented(state, spec, options)

  def loss_fn(params):
    variables = {'params': params, 'batch_stats': state.batch_stats}
    if options.frozen_body:  # a forward pass of the body alone: its inference ops
      logits, batch_stats = state.apply_fn(variables, spec, tab, train=False), state.batch_stats
    elif options.frozen_batch_norm:  # running statistics, left as they are
      logits = state.apply_fn(variables, spec, tab, train=True, frozen_batch_norm=True)
      batch_stats = state.batch_stats
    else:
      logits, updates = state.apply_fn(variables, spec, tab, train=True, mutable=['batch_stats'])
      batch_stats = updates['batch_stats']
    loss = _weighted_loss(logits, batch, class_weights, multilabel, mixup)
    return loss, (logits, batch_stats)

  (loss, (logits, batch_stats)), grads = _gradients(state, loss_fn, options.frozen_body)
  state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  if multilabel:
    correct = batch['label_set'][jnp.arange(logits.shape[0]), logits.argmax(-1)].sum()
  else:
    correct = (logits.argmax(-1) == batch['label']).sum()
  return state, {'loss': loss, 'correct': correct}


def eval_step(state: TrainState, batch: Batch, multilabel: bool) -> dict[str, jax.Array]:
  spec, tab = model_inputs(batch)
  logits = state.apply_fn({'params': state.params, 'batch_stats': state.batch_stats},
                          spec, tab, train=False)
  # Labels and mask come back with the logits: with several processes each
  # host fed only its slice, and the replicated outputs are the whole batch.
  return {'logits': logits, 'loss': per_example_loss(logits, batch, multilabel),
          'label': batch['label'], 'label_set': batch['label_set'], 'mask': batch['mask']}
