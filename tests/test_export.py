"""python -m crnn_jax.export: ONNX and StableHLO files plus model.json.

Default suite (no jax2onnx needed): model.json alone lets a user rebuild the
spectrogram with librosa exactly, and the StableHLO file then gives the
log-probabilities prediction gives; an existing --out is refused; a workdir
without a checkpoint is one line. Slow (CI installs jax2onnx): onnxruntime
equals JAX within 1e-4 on real-shaped input (128 x 1,292) for the genre head,
the metal head with tabular inputs, and a mean-readout model at 15-s windows,
at batch sizes 1 and 8.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import librosa
import numpy as np
import pytest
from conftest import ROOT
from jax import export as jax_export
from tiny_models import CLIP, data_info, make_workdir, write_clip

from configs import default
from crnn_jax import export
from crnn_jax.core import audio, tabular
from crnn_jax.core.errors import UserError
from crnn_jax.inference.model import InferenceModel
from crnn_jax.inference.predictor import Predictor


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
  workdir = make_workdir(tmp_path_factory.mktemp('wd_export'))[3]
  out = tmp_path_factory.mktemp('exports') / 'tiny'
  export.export_main(workdir, str(out), formats=['stablehlo'], log=lambda _: None)
  return workdir, out


def _spectrogram_from_json(spec: dict, path) -> np.ndarray:
  """A user's reproduction from model.json alone: librosa + numpy, no crnn_jax."""
  y, _ = librosa.load(str(path), sr=spec['decode']['sample_rate'], mono=True,
                      res_type='soxr_hq')
  n = spec['window']['samples']
  window = np.pad(y[:n], (0, max(0, n - len(y))))
  power = librosa.feature.melspectrogram(y=window, **spec['melspectrogram'])
  log = np.log(power + spec['log']['epsilon']).astype(spec['log']['dtype'])
  scaled = ((log - log.min()) / (log.max() - log.min()) * 255).astype(np.uint8)
  if spec['image']['flip_frequency']:
    scaled = scaled[::-1]
  if spec['image']['invert']:
    scaled = 255 - scaled
  assert list(scaled.shape) == spec['image']['shape']
  return scaled


def test_json_alone_reproduces_the_spectrogram_and_the_scores(tiny, tmp_path):
  workdir, out = tiny
  contract = json.loads((out / 'model.json').read_text())
  assert sorted(os.listdir(out)) == ['README.md', 'model.jaxexport', 'model.json']
  assert contract['classes'] == ['electronic', 'metal', 'strings', 'swing']
  assert contract['spectrogram']['window']['seconds'] == CLIP
  assert contract['outputs'][1]['shape'] == ['batch', 192]
  clip = write_clip(tmp_path / 'clip.flac', 'swing', CLIP + 1.5, rate=44_100)
  image = _spectrogram_from_json(contract['spectrogram'], clip)
  expected = audio.spectrogram_image(audio.fixed_window(audio.load_audio(clip), CLIP), CLIP)
  np.testing.assert_array_equal(image, expected)
  # The StableHLO file on that input gives what prediction reports.
  exported = jax_export.deserialize(bytearray((out / 'model.jaxexport').read_bytes()))
  log_probs, embedding = exported.call(image[None].astype(np.float32) / 255)
  result, = Predictor.from_workdir(workdir).predict_files([clip], details=True)
  np.testing.assert_allclose(np.exp(log_probs[0]), list(result['probabilities'].values()),
                             rtol=0, atol=1e-6)
  np.testing.assert_allclose(embedding[0], result['details'].embeddings[0], rtol=0, atol=1e-5)


def test_stablehlo_any_batch_size(tiny):
  workdir, out = tiny
  model = InferenceModel.from_workdir(workdir, batch_size=8)
  exported = jax_export.deserialize(bytearray((out / 'model.jaxexport').read_bytes()))
  rng = np.random.default_rng(1)
  for batch in (1, 8):
    images = rng.integers(0, 256, (batch, 128, model.frames), dtype=np.uint8)
    logits, embeddings = model.forward(images)
    log_probs, got = exported.call(images.astype(np.float32) / 255)
    np.testing.assert_allclose(log_probs, jax.nn.log_softmax(logits), rtol=0, atol=1e-5)
    np.testing.assert_allclose(got, embeddings, rtol=0, atol=1e-5)


def test_existing_out_is_refused_unless_it_is_an_export_to_overwrite(tiny, tmp_path):
  workdir, out = tiny
  with pytest.raises(UserError, match='exists: choose a new folder, or pass --overwrite'):
    export.export_main(workdir, str(out), formats=['stablehlo'])
  other = tmp_path / 'mine'
  other.mkdir()
  (other / 'notes.txt').write_text('keep me')
  with pytest.raises(UserError, match='not an earlier export'):
    export.export_main(workdir, str(other), formats=['stablehlo'], overwrite=True)
  assert (other / 'notes.txt').read_text() == 'keep me'
  before = json.loads((out / 'model.json').read_text())['created']
  export.export_main(workdir, str(out), formats=['stablehlo'], overwrite=True,
                     log=lambda _: None)
  assert json.loads((out / 'model.json').read_text())['created'] >= before
  assert not [p for p in os.listdir(out.parent) if '.partial-' in p or '.old-' in p]


def test_workdir_without_checkpoint_and_bad_formats(tiny, tmp_path, monkeypatch):
  workdir, _ = tiny
  empty = tmp_path / 'no_checkpoint'
  empty.mkdir()
  for name in ('config.json', 'data_info.json'):
    (empty / name).write_bytes((Path(workdir) / name).read_bytes())
  with pytest.raises(UserError, match='no checkpoint in'):
    export.export_main(str(empty), str(tmp_path / 'out'), formats=['stablehlo'])
  assert sorted(os.listdir(empty)) == ['config.json', 'data_info.json']  # nothing created
  with pytest.raises(UserError, match='choose from onnx, stablehlo'):
    export.export_main(workdir, str(tmp_path / 'out'), formats=['tflite'])
  monkeypatch.setattr(export, 'jax2onnx', None)  # as without the optional package
  with pytest.raises(UserError, match='pip install --no-deps jax2onnx==0.17.1'):
    export.export_main(workdir, str(tmp_path / 'out'), formats=['onnx'])
  assert not (tmp_path / 'out').exists()


def test_cli_errors_are_one_line(tiny, tmp_path):
  proc = subprocess.run([sys.executable, '-m', 'crnn_jax.export', f'--workdir={tiny[0]}',
                         f'--out={tiny[1]}', '--formats=stablehlo'], cwd=ROOT,
                        capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 2
  assert proc.stderr.strip().startswith('error: --out ') and '\n' not in proc.stderr.strip()


def _loop_model(onnx):
  """y = x + 3 * w through a Loop whose body reads the outer initializer w,
  plus initializers no node reads: one outside, one in the body."""
  h, tp = onnx.helper, onnx.TensorProto
  const = lambda name, v: onnx.numpy_helper.from_array(np.asarray(v, np.float32), name)
  body = h.make_graph(
      [h.make_node('Add', ['acc_in', 'w'], ['acc_out']), h.make_node('Identity', ['cond'],
                                                                     ['cond_out'])],
      'body', [h.make_tensor_value_info('i', tp.INT64, []),
               h.make_tensor_value_info('cond', tp.BOOL, []),
               h.make_tensor_value_info('acc_in', tp.FLOAT, [2])],
      [h.make_tensor_value_info('cond_out', tp.BOOL, []),
       h.make_tensor_value_info('acc_out', tp.FLOAT, [2])],
      initializer=[const('unused_inner', [7.0, 7.0])])
  graph = h.make_graph(
      [h.make_node('Loop', ['trips', '', 'x'], ['y'], body=body)], 'outer',
      [h.make_tensor_value_info('x', tp.FLOAT, [2])], [h.make_tensor_value_info('y', tp.FLOAT, [2])],
      initializer=[const('w', [1.0, 2.0]), const('unused_outer', [5.0]),
                   onnx.numpy_helper.from_array(np.asarray(3, np.int64), 'trips')])
  return h.make_model(graph, opset_imports=[h.make_opsetid('', 17)])


def test_unused_onnx_initializers_are_dropped_and_outputs_unchanged(capfd):
  onnx = pytest.importorskip('onnx')
  ort = pytest.importorskip('onnxruntime')
  x = {'x': np.asarray([0.5, -1.0], np.float32)}

  def run(model):
    capfd.readouterr()
    out = ort.InferenceSession(model.SerializeToString(),
                               providers=['CPUExecutionProvider']).run(None, x)[0]
    return out, capfd.readouterr().err

  before, noisy = run(_loop_model(onnx))
  assert noisy.count('Removing initializer') == 2  # what onnxruntime says of them
  model = _loop_model(onnx)
  assert export.drop_unused_initializers(model.graph) == 2
  assert [i.name for i in model.graph.initializer] == ['w', 'trips']  # w: read in the body
  after, quiet = run(model)
  assert 'Removing initializer' not in quiet
  np.testing.assert_array_equal(after, before)
  np.testing.assert_array_equal(after, [3.5, 5.0])


# ---------------------------------------------------------------- ONNX (slow)

def _variant(kind: str):
  config = default.get_config()
  if kind == 'metal':
    names = list(tabular.REFERENCE_COLUMNS)
    return config, data_info(names, tabular.CATEGORICAL, mean=[0.0] * 3 + [0.5] * 13,
                             std=[1.0] * 3 + [0.3] * 13, clip=30.0)
  if kind == 'mean':
    config.model.readout = 'mean'
    return config, data_info(clip=15.0)
  return config, data_info(clip=30.0)


@pytest.mark.slow
@pytest.mark.parametrize('kind, frames, width', [
    ('genre', 1292, 1280), ('metal', 1292, 96), ('mean', 646, 64)])
def test_onnx_equals_jax(kind, frames, width, tmp_path, capfd):
  ort = pytest.importorskip('onnxruntime')
  if export.jax2onnx is None:
    pytest.skip('jax2onnx is not installed (.ci/run installs it: pip install --no-deps '
                'jax2onnx==0.17.1)')
  config, info = _variant(kind)
  workdir = make_workdir(tmp_path / 'wd', config, info, seed=7)[3]
  contract = export.export_main(workdir, str(tmp_path / 'out'), formats=['onnx'])
  assert contract['check']['max_abs_difference_from_jax']['onnx'] < 1e-4
  model = InferenceModel.from_workdir(workdir, batch_size=8)
  assert model.frames == frames and model.embedding_size == width
  session = ort.InferenceSession(str(tmp_path / 'out' / 'model.onnx'),
                                 providers=['CPUExecutionProvider'])
  assert 'Removing initializer' not in capfd.readouterr().err  # none left unused
  assert [i.name for i in session.get_inputs()] == (['spectrogram', 'tabular'] if
                                                    kind == 'metal' else ['spectrogram'])
  meta = session.get_modelmeta().custom_metadata_map
  assert json.loads(meta['crnn_jax'])['classes'] == info['class_names']
  rng = np.random.default_rng(2)
  for batch in (1, 8):
    images = rng.integers(0, 256, (batch, 128, frames), dtype=np.uint8)
    tab = rng.normal(size=(batch, 16)).astype(np.float32) if kind == 'metal' else None
    logits, embeddings = model.forward(images, tab)
    feed = {'spectrogram': images.astype(np.float32) / 255}
    if tab is not None:
      feed['tabular'] = tab
    log_probs, got = session.run(['log_probs', 'embedding'], feed)
    assert log_probs.shape == (batch, 4) and got.shape == (batch, width)
    np.testing.assert_allclose(log_probs, jax.nn.log_softmax(logits), rtol=0, atol=1e-4)
    np.testing.assert_allclose(got, embeddings, rtol=0, atol=1e-4)
