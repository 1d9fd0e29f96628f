"""The update and evaluation steps: pure functions of (state, batch), jitted
over the device mesh by crnn_jax.train.parallel."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from crnn_jax.core import audio
from crnn_jax.train.state import TrainState

Batch = Mapping[str, Any]


def model_inputs(batch: Batch) -> tuple[jax.Array, jax.Array | None]:
  """uint8 spectrogram images -> [0, 1] floats, on the device (4x less to copy)."""
  spec = audio.image_to_model_input(batch['spectrogram'])
  tab = batch['tabular'] if batch['tabular'].shape[-1] else None
  return spec, tab


def per_example_loss(logits: jax.Array, batch: Batch, multilabel: bool) -> jax.Array:
  if multilabel:
    return optax.sigmoid_binary_cross_entropy(logits, batch['label_set']).mean(axis=-1)
  return optax.softmax_cross_entropy_with_integer_labels(logits, batch['label'])


def train_step(state: TrainState, batch: Batch, class_weights: jax.Array, multilabel: bool
               ) -> tuple[TrainState, dict[str, jax.Array]]:
  spec, tab = model_inputs(batch)

  def loss_fn(params):
    logits, updates = state.apply_fn({'params': params, 'batch_stats': state.batch_stats},
                                     spec, tab, train=True, mutable=['batch_stats'])
    losses = per_example_loss(logits, batch, multilabel)
    if multilabel:
      loss = losses.mean()
    else:  # torch's weighted cross entropy: sum(w_y * l) / sum(w_y)
      w = class_weights[batch['label']]
      loss = (w * losses).sum() / w.sum()
    return loss, (logits, updates['batch_stats'])

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
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
