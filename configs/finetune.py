"""Fine-tuning a trained or imported model on your own data set.

The conv + GRU weights and batch-norm statistics come from the model in
``--config.init_from`` (a workdir, or a shipped model's name: genres); the head
keeps the rows of classes whose names the pretrained model knows and starts
fresh for the others. Everything trains, the pretrained layers at a tenth of the
learning rate; ``--config.finetune.trainable=head`` trains the head alone on
frozen features (a linear probe); ``--config.finetune.batch_norm=frozen`` trains
every weight on the loaded batch-norm statistics, which stay as they are. Class
names the pretrained model lacks can start from one of its classes:
``--config.finetune.class_map=orchestral=classical,electronic=techno``. On top
of the defaults (configs/default.py): the reference's model as loaded, batch 8,
8 epochs, max_lr 2e-3, the best epoch by validation accuracy kept, and light
augmentation (SpecAugment only).

  python main.py --config=configs/finetune.py --config.init_from=genres \
      --config.data.folder=~/music/styles --workdir=workdirs/styles

(``--config.data.name=NAME --config.data.data_dir=DIR`` instead of the folder
for a set built with ``python -m data_prep build``.)

The model fields must be the pretrained model's (the reference's by default).
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.model.variant = 'finetuned'  # the fields: the pretrained model's (the reference's)
  config.finetune.body_lr_scale = 0.1
  # A few hundred small steps; the loaded batch-norm statistics are a good start
  # and those steps update them (no recomputation, unless asked for: then from 4
  # training batches).
  config.train.batch_size = 8
  config.train.eval_batch_size = 32
  config.train.num_epochs = 8
  config.train.max_lr = 2e-3
  config.train.best_metric = 'val_accuracy'
  config.eval.recompute_bn_batches = 4
  # Light augmentation: the flatten head reads each of the 20 time steps with
  # its own weights, so no time shift; no mixup in so few epochs.
  config.augment.freq_masks = 1
  config.augment.freq_mask_bands = 8
  config.augment.time_masks = 1
  config.augment.time_mask_frames = 50
  return config
