"""The reference's metal model: 20 subgenres, audio + 16 tabular inputs.

Needs a data set prepared by ``python -m data_prep`` with these 20 classes and
the 16 tabular columns of SPEC.md section 3.
"""

import ml_collections

from configs import default
from crnn_jax.core import labels, tabular


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.data.name = 'metal'
  config.data.data_dir = 'data/tfds'
  config.data.class_names = labels.METAL_SUBGENRES
  config.data.num_tabular = len(tabular.REFERENCE_COLUMNS)  # SPEC.md section 3
  config.train.max_lr = 1.738e-3
  return config
