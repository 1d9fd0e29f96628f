"""Fine-tuning the reference genre model with a mean readout on one centred window
per track, without augmentation."""

import ml_collections

from configs import finetune
from experiments.real_music import runs


def get_config() -> ml_collections.ConfigDict:
  config = runs.without_augmentation(finetune.get_config())
  config.model.readout = 'mean'
  return runs.with_study(
      config, 8, 'fine-tune the reference genre model, mean readout, 1 window, no augmentation',
      'rm_single', from_reference=True)
