"""Embeddings: the classifier layer's input, per window and per track.

On tiny workdirs (tests/tiny_models.py: 5-s clips, 216 frames, so the GRU
runs over 3 time steps and the reference's flatten readout is 3 x 64 = 192
wide): shapes and window times per file, the track embedding is the mean of
the windows, the classifier layer alone maps embeddings to the log-probabilities
prediction reports (genre, metal with tabular inputs, mean readout), the
files read back with numpy and pyarrow, and the command line writes them.
"""

from __future__ import annotations

import io
import subprocess
import sys

import jax
import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import ROOT
from tiny_models import CLIP, data_info, make_workdir, variables, write_clip

from configs import default
from crnn_jax import predict as pr
from crnn_jax.core.errors import UserError
from crnn_jax.inference.model import InferenceModel
from crnn_jax.inference.predictor import Predictor


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  return make_workdir(tmp_path_factory.mktemp('wd_embed'))


@pytest.fixture(scope='module')
def predictor(workdir):
  return Predictor.from_workdir(workdir[3], batch_size=4)


@pytest.fixture(scope='module')
def clips(tmp_path_factory):
  root = tmp_path_factory.mktemp('embed_clips')
  return [write_clip(root / 'long.wav', 'swing', 17.0, index=1),  # 3 windows
          write_clip(root / 'one.flac', 'metal', CLIP, index=2, rate=44_100),
          write_clip(root / 'short.wav', 'strings', 3.0, index=3)]  # 1 padded window


def _log_softmax(logits: np.ndarray) -> np.ndarray:
  return np.asarray(jax.nn.log_softmax(np.asarray(logits, np.float64), axis=-1))


def test_shapes_window_times_and_track_mean(predictor, clips, tmp_path):
  bad = tmp_path / 'bad.mp3'
  bad.write_bytes(b'not audio' * 100)
  emb = predictor.embed_files([clips[0], bad, *clips[1:]])
  assert emb.files == [str(p) for p in clips]
  assert list(emb.errors) == [str(bad)] and 'decodable' in emb.errors[str(bad)]
  assert emb.size == 3 * 64 == predictor.model.embedding_size
  assert [w.shape for w in emb.windows] == [(3, 192), (1, 192), (1, 192)]
  np.testing.assert_array_equal(emb.starts[0], [0.0, 5.0, 10.0])
  track = emb.track()
  assert track.shape == (3, 192) and track.dtype == np.float32
  for t, w in zip(track, emb.windows):
    np.testing.assert_allclose(t, w.mean(axis=0), rtol=0, atol=1e-6)
  assert np.abs(emb.windows[0][0] - emb.windows[0][1]).max() > 1e-3  # windows differ
  assert 'linear' in emb.description and '192' in emb.description


def test_classifier_of_embeddings_gives_the_predicted_log_probs(predictor, clips):
  results = predictor.predict_files(clips[:2], details=True)
  for result in results:
    details = result['details']
    logits = predictor.model.classify(details.embeddings)
    np.testing.assert_allclose(_log_softmax(logits), np.log(details.probabilities),
                               rtol=0, atol=1e-5)
    # ... and the track's scores are the mean of those windows' probabilities.
    track = np.exp(_log_softmax(logits)).mean(axis=0)
    np.testing.assert_allclose(list(result['probabilities'].values()), track, atol=1e-6)
  assert results[0]['details'].images.shape == (3, 128, 216)


@pytest.mark.parametrize('variant', ['metal', 'mean'])
def test_embedding_of_other_heads(variant, clips):
  """Metal: audio_fc (64) + tabular MLP (32) = 96; mean readout: the GRU width."""
  config = default.get_config()
  if variant == 'metal':
    info = data_info(('tempo', 'danceability'), mean=(120.0, 0.5), std=(30.0, 0.2))
    width = config.model.audio_fc_features + config.model.tabular_features[-1]
  else:
    config.model.readout = 'mean'
    info = data_info(clip=7.0)
    width = config.model.gru_features
  model = InferenceModel(config, variables(config, info, seed=5), info, batch_size=2)
  result, = Predictor(model).predict_files([clips[0]], details=True)
  details = result['details']
  assert details.embeddings.shape == (2 if variant == 'mean' else 3, width)
  np.testing.assert_allclose(_log_softmax(model.classify(details.embeddings)),
                             np.log(details.probabilities), rtol=0, atol=1e-5)
  assert ('final_layer' if variant == 'metal' else 'mean GRU readout') in \
      model.embedding_description()


def test_npz_and_parquet_read_back(predictor, clips, tmp_path):
  emb = predictor.embed_files(clips)
  npz = np.load(emb.save(tmp_path / 'e.npz'))
  assert list(npz['files']) == [str(p) for p in clips]
  np.testing.assert_array_equal(npz['windows'], np.concatenate(emb.windows))
  np.testing.assert_array_equal(npz['window_file'], [0, 0, 0, 1, 2])
  np.testing.assert_array_equal(npz['window_start'], [0, 5, 10, 0, 0])
  np.testing.assert_array_equal(npz['track'], emb.track())
  assert float(npz['window_seconds']) == CLIP and 'linear' in str(npz['description'])
  table = pq.read_table(emb.save(tmp_path / 'e.parquet'))
  assert table.column('file').to_pylist() == [str(p) for p in clips]
  assert table.column('windows').to_pylist() == [3, 1, 1]
  first = np.asarray(table.column('window_embeddings')[0].as_py(), np.float32)
  np.testing.assert_array_equal(first, emb.windows[0])
  np.testing.assert_array_equal(np.asarray(table.column('track_embedding').to_pylist()),
                                emb.track())
  assert table.schema.metadata[b'window_seconds'] == b'5.0'
  with pytest.raises(UserError, match='.npz or .parquet'):
    emb.save(tmp_path / 'e.csv')


def test_predict_main_writes_embeddings_beside_the_scores(predictor, clips, tmp_path):
  out, err = io.StringIO(), io.StringIO()
  target = tmp_path / 'sub' / 'emb.npz'
  assert pr.predict_main('', [str(p) for p in clips], out=out, err=err, predictor=predictor,
                         embeddings=str(target)) == 0
  assert f'embeddings in {target}' in out.getvalue().splitlines()[-1]
  assert np.load(target)['windows'].shape == (5, 192)
  with pytest.raises(UserError, match='.npz or .parquet'):
    pr.predict_main('', [str(clips[0])], predictor=predictor, embeddings=str(tmp_path / 'e.txt'))


def test_embeddings_without_an_extension_are_npz_and_other_names_refused_first(
    predictor, clips, tmp_path):
  out = io.StringIO()
  assert pr.predict_main('', [str(clips[0])], out=out, err=io.StringIO(), predictor=predictor,
                         embeddings=str(tmp_path / 'emb')) == 0
  assert np.load(tmp_path / 'emb.npz')['windows'].shape[0] == 3
  assert not (tmp_path / 'emb').exists()
  assert f'embeddings in {tmp_path / "emb.npz"}' in out.getvalue().splitlines()[-1]
  # Before any work: the model would not even load from this workdir.
  with pytest.raises(UserError, match=r"e\.txt'.*\.npz or \.parquet"):
    pr.predict_main(str(tmp_path / 'no_workdir'), [str(clips[0])],
                    embeddings=str(tmp_path / 'e.txt'))


def test_cli_embeddings_flag(workdir, clips, tmp_path):
  target = tmp_path / 'emb.parquet'
  proc = subprocess.run([sys.executable, '-m', 'crnn_jax.predict', f'--workdir={workdir[3]}',
                         f'--embeddings={target}', str(clips[0])], cwd=ROOT,
                        capture_output=True, text=True, timeout=180, check=False)
  assert proc.returncode == 0, proc.stderr
  assert 'files/s' in proc.stdout.splitlines()[-1]
  assert pq.read_table(target).column('windows').to_pylist() == [3]
