"""The README's demo command, end to end, in fresh folders (slow)."""

import json
import os
import subprocess
import sys
import time

import pytest
from conftest import ROOT


@pytest.mark.slow
def test_demo_command_learns_within_five_minutes(tmp_path):
  workdir = tmp_path / 'demo'
  start = time.monotonic()
  subprocess.run(
      [sys.executable, 'main.py', '--config=configs/demo.py', f'--workdir={workdir}',
       f'--config.data.data_dir={tmp_path}/tfds', f'--config.data.demo_audio_dir={tmp_path}/audio'],
      cwd=ROOT, check=True, capture_output=True, timeout=600)
  elapsed = time.monotonic() - start
  results = json.loads((workdir / 'results.json').read_text())
  assert results['test']['top1'] >= 0.9, results['test']
  assert elapsed < 300, f'demo took {elapsed:.0f} s'
  for name in ('confusion_matrix_test.png', 'training_curves.png', 'metrics.jsonl',
               'report_test.txt', 'config.json'):
    assert (workdir / name).exists(), name
  assert os.listdir(workdir / 'tensorboard')

  # The trained model on files: a real clip and a corrupt one.
  good = next((tmp_path / 'audio' / 'swing').iterdir())
  bad = tmp_path / 'broken.mp3'
  bad.write_bytes(b'\xff\xfb' + b'not really mp3' * 50)
  out = subprocess.run([sys.executable, '-m', 'crnn_jax.predict', f'--workdir={workdir}',
                        '--format=json', str(good), str(bad)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
  assert out.returncode == 0, out.stderr[-2000:]
  assert 'broken.mp3' in out.stderr and 'Traceback' not in out.stderr
  assert 'swing' in out.stdout
