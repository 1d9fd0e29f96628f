"""The reference's genre model: 10 classes, audio only (docs/reference.md sections 1, 4-6).

Needs a data set prepared by ``python -m data_prep`` with these 10 classes.
"""

import ml_collections

from configs import default
from crnn_jax.core import labels


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.data.name = 'genres'
  config.data.data_dir = 'data/tfds'
  config.data.class_names = labels.GENRES
  config.data.num_tabular = 0  # audio only
  return config
