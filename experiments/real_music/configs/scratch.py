"""The small-data recipe from scratch (configs/small_data.py), on three windows per track."""

import ml_collections

from configs import small_data
from experiments.real_music import runs


def get_config() -> ml_collections.ConfigDict:
  config = small_data.get_config()
  config.train.num_epochs = 12
  return runs.with_study(config, 2, 'small-data recipe, from scratch', 'rm_windows')
