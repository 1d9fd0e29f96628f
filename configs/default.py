"""Defaults shared by every config: the reference's model and training recipe.

Fields are documented where they are set; every one can be overridden from
the command line, e.g. ``--config.train.batch_size=8``.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 42  # drives initialisation, the data order and augmentation
  # Training losses are read back from the device every this many steps (and at
  # each epoch's end): the progress bar's loss and the NaN guard. Between reads
  # the host does not wait for the device (crnn_jax/train/trainer.py).
  config.log_every_steps = 100
  # Fine-tuning: a crnn_jax workdir (trained here, or made by
  # `python -m crnn_jax.import_reference`) whose conv + GRU weights and batch-norm
  # statistics start this run; its head is kept for classes of the same name.
  # '' trains from scratch. A workdir with a checkpoint of its own resumes instead.
  config.init_from = ''
  # What main.py does (crnn_jax/recipes/): '' trains this config as it is; 'probe'
  # fits a logistic regression on init_from's embeddings and folds it into the
  # model's classifier layer (seconds on a CPU); 'finetune' trains every layer from
  # init_from, 'head' its classifier layer alone (finetune.trainable all | head);
  # 'average' makes the probe and the fine-tune and keeps the mean of their
  # probabilities (two networks in one model); 'auto' keeps the best of
  # recipe_candidates by recipe_folds-fold cross-validation on the training
  # split, retrained on all of it. '' with data.folder and init_from is 'auto'.
  config.recipe = ''
  config.recipe_folds = 3
  config.recipe_candidates = 'probe,finetune,average'  # 'head' too by naming it

  config.data = ml_collections.ConfigDict()
  config.data.name = ''  # TFDS data set name (snake_case) under data_dir
  config.data.data_dir = ''  # folder that holds <name>/<version>/
  config.data.class_names = ()  # optional: must equal the data set's, in order
  # Tabular columns the data set must have; -1: any number: the model's tabular
  # branch takes the data set's columns (names and order from its metadata),
  # and with none it is the audio-only model.
  config.data.num_tabular = -1
  config.data.summary_num_tabular = 0  # --mode=summary without a prepared set: inputs shown
  config.data.categorical_encoding = 'raw'  # tabular key/mode/explicit: 'raw' codes (reference) | 'onehot'
  # grain worker processes; 0 reads in the main process (threads); -1: none on a CPU-only
  # host, one per core beyond two (at most 16) on a GPU/TPU host (crnn_jax/data/pipeline.py)
  config.data.num_workers = -1
  config.data.num_threads = 4  # reader threads (per worker process)
  config.data.prefetch_batches = 4  # batches read ahead: bounds the loader's memory
  config.data.demo = False  # True: generate and build the built-in demo set if missing
  # Your music, prepared on first run (data_prep/folder.py): a folder with one
  # sub-folder of audio files per class, or a manifest CSV (data_prep build --input).
  # The set goes to data_dir (default WORKDIR/data) as name (default: the folder's
  # name); a rerun reuses it or resumes its build. Clips are init_from's length (30 s).
  config.data.folder = ''
  config.data.windows = '1'  # windows stored per track: '1', 'all' or N (data_prep build)
  config.data.clip_position = 'center'  # where a track's window sits: 'center' | 'start'
  config.data.split_by = 'artist'  # 'artist' (a manifest's artist column) | 'track'
  # A cross-validation fold of the training split (crnn_jax/data/folds.py; set by
  # the recipe choice): cv_folds > 1 trains on all folds but cv_fold and tests on it.
  config.data.cv_folds = 0
  config.data.cv_fold = 0

  config.model = ml_collections.ConfigDict()
  config.model.variant = 'reference'  # a label for reports; the fields below define it
  config.model.conv_features = (64, 64, 64, 64, 64)
  config.model.pool_windows = ((2, 2), (2, 2), (2, 2), (4, 2), (4, 4))  # (mel, time)
  config.model.gru_features = 64
  config.model.gru_layers = 2
  config.model.gru_hidden_bias_rz = True  # torch's split GRU biases (211,722 params)
  # Time steps per iteration of the GRU's loop (True: all); any value gives the same
  # outputs. 1 is fastest on CPU (benchmarks/RESULTS.md); try 4 or True on GPUs.
  config.model.gru_unroll = 1
  config.model.readout = 'flatten'  # 'flatten' (reference) | 'last' | 'mean'
  config.model.tabular_features = (32, 32)
  config.model.audio_fc_features = 64  # metal head: width of audio_fc (GRU readout -> 64) before fusion
  config.model.audio_activation = 'none'  # reference: no nonlinearity; 'relu' fixes it
  config.model.init = 'torch'  # 'torch' (reference defaults) | 'flax'
  config.model.bn_momentum = 0.9  # Flax terms (PyTorch momentum 0.1)
  config.model.bn_epsilon = 1e-5
  # PyTorch (the reference) updates the running variance with the unbiased batch
  # variance, Flax with the biased one; False gives Flax's update.
  config.model.bn_unbiased_running_var = True

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 64  # global batch, split over all devices
  config.train.num_epochs = 10
  config.train.max_lr = 1.445e-3  # from the reference's LR range test (genres)
  config.train.pct_start = 0.3  # one-cycle warm-up fraction
  config.train.div_factor = 25.0  # initial lr = max_lr / div_factor
  config.train.final_div_factor = 1e4  # final lr = initial lr / final_div_factor
  config.train.beta1_max = 0.95  # beta1 goes max -> min -> max with the lr cycle
  config.train.beta1_min = 0.85
  config.train.beta2 = 0.99
  config.train.eps = 1e-8
  config.train.weight_decay = 0.01  # decoupled, on every parameter
  config.train.grad_clip_norm = 0.0  # 0 disables (reference: none)
  config.train.grad_accum_steps = 1  # >1: batch_size is split into this many passes
  config.train.class_weighting = 'none'  # 'none' (reference) | 'inverse_frequency'
  config.train.sampling = 'shuffle'  # 'shuffle' (reference) | 'balanced' (classes equally likely)
  config.train.dtype = 'float32'  # compute dtype: 'float32' (reference) | 'bfloat16'
  config.train.eval_batch_size = 64
  # Keep the best checkpoint by this validation metric beside the latest ('' off,
  # as the reference): 'val_accuracy' (ties: lower val_loss wins) | 'val_loss'.
  config.train.best_metric = ''
  config.train.early_stopping_patience = 0  # >0: stop after this many epochs without a new best

  # What trains when starting from config.init_from (crnn_jax/train/finetune.py):
  # 'all', or 'head' (a linear probe: conv + GRU frozen, batch norm on its running
  # statistics). body_lr_scale < 1 gives the pretrained conv + GRU a lower learning rate.
  config.finetune = ml_collections.ConfigDict()
  config.finetune.trainable = 'all'
  config.finetune.body_lr_scale = 1.0
  # 'update' (as the reference) or 'frozen': batch norm normalises with the loaded
  # running statistics and keeps them, while every weight trains.
  config.finetune.batch_norm = 'update'
  # Head rows for classes named otherwise in the pretrained model: 'mine=theirs,...'
  # (e.g. 'orchestral=classical'); classes of the same name need no entry.
  config.finetune.class_map = ''

  # Augmentation of training batches (crnn_jax/data/augment.py), all off in the
  # reference; random draws are a function of (seed, step), so a resumed run is exact.
  config.augment = ml_collections.ConfigDict()
  config.augment.time_shift = 0.0  # max circular shift along time, as a fraction of the window
  config.augment.freq_masks = 0  # SpecAugment: masks of up to freq_mask_bands mel bands
  config.augment.freq_mask_bands = 16
  config.augment.time_masks = 0  # SpecAugment: masks of up to time_mask_frames frames
  config.augment.time_mask_frames = 64
  config.augment.mixup_alpha = 0.0  # >0: mixup with Beta(alpha, alpha) weights (single-label)

  # Multi-label mode: targets are each track's label set, sigmoid outputs with
  # binary cross-entropy; metrics become mAP / ROC-AUC / example F1.
  config.multilabel = False
  # child -> parent class names (e.g. melodic death metal -> death metal):
  # applied to multi-label targets and predictions.
  config.label_hierarchy = ml_collections.ConfigDict()
  # --mode=lr_find: fastai's range test, exponential sweep over num_it batches
  # (fastai v1's defaults; crnn_jax/train/lr_find.py).
  config.lr_find = ml_collections.ConfigDict()
  config.lr_find.start_lr = 1e-7
  config.lr_find.end_lr = 10.0
  config.lr_find.num_it = 100

  # The probe (config.recipe='probe'): standardised track-mean embeddings, C of
  # scikit-learn's LogisticRegression chosen from c_grid by inner cross-validation (log-loss)
  # with inner_folds folds, grouped by artist (album) where the data set has them.
  config.probe = ml_collections.ConfigDict()
  config.probe.c_grid = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
  config.probe.inner_folds = 3

  config.eval = ml_collections.ConfigDict()
  config.eval.top_k = 5
  # Which checkpoint evaluation uses: 'best' (config.train.best_metric; the latest
  # where there is no best) | 'latest'.
  config.eval.checkpoint = 'best'
  # Recompute batch norm's statistics on training clips (the network in training
  # mode, a plain average over batches) before each validation and evaluation;
  # the checkpoints then hold them. Helps runs with few optimiser steps.
  config.eval.recompute_bn = False
  config.eval.recompute_bn_batches = 0  # at most this many training batches; 0: the whole split
  return config
