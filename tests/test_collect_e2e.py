"""A metal set collected today, end to end, through the commands a user types (slow).

The fake Spotify Web API in its 2026 development-mode era (with a synthetic
local library for its catalogue) -> ``python -m data_prep spotify`` ->
``python -m data_prep match`` -> ``python -m data_prep build`` ->
``python main.py --config=configs/metal.py`` for a step.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import metal
from crnn_jax.core import audio, labels
from crnn_jax.model import crnn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow
TODAY_COLUMNS = ['explicit', 'key', 'mode', 'duration_ms', 'loudness', 'num_sections', 'tempo',
                 'time_signature']


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess:
  out = subprocess.run([sys.executable, *args], cwd=ROOT, env=dict(os.environ, **env),
                       capture_output=True, text=True, timeout=900, check=False)
  assert out.returncode == 0, (args, out.stdout[-2000:], out.stderr[-3000:])
  return out


def _start_fake(library: str) -> tuple[subprocess.Popen, str]:
  fake = subprocess.Popen([sys.executable, '-m', 'data_prep.testing.fake_spotify', '--era=2026',
                           '--port=0', f'--library={library}'], cwd=ROOT,
                          stdout=subprocess.PIPE, text=True)
  for line in fake.stdout:
    if ' at http://' in line:
      return fake, line.split(' at ', 1)[1].split(';')[0].strip()
  raise AssertionError('the fake Spotify did not start')


def test_metal_set_collected_from_2026_spotify_trains_with_configs_metal(tmp_path):
  library, out, data_dir = tmp_path / 'music', tmp_path / 'spotify', tmp_path / 'tfds'
  fake, url = _start_fake(str(library))
  try:
    collected = _cli('-m', 'data_prep', 'spotify', '--strategy=artists', f'--out={out}',
                     f'--api_url={url}', '--no_progress', SPOTIPY_CLIENT_ID='fake-id',
                     SPOTIPY_CLIENT_SECRET='fake-secret')
  finally:
    fake.terminate()
    fake.wait(timeout=30)
  assert 'GET /audio-features refused' in collected.stdout
  with open(out / 'tracks.csv', newline='', encoding='utf-8') as f:
    tracks = list(csv.DictReader(f))
  assert {labels.METAL_LABEL_MAP[t['genre']] for t in tracks} - {None} == set(
      labels.METAL_SUBGENRES)
  matched = _cli('-m', 'data_prep', 'match', f'--table={out}/tracks.csv',
                 f'--library={library}', f'--out={out}/matched.csv')
  assert f'{len(tracks)} of {len(tracks)} rows matched' in matched.stdout
  built = _cli('-m', 'data_prep', 'build', f'--input={out}/matched.csv', '--preset=spotify',
               '--label_map=metal', f'--classes={",".join(labels.METAL_SUBGENRES)}',
               '--tabular=audio', f'--data_dir={data_dir}', '--name=metal', '--clip_seconds=2',
               '--min_seconds=1', '--workers=2', '--no_progress')
  assert 'dropped label' in built.stdout  # the reference's 5 dropped tags
  workdir = tmp_path / 'work'
  _cli('main.py', '--config=configs/metal.py', f'--workdir={workdir}',
       f'--config.data.data_dir={data_dir}', '--config.train.num_epochs=1',
       '--config.train.batch_size=64', '--config.train.eval_batch_size=64')
  info = json.loads((workdir / 'data_info.json').read_text())
  assert info['metadata']['tabular_names'] == TODAY_COLUMNS and info['num_tabular'] == 8
  results = json.loads((workdir / 'results.json').read_text())
  assert results['step'] >= 1 and results['test']['count'] > 0
  # The reference model, but for a first tabular layer of 8 inputs (and 2-s clips).
  assert _params(16, audio.num_frames()) == 284_436
  assert results['num_params'] == _params(8, info['frames']) == (
      _params(16, info['frames']) - 8 * 32)


def _params(num_tabular: int, frames: int) -> int:
  model = crnn.create_model(metal.get_config().model, len(labels.METAL_SUBGENRES), num_tabular)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, audio.N_MELS, frames, 1)),
                          jnp.zeros((1, num_tabular)))
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(shapes['params'])))
