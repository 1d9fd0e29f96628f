"""End of training: results.json, reports and pictures; multi-label mode;
class-imbalance options. Runs the real loop on the tiny data set."""

import collections
import json
import os
import struct

import ml_collections
import numpy as np
import pytest
from conftest import tiny_config, write_tiny
from pictures import assert_confusion_picture, assert_curves_picture, figure_titled, figures_kept
from PIL import Image
from scipy.special import softmax
from tensorboardX.proto import event_pb2

from crnn_jax.evaluate import report
from crnn_jax.train import lr_find
from crnn_jax.train import state as state_lib
from crnn_jax.train import trainer as train


def _run(config, workdir):
  results = train.train_and_evaluate(config, str(workdir))
  with open(os.path.join(workdir, 'results.json')) as f:
    assert json.load(f) == json.loads(json.dumps(results))
  return results


@pytest.fixture(scope='module')
def trained(tiny_data_dir, tmp_path_factory):
  """(workdir, results, the figures it saved) of a two-epoch run on the tiny set."""
  workdir = tmp_path_factory.mktemp('trained')
  with figures_kept() as figures:
    results = _run(tiny_config(tiny_data_dir), workdir)
  return workdir, results, figures


def test_single_label_reports(trained):
  tmp_path, results, _ = trained
  test = results['test']
  for key in ('top1', 'top5', 'loss', 'balanced_accuracy', 'macro', 'weighted', 'per_class',
              'confusion_matrix', 'most_confused'):
    assert key in test
  assert results['classes'] == ['low', 'high'] and results['num_params'] > 0
  assert np.asarray(test['confusion_matrix']).sum() == test['count'] == 16
  for name in ('confusion_matrix_test.png', 'training_curves.png'):
    with Image.open(tmp_path / name) as im:
      assert im.size[0] > 300
  csv = (tmp_path / 'confusion_matrix_test.csv').read_text().splitlines()
  assert csv[0].endswith('low,high') and len(csv) == 3
  text = (tmp_path / 'report_test.txt').read_text()
  assert 'precision' in text and 'test split (16 clips of 16 tracks)' in text
  # The top-1 with its Wilson interval, per clip and per track, in the report and results.json.
  low, high = test['top1_interval']
  assert low <= test['top1'] <= high and high - low > 0.2  # 16 clips: a wide interval
  assert test['track']['top1_interval'] == [low, high]
  assert f'top-1 {test["top1"]:.4f} (95% interval {low:.4f}-{high:.4f})' in text
  assert 'per track' not in text  # one window a track: the same figure, said once
  # Every clip's logits, label and track, to pool or average models later.
  saved = report.read_predictions(str(tmp_path), 'test')
  assert saved['logits'].shape == (16, 2) and sorted(saved['track_id']) == sorted(
      f'test{i}' for i in range(16))
  assert np.mean(saved['logits'].argmax(1) == saved['label']) == test['top1']


def test_pictures_show_the_results_and_the_history(trained):
  workdir, results, figures = trained
  cm = np.asarray(results['test']['confusion_matrix'])
  assert_confusion_picture(figure_titled(figures, 'test confusion matrix'), cm, ('low', 'high'))
  history = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert [row['step'] for row in history] == [4, 8]
  lr, _ = state_lib.schedules(tiny_config(''), 8)
  assert_curves_picture(figure_titled(figures, 'training'), history,
                        lr_schedule=[float(lr(step)) for step in range(8)], steps_per_epoch=4)


def tensorboard_scalars(folder) -> dict[str, list[tuple[int, float]]]:
  """tag -> [(step, value)] of every scalar in a folder's event files: TFRecord
  framing (length, its CRC, the record, its CRC), each record an Event message."""
  scalars = collections.defaultdict(list)
  for name in sorted(os.listdir(folder)):
    with open(os.path.join(folder, name), 'rb') as f:
      data = f.read()
    at = 0
    while at < len(data):
      (length,) = struct.unpack('<Q', data[at:at + 8])
      event = event_pb2.Event.FromString(data[at + 12:at + 12 + length])
      at += 12 + length + 4
      for value in event.summary.value:
        scalars[value.tag].append((event.step, value.simple_value))
  return dict(scalars)


def test_tensorboard_holds_the_rows_of_metrics_jsonl(trained):
  workdir, _, _ = trained
  rows = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  scalars = tensorboard_scalars(workdir / 'tensorboard')
  keys = set(rows[0]) - {'epoch', 'step'}
  assert set(scalars) == keys == {'train_loss', 'train_accuracy', 'val_loss', 'val_accuracy',
                                  'learning_rate', 'beta1'}
  for key in keys:  # event files hold float32
    assert [step for step, _ in scalars[key]] == [row['step'] for row in rows]
    np.testing.assert_allclose([v for _, v in scalars[key]], [row[key] for row in rows],
                               rtol=1e-6)


def test_multilabel_mode_reports_map(tiny_data_dir, tmp_path):
  config = tiny_config(tiny_data_dir)
  config.multilabel = True
  results = _run(config, tmp_path)
  for split in ('validation', 'test'):
    r = results[split]
    assert 0.0 <= r['map_macro'] <= 1.0 and 0.0 <= r['roc_auc_macro'] <= 1.0
    assert 'example_f1' in r and 'top5' in r
  # The test split is thresholded where validation was best.
  assert results['test']['threshold'] == results['validation']['threshold']


@pytest.mark.parametrize('option', [('class_weighting', 'inverse_frequency'),
                                    ('sampling', 'balanced')])
def test_imbalance_options_train(tiny_data_dir, tmp_path, option):
  config = tiny_config(tiny_data_dir)
  config.train.num_epochs = 1
  setattr(config.train, *option)
  results = _run(config, tmp_path)
  assert np.isfinite(results['test']['loss'])


def test_lr_range_test_plots_and_touches_no_checkpoint(tiny_data_dir, tmp_path):
  config = tiny_config(tiny_data_dir)
  config.train.batch_size = 8
  config.lr_find = ml_collections.ConfigDict({'num_it': 30, 'start_lr': 1e-6, 'end_lr': 10.0})
  result = lr_find.lr_range_test(config, str(tmp_path))
  assert 1e-6 <= result['suggested_max_lr'] <= 10.0
  assert len(result['lrs']) == len(result['smoothed_losses']) <= 30
  assert np.all(np.diff(result['lrs']) > 0)  # an exponential sweep
  assert (tmp_path / 'lr_find.png').stat().st_size > 10_000
  assert not (tmp_path / 'checkpoints').exists()


def test_track_level_metrics_average_window_probabilities():
  logits = np.log(np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4], [0.45, 0.55]]))
  pred = {'logits': logits, 'loss': np.zeros(5), 'label': np.array([0, 0, 1, 1, 1]),
          'label_set': np.eye(2)[[0, 0, 1, 1, 1]], 'track_id': np.array(['a', 'a', 'b', 'b', 'c'])}
  tracks = report.track_predictions(pred, multilabel=False)
  np.testing.assert_allclose(softmax(tracks['logits'], axis=-1),
                             [[0.55, 0.45], [0.45, 0.55], [0.45, 0.55]], rtol=1e-9)
  assert tracks['label'].tolist() == [0, 1, 1]
  np.testing.assert_allclose(tracks['loss'], -np.log([0.55, 0.55, 0.55]), rtol=1e-9)
  config = tiny_config('')
  info = ml_collections.ConfigDict({'class_names': ('x', 'y')})
  both = report.split_metrics(pred, info, config)
  assert both['count'] == 5 and both['top1'] == pytest.approx(0.6)  # clips: 3 of 5 right
  assert both['track']['count'] == 3 and both['track']['top1'] == pytest.approx(1.0)
  table = report.clip_and_track_table(both, config)
  assert table.splitlines()[2].split()[:3] == ['tracks', '3', '1.0000']


def test_top_k_is_the_configured_k_per_clip_and_per_track():
  """eval.top_k=2 of 4 classes: the share of clips whose class is among their 2 highest
  scores, under 'top2' (no 'top5'), per clip and per track."""
  rng = np.random.default_rng(4)
  logits, labels = rng.normal(size=(40, 4)), rng.integers(0, 4, 40)
  rank = (logits > logits[np.arange(40), labels][:, None]).sum(axis=1)  # 0: the top class
  pred = {'logits': logits, 'loss': np.zeros(40), 'label': labels, 'label_set': np.eye(4)[labels],
          'track_id': np.array([f't{i}' for i in range(40)])}
  config = tiny_config('')
  config.eval.top_k = 2
  info = ml_collections.ConfigDict({'class_names': ('a', 'b', 'c', 'd')})
  metrics = report.split_metrics(pred, info, config)
  for level in (metrics, metrics['track']):
    assert level['top2'] == pytest.approx((rank < 2).mean()) and 'top5' not in level
  assert metrics['top1'] == pytest.approx((rank == 0).mean())
  assert metrics['top1'] < metrics['top2'] < 1


def test_windows_of_a_track_are_scored_together(tmp_path):
  data_dir = write_tiny(str(tmp_path / 'tfds'), name='tiny_windows', windows=4)
  config = tiny_config(data_dir, 'tiny_windows')
  config.train.num_epochs = 1
  results = _run(config, tmp_path / 'w')
  assert results['test']['count'] == 16 and results['test']['track']['count'] == 4
  assert results['validation']['track']['count'] == 4
  report_text = (tmp_path / 'w' / 'report_test.txt').read_text()
  assert 'tracks        4' in report_text and 'clips        16' in report_text
  assert report.top1_summary(results['test']) in report_text  # both intervals
