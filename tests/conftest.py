"""Shared fixtures: a tiny TFDS data set written through the real writer."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

# librosa caches its numba functions on disk; two processes compiling one at once
# can leave a cache that crashes every later load (numba takes no lock), as the
# suite's workers did in a fresh environment. A build compiles them before its
# decoding workers start (data_prep.decode.compile_librosa_here), but xdist's
# workers are separate test processes that each decode in-process from their
# first test on: each keeps its own cache, set before anything imports numba.
if os.environ.get('PYTEST_XDIST_WORKER') and 'NUMBA_CACHE_DIR' not in os.environ:
  os.environ['NUMBA_CACHE_DIR'] = os.path.join(
      tempfile.gettempdir(), f'crnn_jax_numba_{sys.version_info[0]}{sys.version_info[1]}_'
      f'{os.environ["PYTEST_XDIST_WORKER"]}')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

# The reference's .pth checkpoints (never in the repository): tests that need them
# skip where they are absent. CRNN_JAX_REFERENCE_CHECKPOINTS names their folder;
# by default the project's own shared folder beside the checkout.
REFERENCE_CHECKPOINTS = Path(os.environ.get(
    'CRNN_JAX_REFERENCE_CHECKPOINTS',
    os.path.join(os.path.dirname(ROOT), 'shared', 'reference', 'checkpoints')))

TINY_FRAMES = 64  # audio.num_frames(1.47), the clip length in the metadata


def _tiny_examples(split: str, n: int, seed: int, num_tabular: int, windows: int = 1,
                   brightness: int = 150):
  rng = np.random.default_rng(seed)

  def make():
    for i in range(n):
      label = (i // windows) % 2
      img = rng.integers(0, 60, size=(128, TINY_FRAMES)).astype(np.uint8)
      band = slice(0, 40) if label == 0 else slice(88, 128)
      img[band] += np.uint8(brightness)
      tab = rng.normal(size=num_tabular).astype(np.float32)
      if num_tabular:
        tab[0] = 1 + label  # a categorical code in 1..2
      label_set = np.zeros(2, np.uint8)
      label_set[label] = 1
      yield f'{split}-{i}', {'spectrogram': img, 'tabular': tab, 'label': label, 'label_set': label_set,
                                 'track_id': f'{split}{i // windows}', 'artist_id': f'artist{i}'}
  return make


def write_tiny(data_dir: str, name: str = 'tiny', num_tabular: int = 0,
               sizes=(64, 16, 16), class_names=('low', 'high'), windows: int = 1,
               splits=('train', 'validation', 'test'), brightness: int = 150) -> str:
  """Two classes told apart by a bright band (low or high mel bands, this
  much brighter than the noise of 0-60); with ``windows`` > 1, that many
  consecutive examples share a track id."""
  from data_prep.writer import write_dataset
  tab_names = [f'f{i}' for i in range(num_tabular)]
  metadata = {
      'class_names': list(class_names), 'tabular_names': tab_names,
      'tabular_categorical': {'f0': 2} if num_tabular else {},
      'tabular_mean': [0.0] * num_tabular, 'tabular_std': [1.0] * num_tabular,
      'clip': {'seconds': 1.47, 'position': 'start', 'min_seconds': 0.5}, 'source': 'synthetic',
  }
  splits = {s: _tiny_examples(s, n, k, num_tabular, windows, brightness)
            for k, (s, n) in enumerate(zip(('train', 'validation', 'test'), sizes)) if s in splits}
  write_dataset(name, data_dir, list(class_names), num_tabular, splits, metadata,
                frames=TINY_FRAMES)
  return data_dir


@pytest.fixture(scope='session')
def tiny_data_dir(tmp_path_factory) -> str:
  return write_tiny(str(tmp_path_factory.mktemp('tfds')))


@pytest.fixture(scope='session')
def tiny_tabular_data_dir(tmp_path_factory) -> str:
  return write_tiny(str(tmp_path_factory.mktemp('tfds_tab')), name='tiny_tab', num_tabular=4)


def tiny_config(data_dir: str, name: str = 'tiny'):
  from configs import default
  config = default.get_config()
  config.data.name = name
  config.data.data_dir = data_dir
  config.train.batch_size = 16
  config.train.eval_batch_size = 16
  config.train.num_epochs = 2
  config.train.max_lr = 3e-3
  config.model.pool_windows = ((2, 2), (2, 2), (2, 2), (4, 2), (4, 4))
  return config



def override_flags(config) -> list[str]:
  """main.py's flags for ``config``: configs/default.py and a --config.X=V for every
  field that differs from it (tiny_config on the command line)."""
  from configs import default

  def leaves(c, prefix=''):
    for key, value in c.items():
      if hasattr(value, 'items'):
        yield from leaves(value, f'{prefix}{key}.')
      else:
        yield f'{prefix}{key}', value

  defaults = dict(leaves(default.get_config()))
  return ['--config=configs/default.py'] + [
      f'--config.{key}={value}' for key, value in leaves(config) if defaults.get(key) != value]
