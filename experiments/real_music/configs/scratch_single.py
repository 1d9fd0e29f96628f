"""The small-data recipe from scratch on one centred window per track, without augmentation."""

import ml_collections

from configs import small_data
from experiments.real_music import runs


def get_config() -> ml_collections.ConfigDict:
  config = runs.without_augmentation(small_data.get_config())
  config.train.num_epochs = 12
  return runs.with_study(config, 3, 'small-data recipe, from scratch, 1 window, no augmentation',
                         'rm_single')
