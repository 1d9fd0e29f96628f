"""Trains and evaluates the CRNN.

  python main.py --config=configs/demo.py --workdir=workdirs/demo
  python main.py --config=configs/metal.py --workdir=workdirs/metal
  python main.py --config=configs/metal.py --workdir=workdirs/metal --mode=eval
  python main.py --config=configs/genres.py --mode=summary

Any config field can be overridden: --config.train.batch_size=8.
"""

from __future__ import annotations

from crnn_jax.core import xla_defaults

xla_defaults.apply()  # before jax is imported anywhere

import sys

import jax
from absl import app, flags
from jax.experimental import multihost_utils
from ml_collections import config_flags

from crnn_jax.core import audio
from crnn_jax.core.errors import UserError, run_command
from crnn_jax.recipes import run as recipes
from crnn_jax.train import distributed, lr_find, setup
from crnn_jax.train.stopping import Interrupted
from crnn_jax.train.writers import log
from data_prep import build, demo, folder

config_flags.DEFINE_config_file('config', None, 'Path to a config file (configs/*.py).',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and results.')
flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'summary', 'lr_find'],
                  'train (then evaluate), eval (the best checkpoint where the run kept one, '
                  'else the latest: config.eval.checkpoint), summary (layer table), '
                  'lr_find (learning-rate range test; touches no checkpoint).')
flags.DEFINE_string('coordinator_address', None,
                    'Multi-process runs: host:port of process 0 (else SLURM/Open MPI are detected).')
flags.DEFINE_integer('num_processes', None, 'Multi-process runs: number of processes.')
flags.DEFINE_integer('process_id', None, 'Multi-process runs: this process, 0..num_processes-1.')
FLAGS = flags.FLAGS


def prepare_demo_data(config) -> None:
  """Generates the demo audio and builds its TFDS set. Both steps are
  idempotent: a finished set is reused, a half-written one completed."""
  print(f'Demo audio in {config.data.demo_audio_dir}, data set in {config.data.data_dir}',
        flush=True)
  demo.generate_demo_library(config.data.demo_audio_dir, seed=config.seed,
                             clips_per_class=config.data.demo_clips_per_class,
                             seconds=config.data.demo_clip_seconds)
  build.build_dataset(config.data.demo_audio_dir, config.data.data_dir, config.data.name,
                      clip=audio.ClipSettings(seconds=config.data.demo_clip_seconds,
                                              position='start', min_seconds=1.0),
                      seed=config.seed)


def prepare_folder(config, workdir: str):
  """config.data.folder's data set, built by process 0 (the others wait for
  it), and the config that reads it."""
  if jax.process_index() == 0:
    folder.prepare(config, workdir, recipes.clip_settings(config),
                   cv_folds=recipes.cross_validation_folds(config))
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('folder data ready')
  return folder.reading_config(config, workdir)


def run(config, workdir: str | None, mode: str) -> None:
  if mode == 'summary':
    print(setup.summary_table(config))
    return
  if not workdir:
    raise UserError(f'--workdir is required for --mode={mode}')
  if config.data.demo:
    if jax.process_index() == 0:
      prepare_demo_data(config)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices('demo data ready')
  if config.data.folder:
    config = prepare_folder(config, workdir)
  if mode == 'lr_find':
    lr_find.lr_range_test(config, workdir)
    return
  if mode == 'eval':
    results = recipes.evaluate(config, workdir)
  else:
    results = recipes.train(config, workdir)
  log(recipes.summary(results, config, workdir))


def main(argv) -> int | None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if FLAGS.config is None:
    raise app.UsageError('--config is required, e.g. --config=configs/demo.py')
  try:
    distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    run(FLAGS.config, FLAGS.workdir, FLAGS.mode)
  except Interrupted as e:
    print(str(e), file=sys.stderr)
    return 130
  except KeyboardInterrupt:  # a second Ctrl-C: stop now
    print('stopped without saving; rerunning resumes from the last checkpoint', file=sys.stderr)
    return 130
  return None


if __name__ == '__main__':
  run_command(main)
