"""One way to build a run, shared by training, evaluation and the LR range test:
the workdir, the data set's description and sources, the device mesh, the
label hierarchy, and how many steps an epoch makes."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import ml_collections
import numpy as np
import optax

from crnn_jax.core import audio, labels
from crnn_jax.core.errors import UserError
from crnn_jax.data import source
from crnn_jax.data.info import DataInfo
from crnn_jax.model import summary
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
                    f'batch of {t.batch_size}; lower --config.train.batch_size')
  return StepPlan(global_batch=t.batch_size, accum=accum, steps_per_epoch=steps_per_epoch,
                  num_epochs=t.num_epochs)


@dataclasses.dataclass
class Run:
  """What train, eval and lr_find work with."""
  config: ml_collections.ConfigDict
  workdir: str
  info: DataInfo
  sources: dict[str, Any]
  parallel: Parallel
  label_ancestors: np.ndarray | None  # multi-label runs with a label hierarchy

  def fresh_state(self, tx: optax.GradientTransformation) -> state_lib.TrainState:
    """The model initialised from config.seed, replicated over the mesh."""
    state = state_lib.create_train_state(self.config, self.info,
                                         jax.random.key(self.config.seed), tx)
    return self.parallel.replicate(state)

  def train_labels(self) -> np.ndarray:
    """Every training label, read without decoding a spectrogram."""
    return source.train_labels(self.config)


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
