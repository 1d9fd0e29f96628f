"""A linear probe on the reference genre model: its classifier layer alone trains,
on the frozen features (configs/finetune.py, finetune.trainable='head')."""

import ml_collections

from configs import finetune
from experiments.real_music import runs


def get_config() -> ml_collections.ConfigDict:
  config = finetune.get_config()
  config.finetune.trainable = 'head'
  config.train.num_epochs = 12
  return runs.with_study(config, 4, 'linear probe on the reference genre model', 'rm_windows',
                         from_reference=True)
