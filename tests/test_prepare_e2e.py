"""End to end: each source -> `python -m data_prep build` -> `python main.py` trains on it."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SR = 22_050
pytestmark = pytest.mark.slow


def _tone(freq: float, seconds: float, seed: int) -> np.ndarray:
  t = np.arange(int(seconds * SR)) / SR
  noise = 0.02 * np.random.default_rng(seed).standard_normal(len(t))
  return (0.3 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


def _cli(*args: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=600, check=False)


def _build_and_train(tmp_path, build_args: list[str], extra: list[str] = ()) -> dict:
  data_dir = str(tmp_path / 'tfds')
  built = _cli('-m', 'data_prep', 'build', f'--data_dir={data_dir}', '--name=e2e',
               '--clip_seconds=2', '--min_seconds=1', '--workers=2', '--no_progress', *build_args)
  assert built.returncode == 0, built.stderr[-3000:]
  assert 'validation' in built.stdout and 'skipped' in built.stdout  # the printed summary
  trained = _cli('main.py', '--config=configs/default.py', '--config.data.name=e2e',
                 f'--config.data.data_dir={data_dir}', f'--workdir={tmp_path / "work"}',
                 '--config.train.num_epochs=1', '--config.train.batch_size=2',
                 '--config.train.eval_batch_size=4', *extra)
  assert trained.returncode == 0, trained.stderr[-3000:]
  with open(tmp_path / 'work' / 'results.json', encoding='utf-8') as f:
    return json.load(f)


def test_folder_source_trains(tmp_path):
  lib = tmp_path / 'lib'
  for li, label in enumerate(('blues', 'metal', 'jazz')):
    os.makedirs(lib / label)
    for k in range(5):
      sf.write(lib / label / f'{k}.flac', _tone(200 * (li + 1) + 20 * k, 2.5, k), SR)
  results = _build_and_train(tmp_path, [f'--input={lib}'])
  assert results['classes'] == ['blues', 'jazz', 'metal']
  assert np.isfinite(results['test']['loss'])


def test_manifest_with_tabular_from_audio_trains_onehot(tmp_path):
  rows = []
  for k in range(12):
    path = tmp_path / 'audio' / f'{k}.wav'
    os.makedirs(path.parent, exist_ok=True)
    sf.write(path, _tone(150 + 40 * k, 2.5, k), SR)
    rows.append([f'audio/{k}.wav', 'ab'[k % 2], f'artist{k // 2}', ['True', 'False'][k % 2]])
  with open(tmp_path / 'm.csv', 'w', newline='', encoding='utf-8') as f:
    w = csv.writer(f)
    w.writerow(['path', 'label', 'artist', 'explicit'])
    w.writerows(rows)
  results = _build_and_train(tmp_path, [f'--input={tmp_path / "m.csv"}', '--tabular=audio'],
                             ['--config.data.categorical_encoding=onehot'])
  assert results['classes'] == ['a', 'b']
  assert np.isfinite(results['test']['loss'])
