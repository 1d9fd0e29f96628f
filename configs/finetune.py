"""Fine-tuning a trained or shipped model on your own music.

The conv + GRU weights and batch-norm statistics come from ``--config.init_from``:
the genre model shipped with crnn_jax by default ('genres'), another shipped
model's name, or a workdir; the head keeps the rows of classes whose names the
pretrained model knows and starts fresh for the others. Everything trains, the
pretrained layers at a tenth of the learning rate; ``--config.finetune.trainable=head``
trains the head alone on frozen features; ``--config.recipe=probe`` fits a
logistic regression on them instead (seconds); ``--config.finetune.batch_norm=frozen``
trains every weight on the loaded batch-norm statistics, which stay as they are.
Class names the pretrained model lacks can start from one of its classes:
``--config.finetune.class_map=orchestral=classical,electronic=techno``. On top
of the defaults (configs/default.py): the reference's model as loaded, batch 8,
8 epochs, max_lr 2e-3, the best epoch by validation accuracy kept, and light
augmentation (SpecAugment only).

A folder of your music (one sub-folder per class) is prepared on first run, and
the recipe (the probe or every layer) chosen by cross-validation on its
training split (docs/small_data.md):

  python main.py --config=configs/finetune.py --config.data.folder=~/music/styles \
      --workdir=workdirs/styles

or a data set prepared with ``python -m data_prep build`` (one recipe, as set):

  python main.py --config=configs/finetune.py --config.data.name=mine \
      --config.data.data_dir=data/tfds --workdir=workdirs/mine_finetuned

The model fields must be the pretrained model's (the reference's by default).
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.model.variant = 'finetuned'  # the fields: the pretrained model's (the reference's)
  config.init_from = 'genres'  # the shipped genre model (crnn_jax/pretrained)
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
