"""The metal data set as multi-label classification (the reference's own
conclusion): every mapped genre tag of a track's artist is a target.

Needs the metal data set from ``python -m data_prep`` (its ``label_set``
feature holds all of an artist's mapped tags).
"""

import ml_collections

from configs import metal


def get_config() -> ml_collections.ConfigDict:
  config = metal.get_config()
  config.multilabel = True
  # Only relations that hold by definition; extend to taste.
  config.label_hierarchy = ml_collections.ConfigDict({'melodic death metal': 'death metal'})
  return config
