"""One way to build a run, shared by training, evaluation and the LR range test:
the workdir, the data set's description and sources, the device mesh, the
label hierarchy, the starting weights, and how many steps an epoch makes."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import ml_collections
import numpy as np
import optax

from crnn_jax.core import audio, labels
from crnn_jax.core.errors import UserError
from crnn_jax.data import pipeline, source
from crnn_jax.data.info import DataInfo
from crnn_jax.model import summary
from crnn_jax.train import finetune
from crnn_jax.train import state as state_lib
from crnn_jax.train.parallel import Parallel
from crnn_jax.workdir import files


@dataclasses.dataclass(frozen=True)
class StepPlan:
  """How the train split becomes optimiser updates."""
  global_batch: int  # clips per optimiser update (all devices, all processes)
  accum: int  # forward/backward passes per update
  steps_per_epoch: int  # optimiser updates per epoch; the last partial batch is dropped
  num_epochs: int

  @property
  def micro_batch(self) -> int:
    """Clips one forward/backward pass sees."""
    return self.global_batch // self.accum

  @property
  def epoch_clips(self) -> int:
    """Clips an epoch trains on: its full global batches."""
    return self.steps_per_epoch * self.global_batch

  @property
  def micro_steps_per_epoch(self) -> int:
    return self.steps_per_epoch * self.accum

  @property
  def total_steps(self) -> int:
    return self.steps_per_epoch * self.num_epochs


def plan_steps(config: ml_collections.ConfigDict, info: DataInfo) -> StepPlan:
  t = config.train
  accum = int(t.grad_accum_steps)
  if accum < 1 or t.batch_size % accum:
    raise UserError(f'config.train.grad_accum_steps={accum} must be >= 1 and divide '
                    f'config.train.batch_size={t.batch_size}')
  steps_per_epoch = info.split_sizes['train'] // t.batch_size
  if steps_per_epoch == 0:
    raise UserError(f'the train split has {info.split_sizes["train"]} examples, fewer than one '
                    f'batch of {t.batch_size}; lower --config.train.batch_size or store more '
                    'windows per track (data_prep build --windows=all)')
  return StepPlan(global_batch=t.batch_size, accum=accum, steps_per_epoch=steps_per_epoch,
                  num_epochs=t.num_epochs)


def bn_settling_steps(momentum: float) -> int:
  """Optimiser steps after which a running average has forgotten its start
  (its weight below 1%): 44 for batch norm's momentum 0.9."""
  return math.ceil(math.log(0.01) / math.log(momentum)) if 0 < momentum < 1 else 0


def short_schedule_warning(config: ml_collections.ConfigDict, plan: StepPlan,
                           train_size: int) -> str | None:
  """A warning, with the fix, when the run makes too few optimiser steps for
  batch norm's running statistics to settle; None when they are enough (or
  the statistics are recomputed, or frozen)."""
  needed = bn_settling_steps(float(config.model.bn_momentum))
  if (plan.total_steps >= needed or config.eval.get('recompute_bn')
      or finetune.batch_norm_frozen(config)):
    return None
  fixes = []
  smaller = [b for b in (32, 16, 8) if b < plan.global_batch
             and (train_size // b) * plan.num_epochs >= needed and b % plan.accum == 0]
  if smaller:
    b = smaller[0]
    fixes.append(f'--config.train.batch_size={b} ({(train_size // b) * plan.num_epochs} steps)')
  fixes.append(f'--config.train.num_epochs={math.ceil(needed / plan.steps_per_epoch)}')
  fixes.append('--config.eval.recompute_bn=True')
  return (f'warning: this run makes {plan.total_steps} optimiser steps ({plan.steps_per_epoch} per '
          f'epoch x {plan.num_epochs}), too few for batch norm\'s running statistics (momentum '
          f'{config.model.bn_momentum}) to settle (~{needed}); evaluation may then put most clips '
          f'in one class. Fix: {" or ".join(fixes)}; configs/small_data.py is a recipe for small '
          'data sets')


@dataclasses.dataclass
class Run:
  """What train, eval and lr_find work with."""
  config: ml_collections.ConfigDict
  workdir: str
  info: DataInfo
  sources: dict[str, Any]
  parallel: Parallel
  label_ancestors: np.ndarray | None  # multi-label runs with a label hierarchy
  _track_ids: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

  def fresh_state(self, tx: optax.GradientTransformation) -> state_lib.TrainState:
    """The model initialised from config.seed, replicated over the mesh."""
    state = state_lib.create_train_state(self.config, self.info,
                                         jax.random.key(self.config.seed), tx)
    return self.parallel.replicate(state)

  def from_pretrained(self, state: state_lib.TrainState
                      ) -> tuple[state_lib.TrainState, list[str]]:
    """A fresh state with config.init_from's weights (crnn_jax/train/finetune.py),
    replicated; and lines saying what was loaded."""
    fresh = jax.device_get({'params': state.params, 'batch_stats': state.batch_stats})
    variables, notes = finetune.initial_variables(self.config, self.info, fresh,
                                                  finetune.load(self.config.init_from))
    state = state.replace(params=variables['params'], batch_stats=variables['batch_stats'],
                          opt_state=state.tx.init(variables['params']))
    return self.parallel.replicate(state), notes

  def reader(self, split: str) -> pipeline.Reader:
    """Batches of ``split`` as this run reads them (its label hierarchy applied)."""
    return pipeline.Reader(self.sources[split], self.info, self.config, self.label_ancestors)

  def train_labels(self) -> np.ndarray:
    """Every training label, read without decoding a spectrogram."""
    return source.train_labels(self.config)

  def track_ids(self, split: str) -> np.ndarray:
    """The track of every example of a split, in order (read once)."""
    if split not in self._track_ids:
      self._track_ids[split] = source.read_track_ids(self.config, split)
    return self._track_ids[split]


def build_run(config: ml_collections.ConfigDict, workdir: str) -> Run:
  workdir = files.ensure_workdir(workdir)
  info = source.load_info(config)
  ancestors = (labels.hierarchy_matrix(info.class_names, config.label_hierarchy)
               if config.multilabel else None)
  return Run(config=config, workdir=workdir, info=info, sources=source.open_sources(config),
             parallel=Parallel(config), label_ancestors=ancestors)


def summary_table(config: ml_collections.ConfigDict) -> str:
  """``--mode=summary``: the model of the config's data set if it is prepared;
  else of the config alone (class names, ``data.num_tabular`` or, where that
  is -1 (any), ``data.summary_num_tabular``; 30-s clips)."""
  try:
    info = source.load_info(config)
    num_classes, num_tabular = len(info.class_names), info.num_tabular
    frames, origin = info.frames or audio.num_frames(), f'data set {info.name!r}'
  except UserError:
    num_classes = len(config.data.class_names) or 10
    num_tabular = int(config.data.num_tabular)  # raw encoding
    if num_tabular < 0:
      num_tabular = int(config.data.get('summary_num_tabular', 0))
    frames, origin = audio.num_frames(), 'config (data set not prepared)'
  return summary.layer_table(config.model, num_classes, num_tabular, audio.N_MELS, frames,
                             source=origin)
