"""The reference's metal model: 20 subgenres, audio + the data set's tabular columns.

Needs a data set named 'metal' prepared by ``python -m data_prep`` with these
20 classes. Its tabular branch takes the columns the data set has, in the
order of its metadata: with docs/reference.md section 3's 16 (the reference's own track
table) it is exactly the reference model (284,436 parameters); with the 8 a
set collected today has (explicit and duration from Spotify, key, mode,
tempo, loudness, time signature and sections estimated from the audio) the
same model with a narrower first tabular layer; with none, the audio-only
model. ``--config.data.num_tabular=16`` insists on the reference's 16.
"""

import ml_collections

from configs import default
from crnn_jax.core import labels, tabular


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.data.name = 'metal'
  config.data.data_dir = 'data/tfds'
  config.data.class_names = labels.METAL_SUBGENRES
  config.data.num_tabular = -1  # the data set's columns, whichever it has
  config.data.summary_num_tabular = len(tabular.REFERENCE_COLUMNS)  # docs/reference.md section 3
  config.train.max_lr = 1.738e-3
  return config
