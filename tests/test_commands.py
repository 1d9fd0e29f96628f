"""Promises of the README kept through their real command lines, on a workdir trained
on the tiny set: main.py --mode=eval with another top-k, --mode=lr_find, and
python -m crnn_jax.predict --checkpoint=latest."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, override_flags, tiny_config
from tiny_models import write_clip

from crnn_jax.inference.predictor import Predictor
from crnn_jax.train import lr_find
from crnn_jax.train import trainer as train


@pytest.fixture(scope='module')
def trained(tiny_data_dir, tmp_path_factory):
  """A two-epoch run on the tiny set: checkpoints of steps 4 and 8."""
  workdir = tmp_path_factory.mktemp('trained')
  train.train_and_evaluate(tiny_config(tiny_data_dir), str(workdir))
  return workdir


def _copy(trained, tmp_path):
  return shutil.copytree(trained, tmp_path / 'w')


def _run(*args: str) -> subprocess.CompletedProcess:
  out = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  return out


def test_main_eval_reports_the_configured_top_k(tiny_data_dir, trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  out = _run('main.py', *override_flags(tiny_config(tiny_data_dir)), '--config.eval.top_k=2',
             '--mode=eval', f'--workdir={workdir}')
  results = json.loads((workdir / 'results.json').read_text())
  for split in (results['validation'], results['test'], results['test']['track']):
    assert split['top2'] == 1.0 and 'top5' not in split  # two classes: both in the top 2
  assert 'top-2 1.0000' in out.stdout
  assert 'top-2 1.0000' in (workdir / 'report_test.txt').read_text()


def _files(folder) -> dict[str, tuple[int, int]]:
  return {os.path.relpath(os.path.join(d, f), folder):
          (os.stat(os.path.join(d, f)).st_size, os.stat(os.path.join(d, f)).st_mtime_ns)
          for d, _, names in os.walk(folder) for f in names}


def test_main_lr_find_sweeps_and_leaves_the_training_workdir_as_it_was(tiny_data_dir, trained,
                                                                        tmp_path):
  workdir = _copy(trained, tmp_path)
  before = _files(workdir)
  out = _run('main.py', *override_flags(tiny_config(tiny_data_dir)), '--mode=lr_find',
             '--config.lr_find.num_it=30', '--config.lr_find.start_lr=1e-06',
             '--config.lr_find.end_lr=1.0',
             '--config.train.batch_size=8', f'--workdir={workdir}')
  result = json.loads((workdir / 'lr_find.json').read_text())
  n = len(result['lrs'])
  assert 15 < n <= 30  # 8 batches per epoch: the sweep went on over epochs
  np.testing.assert_allclose(result['lrs'], lr_find.range_test_lrs(1e-6, 1.0, 30)[:n],
                             rtol=1e-9)
  np.testing.assert_allclose(result['smoothed_losses'], lr_find.smooth_losses(result['losses']),
                             rtol=1e-9)
  suggested = lr_find.suggest_lr(result['lrs'], result['smoothed_losses'])
  assert result['suggested_max_lr'] == suggested
  assert f'suggested max_lr {suggested:.3g}' in out.stdout
  with open(workdir / 'lr_find.png', 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  after = _files(workdir)
  assert {k: v for k, v in after.items() if not k.startswith('lr_find.')} == before


def _scores(workdir, clip, *flags: str) -> dict:
  out = _run('-m', 'crnn_jax.predict', f'--workdir={workdir}', '--format=json', *flags, str(clip))
  (result,) = json.loads(out.stdout)['results']
  return result['probabilities']


def test_predict_checkpoint_latest_scores_with_the_latest_weights(trained, tmp_path):
  """A workdir whose best checkpoint (epoch 1) is not its latest (epoch 2): predict
  uses the best, --checkpoint=latest the latest, as the library's Predictor does."""
  workdir = _copy(trained, tmp_path)
  shutil.copytree(workdir / 'checkpoints' / '4', workdir / 'checkpoints_best' / '4')
  clip = write_clip(tmp_path / 'clip.wav', 'metal', seconds=1.5)
  best, latest = _scores(workdir, clip), _scores(workdir, clip, '--checkpoint=latest')
  for scores, checkpoint in ((best, 'best'), (latest, 'latest')):
    (expected,) = Predictor.from_workdir(str(workdir), checkpoint=checkpoint).predict_files([clip])
    assert scores == pytest.approx(expected['probabilities'], rel=1e-5)
  assert abs(best['low'] - latest['low']) > 1e-4
