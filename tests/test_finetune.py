"""Fine-tuning from a workdir (config.init_from), what trains, the best
checkpoint and early stopping, and their one-line errors."""

import functools
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, tiny_config, write_tiny

from crnn_jax.core.errors import UserError
from crnn_jax.data import pipeline, source
from crnn_jax.evaluate import report
from crnn_jax.inference.model import InferenceModel
from crnn_jax.model.crnn import CRNN
from crnn_jax.train import finetune, setup, steps
from crnn_jax.train import state as state_lib
from crnn_jax.train import trainer as train
from crnn_jax.workdir import checkpoints


@pytest.fixture(scope='module')
def pretrained(tiny_data_dir, tmp_path_factory):
  """A workdir trained for two epochs on the tiny set (classes low, high), its
  batch-norm statistics recomputed (8 steps are too few for them to settle)."""
  workdir = str(tmp_path_factory.mktemp('pretrained'))
  config = tiny_config(tiny_data_dir)
  config.eval.recompute_bn = True
  train.train_and_evaluate(config, workdir)
  return workdir


@pytest.fixture(scope='module')
def mid_low_dir(tmp_path_factory):
  """The tiny task with classes ('mid', 'low'): 'low' is shared with the
  pretrained model (at another index), 'mid' is new."""
  return write_tiny(str(tmp_path_factory.mktemp('tfds_mid')), name='tiny_mid',
                    class_names=('mid', 'low'))


def _config(data_dir, name, workdir, **finetune):
  config = tiny_config(data_dir, name)
  config.init_from = workdir
  config.train.num_epochs = 1
  for k, v in finetune.items():
    config.finetune[k] = v
  return config


def test_loads_body_and_statistics_keeps_shared_head_rows(pretrained, mid_low_dir):
  config = _config(mid_low_dir, 'tiny_mid', pretrained)
  info = source.load_info(config)
  fresh = state_lib.create_train_state(config, info, jax.random.key(7),
                                       state_lib.make_optimizer(config, 4))
  fresh_vars = jax.device_get({'params': fresh.params, 'batch_stats': fresh.batch_stats})
  loaded = finetune.load(pretrained)
  variables, notes = finetune.initial_variables(config, info, fresh_vars, loaded)
  pre = loaded.variables
  for layer in ('conv1', 'conv5', 'gru_l0', 'gru_l1'):
    jax.tree_util.tree_map(np.testing.assert_array_equal, variables['params'][layer],
                           pre['params'][layer])
  jax.tree_util.tree_map(np.testing.assert_array_equal, variables['batch_stats'],
                         pre['batch_stats'])
  kernel, bias = variables['params']['linear']['kernel'], variables['params']['linear']['bias']
  # 'low' is class 0 of the pretrained model and class 1 here; 'mid' starts fresh.
  np.testing.assert_array_equal(kernel[:, 1], pre['params']['linear']['kernel'][:, 0])
  assert bias[1] == pre['params']['linear']['bias'][0]
  np.testing.assert_array_equal(kernel[:, 0], fresh_vars['params']['linear']['kernel'][:, 0])
  assert any('kept for low; initialised fresh for mid' in n for n in notes), notes


def test_class_map_starts_a_renamed_class_from_its_pretrained_row(pretrained, mid_low_dir):
  """finetune.class_map 'mid=high': the new class 'mid' starts from the pretrained
  'high' row, 'low' from 'low' (same name, at another index); a bad pair is one line."""
  config = _config(mid_low_dir, 'tiny_mid', pretrained, class_map='mid=high')
  info = source.load_info(config)
  fresh = state_lib.create_train_state(config, info, jax.random.key(7),
                                       state_lib.make_optimizer(config, 4))
  fresh_vars = jax.device_get({'params': fresh.params, 'batch_stats': fresh.batch_stats})
  loaded = finetune.load(pretrained)
  variables, notes = finetune.initial_variables(config, info, fresh_vars, loaded)
  head, pre_head = variables['params']['linear'], loaded.variables['params']['linear']
  for new, old in ((0, 1), (1, 0)):  # mid <- high, low <- low
    np.testing.assert_array_equal(head['kernel'][:, new], pre_head['kernel'][:, old])
    assert head['bias'][new] == pre_head['bias'][old]
  assert 'head linear: kept for mid (from high), low' in notes
  config.finetune.class_map = 'mid=treble'
  with pytest.raises(UserError, match="class_map 'mid=treble'.*PRETRAINED one of"):
    finetune.initial_variables(config, info, fresh_vars, loaded)


def test_a_mean_readout_starts_from_the_flatten_head():
  """The converted kernel applied to the mean of the GRU outputs equals the
  flatten head with each step's weights replaced by their average (the time-major
  order of the flatten readout), so a sequence constant in time keeps its logits."""
  model = functools.partial(CRNN, num_classes=3, conv_features=(8,) * 5, gru_features=8,
                            pool_windows=((2, 2), (2, 2), (2, 2), (4, 2), (4, 4)))
  spectrogram = jax.random.uniform(jax.random.key(0), (2, 128, 256))  # 4 GRU steps
  flatten = model(readout='flatten').init(jax.random.key(1), spectrogram)
  pre_kernel = np.asarray(flatten['params']['linear']['kernel'])
  kernel = finetune.as_mean_readout({('linear', 'kernel'): pre_kernel},
                                    {('linear', 'kernel'): np.zeros((8, 3))})[('linear', 'kernel')]
  assert kernel.shape == (8, 3)
  np.testing.assert_allclose(kernel, pre_kernel.reshape(4, 8, 3).sum(axis=0))
  params = {**flatten['params'], 'linear': {**flatten['params']['linear'], 'kernel': kernel}}
  _, seq_flat = model(readout='flatten').apply(flatten, spectrogram, return_embedding=True)
  _, seq_mean = model(readout='mean').apply({**flatten, 'params': params}, spectrogram,
                                            return_embedding=True)
  np.testing.assert_allclose(seq_mean @ kernel, seq_flat @ np.tile(kernel / 4, (4, 1)),
                             rtol=1e-5, atol=1e-6)
  step = np.random.default_rng(0).normal(size=8)
  np.testing.assert_allclose(step @ kernel, np.tile(step, 4) @ pre_kernel, rtol=1e-5, atol=1e-6)


def test_linear_probe_leaves_the_body_and_its_statistics_as_loaded(pretrained, mid_low_dir,
                                                                   tmp_path):
  workdir = str(tmp_path / 'probe')
  config = _config(mid_low_dir, 'tiny_mid', pretrained, trainable='head')
  config.train.num_epochs = 2
  results = train.train_and_evaluate(config, workdir)
  assert results['test']['top1'] >= 0.9  # the frozen features already separate the classes
  pre = checkpoints.restore_variables(pretrained)
  tuned = checkpoints.restore_variables(workdir)
  body, head = finetune.split(tuned['params'])
  pre_body, pre_head = finetune.split(pre['params'])
  for path in body:
    np.testing.assert_array_equal(body[path], pre_body[path], err_msg=str(path))
  jax.tree_util.tree_map(np.testing.assert_array_equal, tuned['batch_stats'], pre['batch_stats'])
  assert not np.array_equal(head[('linear', 'kernel')], pre_head[('linear', 'kernel')])
  # The fine-tuned workdir is an ordinary one: prediction loads it.
  model = InferenceModel.from_workdir(workdir)
  assert model.class_names == ('mid', 'low')


def test_body_lr_scale_and_frozen_body_in_the_optimiser(tiny_data_dir, pretrained):
  config = tiny_config(tiny_data_dir)
  info = source.load_info(config)
  state = state_lib.create_train_state(config, info, jax.random.key(0),
                                       state_lib.make_optimizer(config, 10))
  grads = jax.tree_util.tree_map(jnp.ones_like, state.params)

  def update(scale, trainable='all'):
    c = tiny_config(tiny_data_dir)
    c.init_from = pretrained
    c.finetune.body_lr_scale = scale
    c.finetune.trainable = trainable
    tx = state_lib.make_optimizer(c, 10)
    updates, _ = tx.update(grads, tx.init(state.params), state.params)
    return finetune.split(updates)

  (body1, head1), (body01, head01) = update(1.0), update(0.1)
  for path in body1:
    np.testing.assert_allclose(body01[path], 0.1 * body1[path], rtol=1e-5, err_msg=str(path))
  for path in head1:
    np.testing.assert_array_equal(head01[path], head1[path])
  frozen_body, frozen_head = update(1.0, 'head')
  assert all(not np.any(v) for v in frozen_body.values())
  for path in head1:
    np.testing.assert_array_equal(frozen_head[path], head1[path])


def test_frozen_batch_norm_trains_every_weight_and_keeps_the_loaded_statistics(
    tiny_data_dir, pretrained, tmp_path):
  """One update of a fine-tune from ``pretrained``: with batch_norm='frozen' every
  weight moves and the statistics stay as loaded; with 'update' they move."""
  def one_step(batch_norm):
    config = _config(tiny_data_dir, 'tiny', pretrained, batch_norm=batch_norm)
    run = setup.build_run(config, str(tmp_path / batch_norm))
    state, _ = run.from_pretrained(run.fresh_state(state_lib.make_optimizer(config, 4)))
    batch = next(iter(pipeline.eval_batches(run.reader('train'), 8)))
    options = steps.TrainOptions.from_config(config)
    new, _ = steps.train_step(state, batch, jnp.ones(2), False, options)
    return options, jax.device_get(state), jax.device_get(new)

  options, before, after = one_step('frozen')
  assert options.frozen_batch_norm and not options.frozen_body
  jax.tree_util.tree_map(np.testing.assert_array_equal, after.batch_stats, before.batch_stats)
  moved = jax.tree_util.tree_map(lambda a, b: bool(np.any(a != b)), after.params, before.params)
  assert all(jax.tree_util.tree_leaves(moved)), moved
  _, before, after = one_step('update')
  assert not np.array_equal(after.batch_stats['conv1']['bn']['mean'],
                            before.batch_stats['conv1']['bn']['mean'])


def _scripted_validation(monkeypatch, accuracies):
  """Per-epoch validation reports with the given accuracies (later calls, the
  final evaluation, are real)."""
  real = report.split_metrics
  script = list(accuracies)

  def scripted(*args, **kwargs):
    out = real(*args, **kwargs)
    if script:
      out = dict(out, top1=script.pop(0))
    return out

  monkeypatch.setattr(train.report, 'split_metrics', scripted)


def test_best_checkpoint_is_kept_used_and_early_stopping_stops(tiny_data_dir, tmp_path,
                                                               monkeypatch):
  config = tiny_config(tiny_data_dir)
  config.train.num_epochs = 5
  config.train.best_metric = 'val_accuracy'
  config.train.early_stopping_patience = 2
  _scripted_validation(monkeypatch, [0.5, 0.9, 0.7, 0.8])
  workdir = str(tmp_path / 'w')
  results = train.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  assert [r['epoch'] for r in rows] == [1, 2, 3, 4]  # no new best in epochs 3 and 4
  assert results['checkpoint']['checkpoint'] == 'best'
  assert results['checkpoint']['epoch'] == 2 and results['step'] == 8
  best = checkpoints.restore_variables(workdir)
  latest = checkpoints.restore_variables(workdir, 'latest')
  assert not np.array_equal(best['params']['linear']['kernel'],
                            latest['params']['linear']['kernel'])
  np.testing.assert_array_equal(InferenceModel.from_workdir(workdir).variables['params']['linear']
                                ['kernel'], best['params']['linear']['kernel'])
  np.testing.assert_array_equal(
      InferenceModel.from_workdir(workdir, checkpoint='latest').variables['params']['linear']
      ['kernel'], latest['params']['linear']['kernel'])
  # A rerun finds the run finished: no more epochs.
  monkeypatch.undo()
  assert train.train_and_evaluate(config, workdir)['checkpoint']['epoch'] == 2
  config.eval.checkpoint = 'latest'
  assert train.evaluate_only(config, workdir)['step'] == 16


def test_short_schedule_warns_with_the_fix(tiny_data_dir):
  config = tiny_config(tiny_data_dir)
  config.train.num_epochs = 2
  plan = setup.plan_steps(config, source.load_info(config))
  warning = setup.short_schedule_warning(config, plan, 64)
  assert 'makes 8 optimiser steps' in warning and '~44' in warning
  assert '--config.train.num_epochs=11' in warning and 'recompute_bn=True' in warning
  config.train.num_epochs = 11
  assert setup.short_schedule_warning(config, setup.plan_steps(
      config, source.load_info(config)), 64) is None
  # The case: 171 clips, batch 64, 10 epochs -> 20 steps; batch 16 gives 100.
  plan = setup.StepPlan(global_batch=64, accum=1, steps_per_epoch=2, num_epochs=10)
  warning = setup.short_schedule_warning(config, plan, 171)
  assert '--config.train.batch_size=32 (50 steps)' in warning
  config.eval.recompute_bn = True
  assert setup.short_schedule_warning(config, plan, 171) is None


def test_bad_inputs_are_one_line_errors_with_the_fix(pretrained, tiny_data_dir, tmp_path):
  cases = []
  cases.append((_config(tiny_data_dir, 'tiny', str(tmp_path / 'missing')), 'does not exist'))
  no_checkpoint = tmp_path / 'no_checkpoint'
  no_checkpoint.mkdir()
  for name in ('config.json', 'data_info.json'):
    shutil.copy(os.path.join(pretrained, name), no_checkpoint / name)
  cases.append((_config(tiny_data_dir, 'tiny', str(no_checkpoint)), 'no checkpoint in'))
  other = _config(tiny_data_dir, 'tiny', pretrained)
  other.model.pool_windows = ((2, 2), (2, 2), (2, 2), (2, 2), (8, 4))
  cases.append((other, (r'model.pool_windows=.*other spectrogram height.*set '
                        r'--config.model.pool_windows')))
  readout = _config(tiny_data_dir, 'tiny', pretrained)
  readout.model.readout = 'last'
  cases.append((readout, "head reads 64 features .*'flatten'.*--config.model.readout=flatten"))
  probe = tiny_config(tiny_data_dir)
  probe.finetune.trainable = 'head'
  cases.append((probe, 'set --config.init_from'))
  frozen = tiny_config(tiny_data_dir)
  frozen.finetune.batch_norm = 'frozen'
  cases.append((frozen, "batch_norm='frozen' is for fine-tuning.*set --config.init_from"))
  recompute = _config(tiny_data_dir, 'tiny', pretrained, batch_norm='frozen')
  recompute.eval.recompute_bn = True
  cases.append((recompute, "recompute_bn would change the frozen .*batch_norm='frozen'"))
  unknown = _config(tiny_data_dir, 'tiny', pretrained, batch_norm='fixed')
  cases.append((unknown, "finetune.batch_norm 'fixed': use 'update' or 'frozen'"))
  mixup = tiny_config(tiny_data_dir)
  mixup.multilabel = True
  mixup.augment.mixup_alpha = 0.2
  cases.append((mixup, 'single-label.*mixup_alpha=0'))
  for i, (config, message) in enumerate(cases):
    with pytest.raises(UserError, match=message) as e:
      train.train_and_evaluate(config, str(tmp_path / f'w{i}'))
    assert '\n' not in str(e.value)


def test_a_set_without_training_windows_is_refused(tmp_path):
  write_tiny(str(tmp_path), name='tiny_few', sizes=(3, 8, 8))
  with pytest.raises(UserError, match='train split has 3 examples, fewer than one batch of 16.*'
                                      '--windows=all'):
    train.train_and_evaluate(tiny_config(str(tmp_path), 'tiny_few'), str(tmp_path / 'w'))
  # TFDS writes no empty split: a set without training examples has no train split.
  shutil.rmtree(tmp_path / 'tiny_few' / '1.0.0')
  write_tiny(str(tmp_path), name='tiny_few', sizes=(3, 8, 8), splits=('validation', 'test'))
  with pytest.raises(UserError, match="no train examples; rebuild .*--windows=all"):
    source.load_info(tiny_config(str(tmp_path), 'tiny_few'))


def test_main_prints_a_missing_init_from_in_one_line(tmp_path, tiny_data_dir):
  out = subprocess.run(
      [sys.executable, 'main.py', '--config=configs/finetune.py', f'--workdir={tmp_path}/w',
       '--config.data.name=tiny', f'--config.data.data_dir={tiny_data_dir}',
       f'--config.init_from={tmp_path}/nothing'],
      cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
  assert out.returncode == 2, out.stderr
  assert out.stderr.strip().startswith('error: config.init_from')
  assert len(out.stderr.strip().splitlines()) == 1
