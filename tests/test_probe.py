"""The probe (config.recipe='probe'): logistic regression on a pretrained
model's embeddings, folded into its classifier layer and saved as an ordinary
workdir, which evaluation, predict and export then use as any other model.

The pretrained models are tiny_models' (freshly drawn, well-scaled weights):
their embeddings still tell the tiny set's bright low band from its bright
high band, which is all a probe needs.
"""

from __future__ import annotations

import json
from pathlib import Path

import ml_collections
import numpy as np
import pytest
from conftest import tiny_config
from jax import export as jax_export
from scipy.special import softmax
from tiny_models import data_info, make_workdir, write_clip

from configs import default
from crnn_jax import export
from crnn_jax.core import audio
from crnn_jax.core.errors import UserError
from crnn_jax.data import pipeline, source
from crnn_jax.inference.model import InferenceModel
from crnn_jax.inference.predictor import Predictor
from crnn_jax.recipes import probe
from crnn_jax.recipes import run as recipes

TINY_CLIP = 1.47  # the tiny set's clips (conftest.TINY_FRAMES frames)
TABULAR = {'tab_names': ('f0', 'f1', 'f2', 'f3'), 'categorical': {'f0': 2},
           'mean': (0.0,) * 4, 'std': (1.0,) * 4}


def _backbone(path, readout: str = 'flatten', clip: float = TINY_CLIP, tabular: bool = False):
  config = default.get_config()
  config.model.readout = readout
  info = data_info(clip=clip, **(TABULAR if tabular else {}))
  return make_workdir(path, config=config, info=info)[3]


def _probe_config(data_dir: str, backbone: str, name: str = 'tiny'):
  config = tiny_config(data_dir, name)
  config.init_from = backbone
  config.recipe = 'probe'
  return config


@pytest.fixture(scope='module')
def flatten_probe(tiny_data_dir, tmp_path_factory):
  backbone = _backbone(tmp_path_factory.mktemp('backbone'))
  config = _probe_config(tiny_data_dir, backbone)
  workdir = str(tmp_path_factory.mktemp('probe'))
  return config, workdir, recipes.train(config, workdir)


def _check_folded_exactly(config, workdir, results):
  """The saved workdir's probabilities equal scikit-learn's on the same
  embeddings (one window per track: the track mean is the window), and the
  probe learnt the task."""
  info = source.load_info(config)
  pre, backbone = probe.backbone(config, info)
  embedded = probe.embed_split(backbone, config, info, 'train')
  fitted = probe.fit(embedded, config)
  saved = InferenceModel.from_workdir(workdir)
  reader = pipeline.Reader(source.open_sources(config)['train'], info, config)
  batch = next(pipeline.eval_batches(reader, 64))
  logits, embeddings = saved.forward(batch['spectrogram'],
                                     batch['tabular'] if saved.num_tabular else None)
  np.testing.assert_allclose(embeddings, embedded.windows, atol=1e-5)  # the backbone, unchanged
  order = np.argsort(np.argsort(source.read_track_ids(config, 'train').astype(str)))
  expected = fitted.estimator.predict_proba(embedded.track_means())[order]
  np.testing.assert_allclose(softmax(logits.astype(np.float64), axis=-1), expected, atol=1e-5)
  record = json.loads((Path(workdir) / probe.PROBE_FILE).read_text())
  assert record['C'] == fitted.C and record['tracks'] == 64 and record['classes'] == ['low', 'high']
  assert record['inner_folds'] == 3 and record['C'] in config.probe.c_grid
  assert results['test']['top1'] >= 0.9 and results['classes'] == ['low', 'high']
  assert saved.config.recipe == 'probe' and saved.config.model.readout == pre.config.model.readout


def test_the_probe_folds_exactly_into_the_flatten_head(flatten_probe):
  _check_folded_exactly(*flatten_probe)


@pytest.mark.parametrize('readout,clip,tabular', [('mean', 5.0, False), ('flatten', TINY_CLIP, True)],
                         ids=['mean readout, other clip length', 'tabular branch'])
def test_the_probe_folds_exactly_into_other_heads(readout, clip, tabular, tiny_data_dir,
                                                  tiny_tabular_data_dir, tmp_path):
  backbone = _backbone(tmp_path / 'backbone', readout, clip, tabular)
  config = (_probe_config(tiny_tabular_data_dir, backbone, 'tiny_tab') if tabular
            else _probe_config(tiny_data_dir, backbone))
  results = recipes.train(config, str(tmp_path / 'probe'))
  _check_folded_exactly(config, str(tmp_path / 'probe'), results)


def test_the_saved_probe_through_predict_and_export(flatten_probe, tmp_path):
  config, workdir, _ = flatten_probe
  clip = write_clip(tmp_path / 'song.wav', 'metal', TINY_CLIP + 0.5)
  result, = Predictor.from_workdir(workdir).predict_files([clip], details=True)
  # The backbone's embedding of the same file, through scikit-learn's fitted probe.
  embedding = Predictor.from_workdir(config.init_from).predict_files(
      [clip], details=True)[0]['details'].embeddings
  info = source.load_info(config)
  fitted = probe.fit(probe.embed_split(probe.backbone(config, info)[1], config, info, 'train'),
                     config)
  probabilities = list(result['probabilities'].values())
  np.testing.assert_allclose(probabilities, fitted.estimator.predict_proba(embedding)[0], atol=1e-5)
  # The exported graph (backbone + the folded layer) gives the same.
  export.export_main(workdir, str(tmp_path / 'exported'), formats=['stablehlo'],
                     log=lambda _: None)
  exported = jax_export.deserialize(bytearray((tmp_path / 'exported' / 'model.jaxexport')
                                              .read_bytes()))
  image = audio.spectrogram_image(audio.fixed_window(audio.load_audio(clip), TINY_CLIP), TINY_CLIP)
  log_probs, _ = exported.call(image[None].astype(np.float32) / 255)
  np.testing.assert_allclose(np.exp(log_probs[0]), probabilities, atol=1e-6)


def test_where_a_probe_does_not_apply_one_line_says_why(tiny_data_dir, tiny_tabular_data_dir,
                                                          tmp_path, flatten_probe):
  five_seconds = _backbone(tmp_path / 'five', clip=5.0)
  with pytest.raises(UserError, match=r'flatten readout .* --clip_seconds=5.0'):
    recipes.train(_probe_config(tiny_data_dir, five_seconds), str(tmp_path / 'a'))
  audio_only = flatten_probe[0].init_from
  with pytest.raises(UserError, match=r"tabular columns none and the data set has \['f0'"):
    recipes.train(_probe_config(tiny_tabular_data_dir, audio_only, 'tiny_tab'), str(tmp_path / 'b'))
  multilabel = _probe_config(tiny_data_dir, audio_only)
  multilabel.multilabel = True
  with pytest.raises(UserError, match='single-label'):
    recipes.train(multilabel, str(tmp_path / 'c'))
  scratch = _probe_config(tiny_data_dir, '')
  with pytest.raises(UserError, match='set --config.init_from'):
    recipes.train(scratch, str(tmp_path / 'd'))
  unknown = _probe_config(tiny_data_dir, audio_only)
  unknown.recipe = 'lasso'
  with pytest.raises(UserError, match="config.recipe 'lasso'"):
    recipes.train(unknown, str(tmp_path / 'e'))
  # A probe and a trained model never share a workdir.
  finetune = ml_collections.ConfigDict(flatten_probe[0].to_dict())
  finetune.recipe = 'finetune'
  with pytest.raises(UserError, match='holds a probe'):
    recipes.train(finetune, flatten_probe[1])
  with pytest.raises(UserError, match='holds a trained model'):
    recipes.train(_probe_config(tiny_data_dir, audio_only), audio_only)


def test_inner_folds_hold_every_class_so_c_is_chosen_on_defined_scores():
  """A class with only two groups (artists) among the training tracks: the
  inner cross-validation uses two folds, each holding each class, so every
  C's log-loss is defined and the chosen C is the best, not the grid's first
  (which a NaN for every C would leave)."""
  rng = np.random.default_rng(0)
  groups = [f'a{g}' for g in range(6) for _ in range(3)] + [f'b{g}' for g in range(6)
                                                           for _ in range(3)]
  groups += ['c0'] * 5 + ['c1']
  labels = np.array([0] * 18 + [1] * 18 + [2] * 6)
  means = np.eye(3, 8) * 6.0
  windows = (means[labels] + rng.normal(size=(len(labels), 8))).astype(np.float32)
  embedded = probe.Embedded(windows, np.arange(len(labels)), labels, np.asarray(groups),
                            np.asarray([f't{i}' for i in range(len(labels))]))
  config = tiny_config('')
  fitted = probe.fit(embedded, config)
  assert fitted.inner_folds == 2 and np.isfinite(fitted.inner_top1)
  assert fitted.inner_top1 >= 0.9 and fitted.C > config.probe.c_grid[0]
  splits = probe.inner_splits(labels, np.asarray(groups), 3, seed=0)
  assert len(splits) == 2 and all(set(labels[test]) == {0, 1, 2} for _, test in splits)
  assert probe.inner_splits(labels[:36], np.asarray(groups[:36]), 3, seed=0)[2][1].size
