"""A model that is the average of several networks (config.recipe='average'):
its workdir holds average.json and its members' workdirs, and predict, the
exported graph and evaluation all score the mean of the members' probabilities.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_config
from jax import export as jax_export
from scipy.special import softmax
from tiny_models import data_info, make_workdir, write_clip

from configs import default
from crnn_jax import export, predict
from crnn_jax.core import audio
from crnn_jax.core.errors import UserError
from crnn_jax.data import pipeline, source
from crnn_jax.evaluate import report
from crnn_jax.inference.model import InferenceModel
from crnn_jax.inference.predictor import Predictor
from crnn_jax.recipes import recipe as recipe_lib
from crnn_jax.recipes import run as recipes
from crnn_jax.train import finetune
from crnn_jax.workdir import checkpoints, files

TINY_CLIP = 1.47  # the tiny set's clips


def _average_of_two(root: Path, second_readout: str = 'flatten') -> tuple[str, list[str]]:
  """An average's workdir over two tiny models with different weights (the
  second may have another readout: members need not share a network)."""
  second = default.get_config()
  second.model.readout = second_readout
  members = [make_workdir(root / 'members' / 'a', seed=1)[3],
             make_workdir(root / 'members' / 'b', config=second, seed=2)[3]]
  files.write_average(str(root), members)
  files.save_data_info(str(root), data_info())
  files.save_config(str(root), default.get_config())
  return str(root), members


def test_predict_scores_the_mean_of_the_members_probabilities(tmp_path):
  workdir, members = _average_of_two(tmp_path / 'w', second_readout='mean')
  song = str(write_clip(tmp_path / 'song.wav', 'metal', 11.0))  # two 5-s windows
  result, = Predictor.from_workdir(workdir).predict_files([song], details=True)
  alone = [Predictor.from_workdir(m).predict_files([song], details=True)[0] for m in members]
  assert result['windows'] == 2
  expected = np.mean([list(r['probabilities'].values()) for r in alone], axis=0)
  np.testing.assert_allclose(list(result['probabilities'].values()), expected, atol=1e-6)
  np.testing.assert_allclose(result['details'].embeddings, np.concatenate(
      [r['details'].embeddings for r in alone], axis=-1))
  model = InferenceModel.from_workdir(workdir)
  assert model.describe()['average_of'] == 2 and model.embedding_size == sum(
      m.embedding_size for m in map(InferenceModel.from_workdir, members))
  # The classifier layers on the embedding give the same probabilities.
  np.testing.assert_allclose(softmax(model.classify(result['details'].embeddings), axis=-1),
                             result['details'].probabilities, atol=1e-6)
  assert predict._text_header(model.describe(), model).endswith('; the average of 2 networks')
  # The command line says what it is and scores the same.
  out = subprocess.run([sys.executable, '-m', 'crnn_jax.predict', f'--workdir={workdir}',
                        '--format=json', song], capture_output=True, text=True, check=True)
  scored = json.loads(out.stdout)
  assert scored['average_of'] == 2
  np.testing.assert_allclose(list(scored['results'][0]['probabilities'].values()), expected,
                             atol=1e-5)


def test_the_exported_graph_holds_every_member(tmp_path):
  workdir, members = _average_of_two(tmp_path / 'w')
  export.export_main(workdir, str(tmp_path / 'out'), formats=['stablehlo'], log=lambda _: None)
  contract = json.loads((tmp_path / 'out' / 'model.json').read_text())
  assert contract['model']['networks'] == 2 and 'mean' in contract['model']['combined_by']
  exported = jax_export.deserialize(bytearray((tmp_path / 'out' / 'model.jaxexport').read_bytes()))
  frames = InferenceModel.from_workdir(workdir).frames
  images = np.random.default_rng(0).integers(0, 256, (3, audio.N_MELS, frames), np.uint8)
  log_probs, embedding = exported.call(images.astype(np.float32) / 255)
  alone = [softmax(InferenceModel.from_workdir(m).logits(images).astype(np.float64), axis=-1)
           for m in members]
  np.testing.assert_allclose(np.exp(log_probs), np.mean(alone, axis=0), atol=1e-6)
  assert embedding.shape == (3, contract['outputs'][1]['shape'][1])


@pytest.mark.slow
def test_the_average_exports_to_onnx(tmp_path):
  pytest.importorskip('jax2onnx')
  onnxruntime = pytest.importorskip('onnxruntime')
  workdir, members = _average_of_two(tmp_path / 'w')
  export.export_main(workdir, str(tmp_path / 'out'), formats=['onnx'], log=lambda _: None)
  session = onnxruntime.InferenceSession(str(tmp_path / 'out' / 'model.onnx'))
  frames = InferenceModel.from_workdir(workdir).frames
  images = np.random.default_rng(0).integers(0, 256, (2, audio.N_MELS, frames), np.uint8)
  log_probs, _ = session.run(None, {'spectrogram': images.astype(np.float32) / 255})
  alone = [softmax(InferenceModel.from_workdir(m).logits(images).astype(np.float64), axis=-1)
           for m in members]
  np.testing.assert_allclose(np.exp(log_probs), np.mean(alone, axis=0), atol=1e-5)


def test_an_average_is_refused_where_one_network_is_needed(tmp_path):
  workdir, members = _average_of_two(tmp_path / 'w')
  with pytest.raises(UserError, match=r"holds an average of models, and a fine-tune starts from "
                                      r'one: name one of its members \(.*members/a'):
    finetune.load(workdir)
  with pytest.raises(UserError, match=r'holds an average of models \(average.json\), no '
                                      r'checkpoint of its own'):
    checkpoints.load_for_use(workdir)
  with pytest.raises(UserError, match='holds an average of models'):
    recipe_lib.check_workdir(workdir, 'finetune')
  # Members must score the same classes from the same inputs.
  other = make_workdir(tmp_path / 'w' / 'members' / 'c', info=data_info(clip=3.0), seed=3)[3]
  files.write_average(workdir, [members[0], other])
  with pytest.raises(UserError, match=r"differ in frames: .*members/a', .*members/c'"):
    InferenceModel.from_workdir(workdir)


def test_eval_of_an_average_scores_the_mean_of_its_members_on_the_named_data(tiny_data_dir,
                                                                            tmp_path):
  """--mode=eval of an average's workdir: each member evaluated with its own
  config (its network; its batch-norm statistics kept where the command's
  config would recompute them, as for a probe) on the command's data set, and
  the average's results are the mean of their probabilities."""
  trained_with = tiny_config(tiny_data_dir)
  info = source.load_info(trained_with).to_json()
  second = tiny_config(tiny_data_dir)
  second.model.readout = 'mean'
  members = [make_workdir(tmp_path / 'w' / 'members' / n, config=c, info=info, seed=seed)[3]
             for n, c, seed in (('a', trained_with, 1), ('b', second, 2))]
  workdir = str(tmp_path / 'w')
  files.write_average(workdir, members)
  files.save_data_info(workdir, info)
  files.save_config(workdir, trained_with)
  config = tiny_config(tiny_data_dir)
  config.eval.recompute_bn = True
  results = recipes.evaluate(config, workdir)
  reader = pipeline.Reader(source.open_sources(config)['test'], source.load_info(config), config)
  batch = next(pipeline.eval_batches(reader, 64))
  keep = batch['mask'] > 0
  probabilities = np.mean([softmax(InferenceModel.from_workdir(m).logits(
      batch['spectrogram'][keep]).astype(np.float64), axis=-1) for m in members], axis=0)
  labels = batch['label'][keep]
  assert results['test']['top1'] == pytest.approx(np.mean(probabilities.argmax(1) == labels))
  assert results['test']['loss'] == pytest.approx(
      -np.mean(np.log(probabilities[np.arange(len(labels)), labels])), abs=1e-4)
  for member in members:  # each member's own figures on the same data
    assert json.loads((Path(member) / 'results.json').read_text())['test']['count'] == len(labels)


def test_averaged_predictions_are_the_mean_probabilities():
  logits = [np.log(np.array([[.8, .2], [.3, .7]])), np.log(np.array([[.4, .6], [.5, .5]]))]
  parts = [{'logits': x, 'label': np.array([0, 1]), 'track_id': np.array(['a', 'b'])}
           for x in logits]
  averaged = report.average_predictions(parts)
  np.testing.assert_allclose(np.exp(averaged['logits']), [[.6, .4], [.4, .6]])
  np.testing.assert_allclose(averaged['loss'], -np.log([.6, .6]))
  with pytest.raises(ValueError, match='different clips'):
    report.average_predictions([parts[0], {**parts[1], 'track_id': np.array(['a', 'c'])}])


@pytest.mark.slow
def test_the_average_recipe_trains_both_members_and_evaluates_what_predict_scores(
    tiny_data_dir, tmp_path):
  """config.recipe='average' on the tiny set from a tiny pretrained model: the
  probe and a two-epoch fine-tune in WORKDIR/members, and results.json from
  their averaged predictions, which the workdir's model reproduces."""
  config = tiny_config(tiny_data_dir)
  config.init_from = make_workdir(tmp_path / 'backbone', info=data_info(clip=TINY_CLIP))[3]
  config.recipe = 'average'
  workdir = tmp_path / 'w'
  results = recipes.train(config, str(workdir))
  assert files.average_members(str(workdir)) == [str(workdir / 'members' / n)
                                                 for n in ('probe', 'finetune')]
  assert (workdir / 'members' / 'probe' / 'probe.json').exists()
  assert set(results['checkpoint']['members']) == {'members/probe', 'members/finetune'}
  info = source.load_info(config)
  reader = pipeline.Reader(source.open_sources(config)['test'], info, config)
  batch = next(pipeline.eval_batches(reader, 64))
  keep = batch['mask'] > 0
  logits = InferenceModel.from_workdir(str(workdir)).logits(batch['spectrogram'][keep])
  saved = report.read_predictions(str(workdir), 'test')
  np.testing.assert_allclose(softmax(logits.astype(np.float64), axis=-1),
                             softmax(saved['logits'].astype(np.float64), axis=-1), atol=1e-5)
  right = np.mean(logits.argmax(axis=1) == saved['label'])
  assert results['test']['top1'] == pytest.approx(right)
  # A rerun reuses the finished fine-tune.
  log = workdir / 'members' / 'finetune' / 'checkpoints'
  before = sorted(p.name for p in log.iterdir())
  again = recipes.train(config, str(workdir))
  assert again['test']['top1'] == results['test']['top1']
  assert sorted(p.name for p in log.iterdir()) == before
