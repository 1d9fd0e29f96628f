"""Fine-tuning the reference genre model on one centred window per track, without augmentation."""

import ml_collections

from configs import finetune
from experiments.real_music import runs


def get_config() -> ml_collections.ConfigDict:
  return runs.with_study(
      runs.without_augmentation(finetune.get_config()), 6,
      'fine-tune the reference genre model, 1 window, no augmentation', 'rm_single',
      from_reference=True)
