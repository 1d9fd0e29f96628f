"""The recipes the README names (configs/small_data.py, demo_multilabel.py,
metal_multilabel.py), loaded and trained for an epoch on tiny sets: a config that
no longer loads, names a field that is gone or sets a value the trainer refuses
fails here, and each shows what it is for."""

import importlib

from conftest import write_tiny

from crnn_jax.train import trainer as train


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
