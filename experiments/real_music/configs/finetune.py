"""Fine-tuning the reference genre model (configs/finetune.py as it is), on three windows per track."""

import ml_collections

from configs import finetune
from experiments.real_music import runs


def get_config() -> ml_collections.ConfigDict:
  return runs.with_study(finetune.get_config(), 5, 'fine-tune the reference genre model',
                         'rm_windows', from_reference=True)
