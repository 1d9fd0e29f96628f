"""Fine-tuning the reference genre model on one centred window per track, without
augmentation, batch norm frozen.

Batch norm on the reference's running statistics (from 25,000 tracks) instead of
batches of 8 clips: recomputing them on the small set's training clips cost 0.13
validation top-1 on the 120-track set.
"""

import ml_collections

from configs import finetune
from experiments.real_music import runs


def get_config() -> ml_collections.ConfigDict:
  config = runs.without_augmentation(finetune.get_config())
  config.finetune.batch_norm = 'frozen'
  return runs.with_study(
      config, 9,
      'fine-tune the reference genre model, 1 window, no augmentation, batch norm frozen',
      'rm_single', from_reference=True)
