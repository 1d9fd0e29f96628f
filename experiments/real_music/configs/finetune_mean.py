"""Fine-tuning the reference genre model with a mean readout, on three windows per track.

The flatten head weighs each of the 20 GRU steps apart; a mean readout (its head
started from the flatten head's per-step weights, summed) reads them alike, with
20x fewer head weights, and allows time shifts.
"""

import ml_collections

from configs import finetune
from experiments.real_music import runs


def get_config() -> ml_collections.ConfigDict:
  config = finetune.get_config()
  config.model.readout = 'mean'
  config.augment.time_shift = 0.5
  return runs.with_study(config, 7, 'fine-tune the reference genre model, mean readout',
                         'rm_windows', from_reference=True)
