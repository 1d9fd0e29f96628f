"""Damaged checkpoints: found, reported (step, file, what failed), moved aside,
and the newest intact one used, on every restore path (resume, --mode=eval,
prediction); a checkpoint of another model is told apart by its shapes."""

from __future__ import annotations

import glob
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

from crnn_jax.core.errors import UserError
from crnn_jax.core.file_lock import FileLock
from crnn_jax.data import source
from crnn_jax.train import state as state_lib
from crnn_jax.train import trainer
from crnn_jax.workdir import checkpoints, files, integrity


def _state(scale: float) -> dict:
  rng = np.random.default_rng(0)  # incompressible: the weights land in ocdbt data files
  return {'params': {'w': jnp.asarray(rng.standard_normal((128, 256)).astype(np.float32) * scale),
                     'b': jnp.full((256,), scale)}}


def _save_steps(workdir: str, steps=(4, 8)) -> None:
  mgr = checkpoints.manager(workdir, max_to_keep=len(steps))
  for step in steps:
    checkpoints.save(mgr, step, _state(float(step)), {'epoch': step // 4})
  mgr.close()


def _biggest_file(workdir: str, step: int) -> str:
  paths = glob.glob(os.path.join(workdir, 'checkpoints', str(step), '**', '*'), recursive=True)
  return max((p for p in paths if os.path.isfile(p)), key=os.path.getsize)


def _truncate(path: str) -> None:
  os.truncate(path, os.path.getsize(path) // 2)


def _flip_a_bit(path: str) -> None:
  with open(path, 'r+b') as f:
    f.seek(os.path.getsize(path) // 2)
    byte = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte[0] ^ 1]))


def _restore(workdir: str):
  mgr = checkpoints.manager(workdir)
  try:
    return checkpoints.restore(mgr, _state(0.0))
  finally:
    mgr.close()


@pytest.mark.parametrize('damage', [_truncate, _flip_a_bit])
def test_a_damaged_latest_checkpoint_is_reported_moved_aside_and_the_previous_used(
    tmp_path, capsys, damage):
  workdir = str(tmp_path)
  _save_steps(workdir)
  bad_file = _biggest_file(workdir, 8)
  rel = os.path.relpath(bad_file, os.path.join(workdir, 'checkpoints', '8'))
  damage(bad_file)
  state, meta = _restore(workdir)
  assert meta == {'epoch': 1}
  np.testing.assert_array_equal(state['params']['w'], _state(4.0)['params']['w'])
  err = capsys.readouterr().err.strip().splitlines()
  assert err[0].startswith(f'warning: damaged checkpoint step 8: {rel}: ')
  assert ('truncated: ' if damage is _truncate else 'contents changed') in err[0]
  assert err[-1] == (f'warning: using step 4, the newest intact checkpoint in '
                     f'{workdir}/checkpoints')
  moved, = glob.glob(os.path.join(workdir, 'checkpoints_damaged', '8-*'))
  assert os.path.exists(os.path.join(moved, rel))  # moved, not deleted
  with open(os.path.join(moved, integrity.REASON_FILE)) as f:
    record = json.load(f)
  assert record['step'] == 8 and record['file'] == rel
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['4']
  mgr = checkpoints.manager(workdir)  # and a writer carries on from there
  checkpoints.save(mgr, 12, _state(12.0), {'epoch': 3})
  assert mgr.all_steps() == [4, 12]
  mgr.close()


def test_without_a_manifest_the_read_error_names_the_file(tmp_path, capsys):
  """Checkpoints from before manifests, or killed between orbax's commit and
  the manifest: judged by whether orbax can read them."""
  workdir = str(tmp_path)
  _save_steps(workdir)
  os.remove(os.path.join(workdir, 'checkpoints', '8', integrity.MANIFEST))
  bad_file = _biggest_file(workdir, 8)
  _truncate(bad_file)
  _, meta = _restore(workdir)
  assert meta == {'epoch': 1}
  first = capsys.readouterr().err.splitlines()[0]
  # tensorstore names the database ('state') and what failed in it.
  assert first.startswith('warning: damaged checkpoint step 8: state: ValueError: ')
  assert 'is not valid for value of size' in first and 'tensorstore_spec' not in first


def test_no_intact_checkpoint_is_one_line_saying_so(tmp_path):
  workdir = str(tmp_path)
  _save_steps(workdir)
  for step in (4, 8):
    _truncate(_biggest_file(workdir, step))
  with pytest.raises(UserError) as e:
    _restore(workdir)
  message = str(e.value)
  assert '\n' not in message
  assert message.startswith(f'no intact checkpoint in {workdir}/checkpoints: 2 damaged (step 8')
  assert len(os.listdir(os.path.join(workdir, 'checkpoints_damaged'))) == 2
  assert _restore(workdir) is None  # nothing left: a fresh start, as in an empty workdir


def test_the_damage_function_serves_any_reader(tmp_path, capsys):
  """restore_intact is what every restore path calls (resume, eval, predict,
  and any later one such as fine-tuning from another workdir)."""
  workdir = str(tmp_path)
  _save_steps(workdir, steps=(1, 2, 3))
  _flip_a_bit(_biggest_file(workdir, 3))
  _truncate(_biggest_file(workdir, 2))
  mgr = checkpoints.manager(workdir)
  reads = []
  step, value = checkpoints.restore_intact(mgr, lambda s: reads.append(s) or s * 10)
  mgr.close()
  assert (step, value, reads) == (1, 10, [1])  # damaged ones are found before reading
  assert capsys.readouterr().err.count('warning: damaged checkpoint') == 2


def _abstract_state(config):
  info = source.load_info(config)
  tx = state_lib.make_optimizer(config, 8)
  return jax.eval_shape(lambda: state_lib.create_train_state(config, info, jax.random.key(0), tx))


def _tiny_workdir(tiny_data_dir: str, workdir: str):
  """A workdir with checkpoints at steps 4 and 8 of the tiny model (arbitrary
  weights, no training: these tests are about reading them back)."""
  config = tiny_config(tiny_data_dir)
  abstract = _abstract_state(config)
  files.save_config(files.ensure_workdir(workdir), config)
  files.save_data_info(workdir, source.load_info(config).to_json())
  mgr = checkpoints.manager(workdir)
  for step in (4, 8):
    state = jax.tree_util.tree_map(lambda s, k=step: jnp.full(s.shape, 1.0 / k, s.dtype),
                                   abstract)
    checkpoints.save(mgr, step, state.replace(step=jnp.asarray(step)),
                     {'epoch': step // 4, 'batch_in_epoch': 0, 'history': [], 'partial': {}})
  mgr.close()
  return config


def test_mode_eval_uses_the_newest_intact_checkpoint(tiny_data_dir, tmp_path, capsys):
  """--mode=eval reads: it needs no lock, so it runs while another run holds one."""
  workdir = str(tmp_path / 'w')
  config = _tiny_workdir(tiny_data_dir, workdir)
  _truncate(_biggest_file(workdir, 8))
  with FileLock(os.path.join(workdir, 'run.lock'), 'training'):
    results = trainer.evaluate_only(config, workdir)
  assert results['test']['count'] == 16
  assert results['step'] == 4
  err = capsys.readouterr().err
  assert 'warning: damaged checkpoint step 8: ' in err and 'using step 4' in err


def test_prediction_reads_the_newest_intact_weights(tiny_data_dir, tmp_path, capsys):
  """What InferenceModel.from_workdir (predict, export) loads."""
  workdir = str(tmp_path / 'w')
  _tiny_workdir(tiny_data_dir, workdir)
  _flip_a_bit(_biggest_file(workdir, 8))
  variables = checkpoints.restore_variables(workdir)
  for leaf in jax.tree_util.tree_leaves(variables):  # step 4's weights: all 1/4
    np.testing.assert_array_equal(leaf, np.full(leaf.shape, 0.25, np.float32))
  assert 'warning: damaged checkpoint step 8: ' in capsys.readouterr().err


@pytest.mark.slow
def test_training_resumes_from_the_newest_intact_checkpoint_with_the_same_results(
    tiny_data_dir, tmp_path, capsys):
  config = tiny_config(tiny_data_dir)
  straight = trainer.train_and_evaluate(config, str(tmp_path / 'straight'))
  shutil.copytree(tmp_path / 'straight', tmp_path / 'damaged')
  workdir = str(tmp_path / 'damaged')
  _truncate(_biggest_file(workdir, 8))
  capsys.readouterr()
  assert trainer.train_and_evaluate(config, workdir) == straight
  out = capsys.readouterr()
  assert 'warning: damaged checkpoint step 8: ' in out.err
  assert f'Resuming from {workdir}/checkpoints/4' in out.out


def test_another_config_is_named_and_nothing_is_moved(tiny_data_dir, tmp_path):
  workdir = str(tmp_path / 'w')
  _tiny_workdir(tiny_data_dir, workdir)
  config = tiny_config(tiny_data_dir)
  config.model.gru_features = 32
  mgr = checkpoints.manager(workdir)
  with pytest.raises(UserError) as e:
    checkpoints.restore(mgr, _abstract_state(config), config)
  message = str(e.value)
  assert 'does not fit this model' in message
  assert ('written by a different config (model.gru_features: 64 in config.json, 32 now)'
          in message)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['4', '8']
  # Same config.json, other shapes: not called "a different config".
  shutil.copy(os.path.join(workdir, 'config.json'), tmp_path / 'saved.json')
  files.save_config(workdir, config)
  with pytest.raises(UserError, match='config.json matches this config: the data set changed'):
    checkpoints.restore(mgr, _abstract_state(config), config)
  mgr.close()


def test_a_damaged_best_checkpoint_falls_back_to_the_latest(tmp_path, capsys):
  """Prediction, export and init_from read the best checkpoint where the run kept
  one; when none of it reads back, the latest is used, with a warning."""
  workdir = str(tmp_path)
  _save_steps(workdir)
  best = checkpoints.best_manager(workdir)
  checkpoints.save(best, 4, _state(4.0), {'epoch': 1, 'best': {'epoch': 1}})
  best.close()
  np.testing.assert_array_equal(checkpoints.restore_variables(workdir)['params']['w'],
                                _state(4.0)['params']['w'])  # the best, while intact
  for path in glob.glob(os.path.join(workdir, checkpoints.BEST_DIR, '4', '**', '*'),
                        recursive=True):
    if os.path.isfile(path) and os.path.getsize(path) > 1000:
      _truncate(path)
  capsys.readouterr()
  variables = checkpoints.restore_variables(workdir)
  np.testing.assert_array_equal(variables['params']['w'], _state(8.0)['params']['w'])
  assert 'using the latest checkpoint' in capsys.readouterr().err
  assert checkpoints.chosen_directory(workdir) == checkpoints.CHECKPOINT_DIR  # moved aside
