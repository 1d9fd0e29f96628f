"""The train state and the reference's optimiser: AdamW with fastai's one-cycle
schedule on the learning rate and beta1 (docs/reference.md section 5)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
import optax
from flax.training import train_state

from crnn_jax import model as model_lib
from crnn_jax.core import audio
from crnn_jax.core.errors import UserError
from crnn_jax.data.info import DataInfo
from crnn_jax.train import finetune


class TrainState(train_state.TrainState):
  batch_stats: Any


def compute_dtype(config: ml_collections.ConfigDict) -> Any:
  try:
    return model_lib.compute_dtype(config.train.dtype)
  except ValueError as e:
    raise UserError(str(e)) from None


def create_model(config: ml_collections.ConfigDict, info: DataInfo) -> model_lib.CRNN:
  return model_lib.create_model(config.model, len(info.class_names), info.num_tabular,
                                dtype=compute_dtype(config))


def schedules(config: ml_collections.ConfigDict, total_steps: int
              ) -> tuple[optax.Schedule, optax.Schedule]:
  """fastai v1's one-cycle: lr max/25 -> max (cosine, first 30%) -> max/250,000,
  and beta1 0.95 -> 0.85 -> 0.95 on the same shape (docs/reference.md section 5)."""
  t = config.train
  total_steps = max(int(total_steps), 1)
  lr = optax.cosine_onecycle_schedule(
      transition_steps=total_steps, peak_value=t.max_lr, pct_start=t.pct_start,
      div_factor=t.div_factor, final_div_factor=t.final_div_factor)
  warmup_end = int(t.pct_start * total_steps)
  beta1 = optax.piecewise_interpolate_schedule(
      'cosine', init_value=t.beta1_max,
      boundaries_and_scales={warmup_end: t.beta1_min / t.beta1_max,
                             total_steps: t.beta1_max / t.beta1_min})
  return lr, beta1


def make_optimizer(config: ml_collections.ConfigDict, total_steps: int
                   ) -> optax.GradientTransformation:
  """AdamW with decoupled weight decay on every parameter, as fastai applied it.

  total_steps counts optimiser updates (global batches), not micro-batches.
  Fine-tuning (crnn_jax/train/finetune.py) splits the parameters into body and
  head: a frozen body gets no updates, a body_lr_scale < 1 a lower learning rate.
  """
  t = config.train
  lr, beta1 = schedules(config, total_steps)

  def adamw(learning_rate: optax.Schedule) -> optax.GradientTransformation:
    return optax.inject_hyperparams(optax.adamw)(
        learning_rate=learning_rate, b1=beta1, b2=t.beta2, eps=t.eps,
        weight_decay=t.weight_decay)

  trainable, scale = finetune.check_settings(config)
  if trainable == 'head':
    tx = optax.multi_transform({finetune.HEAD: adamw(lr), finetune.BODY: optax.set_to_zero()},
                               finetune.param_labels)
  elif scale != 1.0:
    tx = optax.multi_transform({finetune.HEAD: adamw(lr),
                                finetune.BODY: adamw(lambda step: scale * lr(step))},
                               finetune.param_labels)
  else:
    tx = adamw(lr)
  if t.grad_clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(t.grad_clip_norm), tx)
  if t.grad_accum_steps > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=t.grad_accum_steps)
  return tx


def input_size(info: DataInfo) -> tuple[int, int]:
  """(mel bands, frames) of the data set's spectrograms."""
  return audio.N_MELS, info.frames or audio.num_frames()


def create_train_state(config: ml_collections.ConfigDict, info: DataInfo, rng: jax.Array,
                       tx: optax.GradientTransformation) -> TrainState:
  """A freshly initialised model with the given optimiser."""
  model = create_model(config, info)
  spec, tab = model_lib.dummy_inputs(model, *input_size(info))
  variables = jax.jit(functools.partial(model.init, train=False))(rng, spec, tab)
  return TrainState.create(apply_fn=model.apply, params=variables['params'],
                           batch_stats=variables.get('batch_stats', {}), tx=tx)


def abstract_variables(config: ml_collections.ConfigDict, info: DataInfo) -> dict[str, Any]:
  """Shapes and dtypes of the model's {'params', 'batch_stats'}, without compiling."""
  return model_lib.abstract_variables(create_model(config, info), *input_size(info))


def state_from_variables(config: ml_collections.ConfigDict, info: DataInfo,
                         variables: Mapping[str, Any], tx: optax.GradientTransformation
                         ) -> TrainState:
  """A train state around given weights, with a fresh optimiser."""
  return TrainState.create(apply_fn=create_model(config, info).apply,
                           params=variables['params'], batch_stats=variables['batch_stats'], tx=tx)
