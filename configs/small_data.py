"""A recipe for small data sets (a few hundred tracks), from scratch.

The reference recipe (batch 64, 10 epochs) was made for 25,000 clips; on 200
it makes ~10 optimiser steps, too few for batch norm's running statistics, and
evaluation then puts every clip in one class. This recipe keeps the reference
model's layers (with a mean readout) and changes how it is trained: small
batches and more epochs (hundreds of steps), batch-norm statistics recomputed on the training clips before each
validation, augmentation (time shift, SpecAugment, mixup), and the best epoch
by validation accuracy kept and evaluated. Prepare several windows per track:

  python -m data_prep build --input=~/music/styles --data_dir=data/tfds --name=mine \
      --clip_position=center --windows=4
  python main.py --config=configs/small_data.py --config.data.name=mine \
      --config.data.data_dir=data/tfds --workdir=workdirs/mine

experiments/real_music/README.md (the real-music study) has what it reaches on
real recordings, beside the reference recipe and fine-tuning (configs/finetune.py).
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.model.variant = 'small_data'
  # A 64-wide readout (mean of the GRU outputs over time) instead of flattening
  # all 20 steps into 1,280 numbers: 20x fewer head weights to fit on few clips,
  # and any clip length.
  config.model.readout = 'mean'
  config.train.batch_size = 16
  config.train.eval_batch_size = 32
  config.train.num_epochs = 30
  config.train.max_lr = 3e-3
  config.train.best_metric = 'val_accuracy'
  config.eval.recompute_bn = True
  config.eval.recompute_bn_batches = 4  # 64 clips: enough for the statistics, cheap
  config.augment.time_shift = 0.5
  config.augment.freq_masks = 2
  config.augment.freq_mask_bands = 16
  config.augment.time_masks = 2
  config.augment.time_mask_frames = 100
  config.augment.mixup_alpha = 0.2
  return config
