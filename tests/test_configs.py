"""The recipes the README names (configs/small_data.py, demo_multilabel.py,
metal_multilabel.py), loaded and trained for an epoch on tiny sets: a config that
no longer loads, names a field that is gone or sets a value the trainer refuses
fails here, and each shows what it is for."""

import importlib

import jax
import numpy as np
from conftest import write_tiny

from crnn_jax.data import pipeline, source
from crnn_jax.train import state as state_lib
from crnn_jax.train import steps
from crnn_jax.train import trainer as train
from crnn_jax.workdir import checkpoints


def _recipe_on_tiny(name: str, data_dir: str, data_set: str):
  """configs/NAME.py on a tiny set (its own class names), for one epoch."""
  config = importlib.import_module(f'configs.{name}').get_config()
  config.data.name, config.data.data_dir, config.data.class_names = data_set, data_dir, ()
  config.data.demo = False
  config.train.num_epochs = 1
  return config


def test_small_data_recipe_trains_and_evaluates_its_best_epoch(tiny_data_dir, tmp_path):
  config = _recipe_on_tiny('small_data', tiny_data_dir, 'tiny')
  results = train.train_and_evaluate(config, str(tmp_path))
  assert results['model_variant'] == 'small_data'
  assert results['checkpoint']['checkpoint'] == 'best' and results['checkpoint']['epoch'] == 1
  assert (tmp_path / 'checkpoints_best').is_dir()
  # eval.recompute_bn over 4 batches of 16: the whole train split of 64 clips. The first
  # batch norm's running mean is then the split's mean of conv1's output (the mean of the
  # batches' means), whatever the grouping; the checkpoint keeps it.
  saved = checkpoints.restore_variables(str(tmp_path))
  info = source.load_info(config)
  reader = pipeline.Reader(source.open_sources(config)['train'], info, config)
  split = next(pipeline.train_batches(reader, np.arange(64), 64))
  config.model.bn_momentum = 0.0  # the statistics of this one batch
  model = state_lib.create_model(config, info)
  _, stats = jax.jit(lambda v, s: model.apply(v, s, train=True, mutable=['batch_stats']))(
      saved, steps.model_inputs(split)[0])
  np.testing.assert_allclose(saved['batch_stats']['conv1']['bn']['mean'],
                             stats['batch_stats']['conv1']['bn']['mean'], rtol=1e-4, atol=1e-6)


def test_demo_multilabel_recipe_trains_and_reports_map(tiny_data_dir, tmp_path):
  config = _recipe_on_tiny('demo_multilabel', tiny_data_dir, 'tiny')
  results = train.train_and_evaluate(config, str(tmp_path))
  assert results['multilabel'] and results['step'] == 8  # the demo's batch of 8
  assert 0 <= results['test']['map_macro'] <= 1 and 'example_f1' in results['test']


def test_metal_multilabel_recipe_applies_its_label_hierarchy(tmp_path):
  """Melodic death metal is death metal too: every clip is a 'death metal' target."""
  data_dir = write_tiny(str(tmp_path / 'tfds'), name='tiny_metal', num_tabular=4,
                        class_names=('death metal', 'melodic death metal'))
  config = _recipe_on_tiny('metal_multilabel', data_dir, 'tiny_metal')
  results = train.train_and_evaluate(config, str(tmp_path / 'w'))
  test = results['test']
  assert results['multilabel'] and test['count'] == 16
  assert test['per_class']['death metal']['support'] == 16
  assert test['per_class']['melodic death metal']['support'] == 8
