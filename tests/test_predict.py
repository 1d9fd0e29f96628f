"""python -m crnn_jax.predict: files -> genres through the spectrogram contract.

Tiny workdirs are written here with from_weights.write_workdir (5-s clips,
freshly initialised weights: no training), so these tests check the plumbing,
not accuracy: prediction equals a direct model.apply on audio.spectrogram_image
of the same windows, long files average several windows, bad files give one
line and do not stop the others, multi-label output honours the threshold and
the label hierarchy, tabular inputs come from a CSV row or from audio estimates.
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `pytest` run without `python -m`
  sys.path.insert(0, str(ROOT))

from tiny_models import CLASSES, CLIP, SR, direct_logits
from tiny_models import data_info as _data_info
from tiny_models import variables as _variables
from tiny_models import write_clip as _write

from configs import default
from crnn_jax import predict as pr
from crnn_jax.core import audio, storage, tabular
from crnn_jax.core.errors import UserError
from crnn_jax.inference.inputs import expand_inputs
from crnn_jax.inference.model import InferenceModel
from crnn_jax.inference.predictor import Predictor
from crnn_jax.train import from_weights
from crnn_jax.workdir.files import validation_threshold


def _direct_probs(config, data_info, variables, images, tab=None, multilabel=False):
  """What the model says about these uint8 images, without crnn_jax.predict."""
  logits = direct_logits(config, data_info, variables, images, tab)
  if multilabel:
    return 1.0 / (1.0 + np.exp(-logits))
  e = np.exp(logits - logits.max(axis=1, keepdims=True))
  return e / e.sum(axis=1, keepdims=True)


def _read_window(path: Path, index: int) -> np.ndarray:
  y, rate = sf.read(str(path), dtype='float32')
  assert rate == SR and y.ndim == 1
  n = audio.clip_samples(CLIP)
  return y[index * n:(index + 1) * n]


@pytest.fixture(scope='module')
def single(tmp_path_factory):
  """A real workdir (write_workdir), loaded back through from_workdir."""
  config = default.get_config()
  info = _data_info()
  variables = _variables(config, info, seed=1)
  workdir = tmp_path_factory.mktemp('wd_single')
  from_weights.write_workdir(str(workdir), config, variables, info)
  return config, info, variables, str(workdir)


@pytest.fixture(scope='module')
def predictor(single):
  return Predictor.from_workdir(single[3], batch_size=4)


@pytest.fixture(scope='module')
def clips(tmp_path_factory):
  root = tmp_path_factory.mktemp('clips')
  return {
      'good': _write(root / 'folder' / 'sub' / 'good.wav', 'metal', CLIP),
      'long': _write(root / 'long.wav', 'swing', 17.0, index=1),  # 3 full windows + 2 s
      'short': _write(root / 'short.wav', 'strings', 3.0, index=2),  # padded to 5 s
      'too_short': _write(root / 'too_short.wav', 'electronic', 1.0, index=3),
      'hirate': _write(root / 'hi.flac', 'electronic', CLIP, index=4, rate=44_100),
  }


def _corrupt_mp3(path: Path) -> Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(b'ID3\x03\x00\x00\x00' + np.random.default_rng(0).bytes(4000))
  return path


# ---------------------------------------------------------------- contract

def test_probabilities_equal_direct_apply_on_spectrogram_image(single, predictor, clips):
  config, info, variables, _ = single
  result, = predictor.predict_files([clips['good']])
  assert result['windows'] == 1
  image = audio.spectrogram_image(_read_window(clips['good'], 0), CLIP)
  expected = _direct_probs(config, info, variables, [image])[0]
  got = np.array([result['probabilities'][c] for c in CLASSES])
  np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
  assert abs(got.sum() - 1.0) < 1e-6
  # The comparison can fail: the same clip without the contract's frequency
  # flip (or on another clip) gives clearly different numbers.
  unflipped = _direct_probs(config, info, variables, [image[::-1]])[0]
  assert np.abs(unflipped - expected).max() > 1e-4
  # top_k is the ranking of those probabilities.
  order = np.argsort(-expected, kind='stable')
  assert [e['genre'] for e in result['top_k']] == [CLASSES[i] for i in order[:4]]


def test_long_clip_averages_every_full_window(single, predictor, clips):
  config, info, variables, _ = single
  result, = predictor.predict_files([clips['long']])
  assert result['windows'] == 3  # 17 s in 5-s windows: 0-5, 5-10, 10-15
  images = [audio.spectrogram_image(_read_window(clips['long'], i), CLIP) for i in range(3)]
  per_window = _direct_probs(config, info, variables, images)
  got = np.array([result['probabilities'][c] for c in CLASSES])
  np.testing.assert_allclose(got, per_window.mean(axis=0), rtol=0, atol=1e-6)
  assert np.abs(per_window[0] - per_window[1]).max() > 1e-5  # averaging is visible


def test_short_clip_padded_as_preparation_and_too_short_rejected(single, predictor, clips):
  config, info, variables, _ = single
  short, too_short = predictor.predict_files([clips['short'], clips['too_short']])
  y, _ = sf.read(str(clips['short']), dtype='float32')
  padded = np.pad(y, (0, audio.clip_samples(CLIP) - len(y)))
  expected = _direct_probs(config, info, variables, [audio.spectrogram_image(padded, CLIP)])[0]
  assert short['windows'] == 1
  np.testing.assert_allclose([short['probabilities'][c] for c in CLASSES], expected, atol=1e-6)
  assert 'too short' in too_short['error'] and 'windows' not in too_short


def test_batch_size_and_packing_do_not_change_results(single, predictor, clips):
  """Windows of several files share padded batches; results must not depend on it."""
  config, info, variables, _ = single
  files = [clips['long'], clips['good'], clips['hirate'], clips['short']]
  reference = predictor.predict_files(files)  # batch 4: the long file's 3 windows + 1
  for b, workers in ((1, 1), (16, 2)):
    predictor = Predictor(InferenceModel(config, variables, info, batch_size=b))
    got = predictor.predict_files(files, num_workers=workers)
    for r1, rb in zip(reference, got):
      assert r1['file'] == rb['file'] and r1['windows'] == rb['windows']
      np.testing.assert_allclose(list(r1['probabilities'].values()),
                                 list(rb['probabilities'].values()), atol=1e-6)
  assert [r['windows'] for r in reference] == [3, 1, 1, 1]


# ---------------------------------------------------------------- inputs

def test_expand_inputs_recurses_sorts_and_reports(tmp_path):
  _write(tmp_path / 'lib' / 'b' / 'x.wav', 'metal', 0.5)
  _write(tmp_path / 'lib' / 'a' / 'y.flac', 'metal', 0.5)
  _write(tmp_path / 'lib' / 'a' / 'z.opus', 'metal', 0.5, rate=48_000)
  (tmp_path / 'lib' / 'a' / 'notes.txt').write_text('not audio')
  (tmp_path / 'empty').mkdir()
  got = expand_inputs([tmp_path / 'lib', tmp_path / 'empty', tmp_path / 'missing.mp3'])
  assert got[0] == (str(tmp_path / 'lib' / 'a' / 'y.flac'), None)
  assert got[1] == (str(tmp_path / 'lib' / 'a' / 'z.opus'), None)
  assert got[2] == (str(tmp_path / 'lib' / 'b' / 'x.wav'), None)
  assert got[3][0] == str(tmp_path / 'empty') and 'no audio files' in got[3][1]
  assert got[4] == (str(tmp_path / 'missing.mp3'), 'no such file or folder')
  assert len(got) == 5


def test_corrupt_file_is_one_error_and_others_are_scored(predictor, clips, tmp_path):
  folder = tmp_path / 'mixed'
  good = _write(folder / 'good.wav', 'metal', CLIP)
  bad = _corrupt_mp3(folder / 'bad.mp3')
  (folder / 'empty.ogg').write_bytes(b'')
  results = {Path(r['file']).name: r for r in predictor.predict_files([folder])}
  assert set(results) == {'good.wav', 'bad.mp3', 'empty.ogg'}
  assert 'error' not in results['good.wav'] and results['good.wav']['windows'] == 1
  assert results['bad.mp3']['error'] and '\n' not in results['bad.mp3']['error']
  assert 'empty' in results['empty.ogg']['error']
  out, err = io.StringIO(), io.StringIO()
  assert pr.predict_main(predictor.model.workdir, [str(bad)], out=out, err=err) == 1
  assert f'error: {bad}: ' in err.getvalue()
  assert good.exists()


def test_json_output_parses(predictor, clips, tmp_path):
  bad = _corrupt_mp3(tmp_path / 'bad.mp3')
  out, err = io.StringIO(), io.StringIO()
  status = pr.predict_main('', [str(clips['good']), str(clips['long']), str(bad)],
                           top_k=2, fmt='json', out=out, err=err, predictor=predictor)
  assert status == 0
  doc = json.loads(out.getvalue())
  assert doc['classes'] == CLASSES and doc['multilabel'] is False
  assert doc['scored'] == 2 and doc['failed'] == 1
  assert doc['files_per_second'] > 0 and doc['seconds'] > 0
  good, long, failed = doc['results']
  assert [len(good['top_k']), long['windows']] == [2, 3]
  assert good['top_k'][0]['probability'] >= good['top_k'][1]['probability']
  assert failed['file'] == str(bad) and failed['error']
  assert err.getvalue().count('\n') == 1 and str(bad) in err.getvalue()


def test_text_output_and_usage_errors(single, predictor, clips):
  out = io.StringIO()
  assert pr.predict_main('', [str(clips['long'])], top_k=3, out=out, predictor=predictor) == 0
  lines = out.getvalue().splitlines()
  assert lines[0].startswith('# 4 classes, softmax, 5 s windows')
  assert lines[1] == f'{clips["long"]}  (3 windows averaged)'
  assert len(lines) == 6 and lines[2].startswith('   1. ')
  assert re.fullmatch(r'# scored 1 of 1 file\(s\) in [\d.]+ s \([\d.]+ files/s\)', lines[5])
  with pytest.raises(UserError, match='--format'):
    pr.predict_main(single[3], [str(clips['good'])], fmt='xml', predictor=predictor)
  with pytest.raises(UserError, match='at least one'):
    pr.predict_main(single[3], [], predictor=predictor)
  with pytest.raises(UserError, match='does not exist'):
    Predictor.from_workdir(str(Path(single[3]) / 'nope'))


# ---------------------------------------------------------------- multi-label

def test_validation_threshold_read_from_results_json(tmp_path):
  assert validation_threshold(str(tmp_path)) == (None, 'default (no results.json)')
  storage.write_json(str(tmp_path / 'results.json'), {'validation': {'top1': 0.5}})
  assert validation_threshold(str(tmp_path))[0] is None
  storage.write_json(str(tmp_path / 'results.json'), {'validation': {'threshold': 0.37}})
  assert validation_threshold(str(tmp_path)) == (0.37, 'chosen on validation (results.json)')


def test_multilabel_threshold_and_hierarchy(single, clips):
  _, info, variables, _ = single
  config = default.get_config()
  config.multilabel = True
  config.label_hierarchy = {'metal': 'electronic'}  # child -> parent
  images = [audio.spectrogram_image(_read_window(clips['long'], i), CLIP) for i in range(3)]
  sig = _direct_probs(config, info, variables, images, multilabel=True).mean(axis=0)
  expected = sig.copy()
  expected[0] = max(sig[0], sig[1])  # electronic is at least its child metal
  # A threshold between the 2nd and 3rd best scores: two genres above it.
  ranked = np.sort(expected)[::-1]
  assert ranked[1] - ranked[2] > 1e-3
  threshold = float((ranked[1] + ranked[2]) / 2)
  assert InferenceModel(config, variables, info).threshold == 0.5  # none given
  p = Predictor(InferenceModel(config, variables, info, batch_size=2, threshold=threshold))
  assert p.model.multilabel
  result, = p.predict_files([clips['long']], top_k=3)
  got = np.array([result['probabilities'][c] for c in CLASSES])
  np.testing.assert_allclose(got, expected, atol=1e-6)
  assert got[0] >= got[1] and abs(got.sum() - 1.0) > 1e-3  # sigmoid, not softmax
  above = [e['genre'] for e in result['above_threshold']]
  assert above == [CLASSES[i] for i in np.argsort(-expected)[:2]]
  assert result['threshold'] == threshold and len(result['top_k']) == 3
  line = next(x for x in pr.format_text(result).splitlines() if x.startswith('  at or above'))
  assert all(g in line for g in above)
  assert not any(f'{CLASSES[i]} ' in line for i in np.argsort(-expected)[2:])
  assert p.model.describe()['scores'] == 'sigmoid, label hierarchy applied'


# ---------------------------------------------------------------- tabular

TAB_NAMES = ('key', 'tempo', 'danceability')  # categorical, estimable, not estimable


@pytest.fixture(scope='module')
def tab_model():
  config = default.get_config()
  info = _data_info(TAB_NAMES, {'key': 12}, mean=(0.0, 120.0, 0.5), std=(1.0, 30.0, 0.2))
  return config, info, _variables(config, info, seed=3)


def test_tabular_from_csv_row(tab_model, clips, tmp_path):
  config, info, variables = tab_model
  table = tmp_path / 'tracks.csv'
  with open(table, 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(['id', 'key', 'tempo', 'danceability'])
    w.writerow(['good', '3', '140.5', '0.8'])  # Spotify's key 3 -> code 4
    w.writerow(['other', '0', '90', '0.1'])
  p = Predictor(InferenceModel(config, variables, info, batch_size=2))
  good, short = p.predict_files([clips['good'], clips['short']], tabular_csv=str(table))
  assert good['tabular']['values'] == {'key': 4.0, 'tempo': 140.5, 'danceability': 0.8}
  assert "'good'" in good['tabular']['source']
  raw = np.array([[4.0, 140.5, 0.8]], np.float32)
  enc = tabular.encode(raw, info['metadata'], 'raw')
  image = audio.spectrogram_image(_read_window(clips['good'], 0), CLIP)
  expected = _direct_probs(config, info, variables, [image], enc)[0]
  np.testing.assert_allclose(list(good['probabilities'].values()), expected, atol=1e-6)
  assert 'no row' in short['error']  # the other file has no row; still one line
  with pytest.raises(UserError, match='lacks'):
    bad = tmp_path / 'bad.csv'
    bad.write_text('id,key\ngood,1\n')
    p.predict_files([clips['good']], tabular_csv=str(bad))


def test_tabular_estimated_from_audio_says_so(tab_model, clips):
  config, info, variables = tab_model
  p = Predictor(InferenceModel(config, variables, info, batch_size=2))
  result, = p.predict_files([clips['good']])
  tab = result['tabular']
  assert 'estimate' in tab['source']
  assert tab['estimated'] == ['key', 'tempo'] and tab['imputed'] == ['danceability']
  assert tab['values']['danceability'] == 0.5  # the training mean
  assert 1.0 <= tab['values']['key'] <= 12.0 and tab['values']['tempo'] > 0
  assert 'training mean (not estimable) for danceability' in pr.format_text(result)


# ---------------------------------------------------------------- command line

def _cli(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, '-m', 'crnn_jax.predict', *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=120, check=False)


def test_cli_folder_with_good_and_corrupt_file(single, tmp_path):
  folder = tmp_path / 'lib'
  _write(folder / 'good.wav', 'swing', CLIP)
  bad = _corrupt_mp3(folder / 'bad.mp3')
  proc = _cli(f'--workdir={single[3]}', '--top_k=2', str(folder))
  assert proc.returncode == 0, proc.stderr
  assert f'{folder / "good.wav"}  (1 window)' in proc.stdout
  assert len([x for x in proc.stdout.splitlines() if x.startswith('   ')]) == 2
  err = [x for x in proc.stderr.splitlines() if x.strip()]
  assert err == [x for x in err if x.startswith(f'error: {bad}: ')] and len(err) == 1, \
      proc.stderr


def test_cli_missing_workdir_is_one_line(tmp_path):
  proc = _cli(f'--workdir={tmp_path / "nowhere"}', str(tmp_path))
  assert proc.returncode == 2
  assert proc.stderr.strip().count('\n') == 0 and proc.stderr.startswith('error: workdir ')
  assert 'Traceback' not in proc.stderr


def test_a_slow_rate_is_not_rounded_to_zero():
  assert '(0.004 files/s)' in pr._summary_line(1, 1, 250.0, None)
  assert '(2.50 files/s)' in pr._summary_line(5, 5, 2.0, None)
