"""Fine-tuning a trained or imported model on your own data set.

The conv + GRU weights and batch-norm statistics come from the workdir in
``--config.init_from``; the head keeps the rows of classes whose names the
pretrained model knows and starts fresh for the others. Everything trains, the
pretrained layers at a tenth of the learning rate; ``--config.finetune.trainable=head``
trains the head alone on frozen features (a linear probe);
``--config.finetune.batch_norm=frozen`` trains every weight on the loaded
batch-norm statistics, which stay as they are. Class names the
pretrained model lacks can start from one of its classes:
``--config.finetune.class_map=orchestral=classical,electronic=techno``. The
recipe is the small-data one (configs/small_data.py) with batch 8, 8 epochs,
max_lr 2e-3 and light augmentation (SpecAugment only).

  python -m crnn_jax.import_reference --config=configs/genres.py \
      --checkpoint=../shared/reference/checkpoints/crnn_genre_model.pth \
      --workdir=workdirs/reference_genres
  python -m data_prep build --input=~/music/styles --data_dir=data/tfds --name=mine \
      --clip_position=center --windows=4
  python main.py --config=configs/finetune.py --config.init_from=workdirs/reference_genres \
      --config.data.name=mine --config.data.data_dir=data/tfds --workdir=workdirs/mine_finetuned

The model fields must be the pretrained model's (the reference's by default).
"""

import ml_collections

from configs import small_data


def get_config() -> ml_collections.ConfigDict:
  config = small_data.get_config()
  config.model.variant = 'finetuned'
  config.init_from = ''  # required: --config.init_from=WORKDIR
  config.model.readout = 'flatten'  # the pretrained model's (the reference's)
  config.finetune.body_lr_scale = 0.1
  # The loaded statistics are a good start and fine-tuning's steps update them.
  config.eval.recompute_bn = False
  config.train.batch_size = 8
  config.train.num_epochs = 8
  config.train.max_lr = 2e-3
  # Light augmentation: the flatten head reads each of the 20 time steps with
  # its own weights, so no time shift; no mixup in so few epochs.
  config.augment.time_shift = 0.0
  config.augment.mixup_alpha = 0.0
  config.augment.freq_masks = 1
  config.augment.freq_mask_bands = 8
  config.augment.time_masks = 1
  config.augment.time_mask_frames = 50
  return config
