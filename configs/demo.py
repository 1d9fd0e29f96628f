"""The built-in demo: synthetic clips in four styles, generated once.

``python main.py --config=configs/demo.py --workdir=workdirs/demo`` generates
the audio (``demo_data/audio``), prepares it through the same code as real
audio into a TFDS set (``demo_data/tfds``), trains the reference CRNN on it and
evaluates. 5-second clips keep the whole run within minutes on 2 CPU cores;
the model and recipe are the reference's.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.data.demo = True
  config.data.name = 'crnn_demo'
  config.data.data_dir = 'demo_data/tfds'
  config.data.demo_audio_dir = 'demo_data/audio'
  config.data.demo_clips_per_class = 40
  config.data.demo_clip_seconds = 5.0
  # Small batches and 8 epochs give ~100 steps: enough for batch norm's running
  # statistics (momentum 0.9) to settle; with fewer, larger steps train accuracy
  # reaches 1.0 while evaluation with running statistics lags far behind.
  config.train.batch_size = 8
  config.train.eval_batch_size = 16
  config.train.num_epochs = 8
  config.train.max_lr = 3e-3
  return config
