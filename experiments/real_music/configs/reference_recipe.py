"""The reference recipe from scratch (configs/default.py), on three windows per track.

Batch 64 as 4 passes of 16 (same updates and schedule; batch norm sees 16 clips
at a time): one pass of 64 full-length clips needs ~10 GB.
"""

import ml_collections

from configs import default
from experiments.real_music import runs


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.train.grad_accum_steps = 4
  return runs.with_study(config, 1, 'reference recipe, from scratch', 'rm_windows')
