"""python -m crnn_jax.import_reference: safe reading, checked conversion, a
workdir that evaluation and prediction load, and one-line errors.

Tests that need the reference's checkpoints skip (with the reason) where
../shared/reference/checkpoints is absent; the rest use files made here. The
genre model's import -> workdir -> prediction round trip on demo audio is in
test_reference_checkpoints.py.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REFERENCE_CHECKPOINTS

torch = pytest.importorskip('torch')

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `pytest` run without `python -m`
  sys.path.insert(0, str(ROOT))

import jax

from configs import genres, metal
from crnn_jax import import_reference as ir
from crnn_jax import model as models
from crnn_jax.core import labels, tabular
from crnn_jax.core.errors import UserError
from crnn_jax.reference import torch_model as tr
from crnn_jax.reference import torch_pickle
from crnn_jax.workdir import checkpoints

CHECKPOINTS = REFERENCE_CHECKPOINTS
GENRE_FILE = CHECKPOINTS / 'crnn_genre_model.pth'
METAL_FILE = CHECKPOINTS / 'crnn_concat_metal_model.pth'
needs_checkpoints = pytest.mark.skipif(
    not (GENRE_FILE.is_file() and METAL_FILE.is_file()),
    reason=f'reference checkpoints not found in {CHECKPOINTS} (set CRNN_JAX_REFERENCE_CHECKPOINTS to their folder)')


def _spectrograms(n: int, seed: int = 0) -> np.ndarray:
  """Smooth spectrogram-like [0, 1] images (1292 frames), as uint8 / 255."""
  rng = np.random.default_rng(seed)
  base = np.linspace(1.0, 0.2, 128)[None, :, None] * rng.uniform(0.5, 1.0, (n, 1, 1292))
  noise = rng.uniform(0.0, 0.3, (n, 128, 1292))
  images = np.clip((base + noise) * 255, 0, 255).astype(np.uint8)
  return (images.astype(np.float32) / 255.0)[..., None]


def _torch_log_probs(path: Path, spec: np.ndarray, tab: np.ndarray | None) -> np.ndarray:
  port = tr.load_reference_model(path)
  with torch.no_grad():
    return port(torch.from_numpy(np.ascontiguousarray(spec.transpose(0, 3, 1, 2))),
                None if tab is None else torch.from_numpy(tab)).numpy()


def _workdir_log_probs(workdir: str, spec: np.ndarray, raw_tab: np.ndarray | None
                       ) -> tuple[np.ndarray, dict]:
  """What prediction does with a workdir: load, encode tabular, apply."""
  config, variables, data_info, _, _ = checkpoints.load_for_use(workdir)
  model = models.create_model(config.model, len(data_info['class_names']),
                              data_info['num_tabular'])
  tab = None
  if raw_tab is not None:
    tab = tabular.encode(raw_tab, data_info['metadata'], data_info['categorical_encoding'])
  return np.asarray(jax.nn.log_softmax(jax.jit(model.apply)(variables, spec, tab))), data_info


@pytest.mark.slow  # ~10 s: write_workdir and load_for_use each compile the model's init
@needs_checkpoints
def test_imported_metal_workdir_keeps_the_tabular_encoding(tmp_path):
  """Given stats are stored; prediction standardises raw values with them and
  feeds categorical codes raw, exactly what the reference model expects."""
  rng = np.random.default_rng(1)
  mean = [0.0] * 3 + list(rng.normal(size=13) * 10)
  std = [1.0] * 3 + list(rng.uniform(0.5, 5.0, 13))
  stats = tmp_path / 'stats.json'
  stats.write_text(json.dumps({'tabular_mean': mean, 'tabular_std': std}))
  workdir = str(tmp_path / 'metal')
  ir.import_checkpoint(str(METAL_FILE), metal.get_config(), workdir, tabular_stats=str(stats))

  raw = np.concatenate([np.array([[1, 5, 2], [2, 12, 1]], np.float32),
                        (np.asarray(mean[3:]) + rng.normal(size=(2, 13)) * std[3:])], axis=1)
  spec = _spectrograms(2, seed=2)
  got, info = _workdir_log_probs(workdir, spec, raw.astype(np.float32))
  meta = info['metadata']
  assert info['class_names'] == list(labels.METAL_SUBGENRES)
  assert meta['tabular_names'] == list(ir.TABULAR_NAMES)
  np.testing.assert_allclose(meta['tabular_std'][3:], std[3:])
  assert 'stats.json' in meta['tabular_stats_source']
  encoded = raw.copy()
  encoded[:, 3:] = (raw[:, 3:] - np.asarray(mean[3:])) / (np.asarray(std[3:]) + 1e-7)
  want = _torch_log_probs(METAL_FILE, spec, encoded.astype(np.float32))
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_the_metal_import_needs_a_choice_of_tabular_statistics(tmp_path):
  ckpt = tmp_path / 'x.pth'
  ckpt.write_bytes(b'0')
  with pytest.raises(UserError, match='--tabular_csv=.*--tabular_stats=identity'):
    ir.build_data_info(metal.get_config(), 16, str(ckpt))
  info = ir.build_data_info(metal.get_config(), 16, str(ckpt), tabular_stats='identity')
  meta = info['metadata']
  assert meta['tabular_mean'] == [0.0] * 16 and meta['tabular_std'] == [1.0] * 16
  assert meta['tabular_stats_source'].startswith('none')
  assert meta['tabular_categorical'] == {'explicit': 2, 'key': 12, 'mode': 2}
  with pytest.raises(UserError, match='not both'):
    ir.build_data_info(metal.get_config(), 16, str(ckpt), str(ckpt), str(ckpt))
  # the genre model has no tabular branch and needs none of this
  assert ir.build_data_info(genres.get_config(), 0, str(ckpt))['metadata']['tabular_names'] == []


def test_stats_from_the_reference_csv(tmp_path):
  """Rows kept as the reference kept them: one of the 20 classes after merges
  (blackgaze -> black metal counts, djent is dropped), all 16 values present."""
  names = ir.TABULAR_NAMES
  rng = np.random.default_rng(3)
  rows, kept = [], []
  for i, genre in enumerate(['thrash metal', 'blackgaze', 'djent', 'punk', 'doom metal', 'punk']):
    values = {n: float(rng.normal(50, 20)) for n in names}
    values.update(explicit=bool(i % 2), key=int(i % 12), mode=int(i % 2))
    if i == 4:
      values['tempo'] = ''  # a missing value drops the row
    rows.append({'id': f'{i:02d}track', 'genre': genre, 'artist_id': f'a{i}', **values})
    if genre != 'djent' and i != 4:
      kept.append([values[n] for n in names[3:]])
  path = tmp_path / 'metal_track_data.csv'
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  mean, std, count = ir.stats_from_reference_csv(str(path))
  kept_arr = np.asarray(kept)
  assert count == len(kept) == 4
  np.testing.assert_allclose(mean[3:], kept_arr.mean(0), rtol=1e-9)
  np.testing.assert_allclose(std[3:], kept_arr.std(0, ddof=1), rtol=1e-9)
  assert mean[:3] == [0.0] * 3 and std[:3] == [1.0] * 3


class _RunsCode:
  """A pickle payload that would create a file if it were ever unpickled unsafely."""

  def __init__(self, marker: str):
    self.marker = marker

  def __reduce__(self):
    return (os.makedirs, (self.marker,))


def test_unsafe_or_foreign_files_get_one_line_errors(tmp_path, monkeypatch):
  marker = tmp_path / 'code_ran'
  evil = tmp_path / 'evil.pth'
  torch.save({'model': {'w': torch.zeros(1)}, 'opt': _RunsCode(str(marker))}, evil)
  garbage = tmp_path / 'garbage.pth'
  garbage.write_text('not a pickle')
  foreign = tmp_path / 'foreign.pth'
  torch.save({'weights': 1}, foreign)
  cases = {evil: 'loaded safely', garbage: 'loaded safely', foreign: 'not a reference checkpoint',
           tmp_path / 'missing.pth': 'not found'}
  for path, text in cases.items():
    with pytest.raises(UserError) as err:
      torch_pickle.read_state_dict(path)
    assert text in str(err.value) and '\n' not in str(err.value)
    assert 'weights_only' not in str(err.value)  # never advise the unsafe load
  assert not marker.exists()

  monkeypatch.setitem(sys.modules, 'torch', None)  # `import torch` now fails
  with pytest.raises(UserError, match=r"needs torch: pip install -e '\.\[torch\]'"):
    torch_pickle.read_state_dict(garbage)


@needs_checkpoints
def test_a_checkpoint_that_does_not_fit_the_config(tmp_path):
  with pytest.raises(UserError, match='20 classes .* use configs/metal.py'):
    ir.import_checkpoint(str(METAL_FILE), genres.get_config(), str(tmp_path / 'a'))
  config = metal.get_config()
  config.data.categorical_encoding = 'onehot'
  with pytest.raises(UserError, match='raw categorical codes'):
    ir.import_checkpoint(str(METAL_FILE), config, str(tmp_path / 'b'))
  config = genres.get_config()
  config.model.gru_features = 32
  with pytest.raises(UserError) as err:
    ir.import_checkpoint(str(GENRE_FILE), config, str(tmp_path / 'c'))
  assert "'rnn.gru.weight_ih_l0'" in str(err.value) and '\n' not in str(err.value)
  busy = tmp_path / 'busy'
  (busy / 'checkpoints' / '5').mkdir(parents=True)
  with pytest.raises(UserError, match='already holds checkpoints'):
    ir.import_checkpoint(str(GENRE_FILE), genres.get_config(), str(busy))


def test_command_line_error_is_one_line(tmp_path):
  bad = tmp_path / 'bad.pth'
  bad.write_text('nope')
  proc = subprocess.run(
      [sys.executable, '-m', 'crnn_jax.import_reference', '--config=configs/genres.py',
       f'--checkpoint={bad}', f'--workdir={tmp_path / "wd"}'],
      cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 2, proc.stderr
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  assert lines[-1].startswith('error: ') and 'Traceback' not in proc.stderr, proc.stderr
  assert not (tmp_path / 'wd').exists()
