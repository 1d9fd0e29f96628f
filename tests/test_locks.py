"""One writer per workdir and per data set: crnn_jax.core.file_lock and its users."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import ROOT

from crnn_jax.core import file_lock as locks
from crnn_jax.core.errors import UserError
from crnn_jax.core.file_lock import FileLock, Holder, LockHeld
from data_prep import build


def _forge(path, **changes) -> Holder:
  """A lock file as another holder would have written it."""
  holder = dataclasses.replace(Holder.of_this_process('training'), **changes)
  with open(path, 'w', encoding='utf-8') as f:
    f.write(holder.to_json())
  return holder


def test_a_second_holder_is_refused_with_one_line_naming_the_first(tmp_path):
  path = tmp_path / 'run.lock'
  with FileLock(path, 'training'):
    holder = Holder.from_json(path.read_text())
    assert (holder.host, holder.pid) == (socket.gethostname(), os.getpid())
    with pytest.raises(LockHeld) as e:
      FileLock(path, 'training').acquire()
    message = str(e.value)
    assert '\n' not in message
    assert f'host {socket.gethostname()}, pid {os.getpid()}, since {holder.since}' in message
    assert isinstance(e.value, UserError)
  assert not path.exists()  # released
  FileLock(path, 'training').acquire().release()


def _hold_then_wait(path, ready):
  FileLock(path, 'a run that gets killed').acquire()
  ready.set()
  time.sleep(600)


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path):
  path = str(tmp_path / 'run.lock')
  ctx = multiprocessing.get_context('spawn')
  ready = ctx.Event()
  child = ctx.Process(target=_hold_then_wait, args=(path, ready))
  child.start()
  assert ready.wait(60)
  with pytest.raises(LockHeld, match=f'pid {child.pid}'):
    FileLock(path, 'training').acquire()
  os.kill(child.pid, signal.SIGKILL)
  child.join()
  warnings = []
  lock = FileLock(path, 'training', warn=warnings.append).acquire()
  assert lock.current_holder().pid == os.getpid()
  assert len(warnings) == 1 and f'process {child.pid} no longer exists' in warnings[0]
  lock.release()


def test_a_reused_pid_is_recognised_by_its_start_time(tmp_path):
  path = tmp_path / 'run.lock'
  parent = os.getppid()  # alive, but started at another time than the lock says
  _forge(path, pid=parent, started=(locks._start_ticks(parent) or 0) + 12345)
  warnings = []
  FileLock(path, 'training', warn=warnings.append).acquire().release()
  assert 'that PID now belongs to a later process' in warnings[0]
  _forge(path, pid=parent, started=locks._start_ticks(parent))  # the real one: alive
  with pytest.raises(LockHeld, match='wait for it to finish'):
    FileLock(path, 'training').acquire()


def test_locks_of_other_machines_are_never_taken_over(tmp_path):
  path = tmp_path / 'run.lock'
  _forge(path, host='gpu-node-7', pid=999_999)  # no such pid here, which proves nothing
  with pytest.raises(LockHeld, match=r'another machine.*delete .*run\.lock if you are sure'):
    FileLock(path, 'training').acquire()
  _forge(path, pid=999_999, pid_namespace=12345)  # same host name, another container
  with pytest.raises(LockHeld, match='another machine or container'):
    FileLock(path, 'training').acquire()
  _forge(path, pid=os.getpid(), boot_id='an-earlier-boot')  # this host, before a reboot
  warnings = []
  FileLock(path, 'training', warn=warnings.append).acquire().release()
  assert 'restarted' in warnings[0]


def _race(path, barrier, results):
  barrier.wait()
  try:
    with FileLock(path, 'racer', warn=lambda m: None):
      results.put(('won', os.getpid()))
      time.sleep(1.0)  # hold it while the others try
  except LockHeld:
    results.put(('refused', os.getpid()))


def test_racing_takeovers_of_one_stale_lock_let_exactly_one_in(tmp_path):
  path = str(tmp_path / 'run.lock')
  _forge(path, pid=999_999_9)  # no such process: stale
  ctx = multiprocessing.get_context('spawn')
  barrier, results = ctx.Barrier(4), ctx.Queue()
  procs = [ctx.Process(target=_race, args=(path, barrier, results)) for _ in range(4)]
  for p in procs:
    p.start()
  outcomes = [results.get(timeout=60)[0] for _ in procs]
  for p in procs:
    p.join()
  assert sorted(outcomes) == ['refused'] * 3 + ['won']


@pytest.mark.parametrize('text', ['{half', '{"pid": "7"}', '[]'])
def test_an_unreadable_lock_file_is_refused_not_removed(tmp_path, text):
  path = tmp_path / 'run.lock'
  path.write_text(text)
  with pytest.raises(LockHeld, match='unreadable.*delete it if no run'):
    FileLock(path, 'training').acquire()
  assert path.read_text() == text


def test_the_decorator_locks_by_argument_names(tmp_path):
  @locks.exclusive(lambda data_dir, name: os.path.join(data_dir, f'{name}.lock'), 'a build')
  def build(input_path, data_dir, name='x'):
    with open(os.path.join(data_dir, f'{name}.lock')) as f:
      return json.load(f)['purpose']

  assert build('in', str(tmp_path)) == 'a build'
  assert not (tmp_path / 'x.lock').exists()
  with FileLock(tmp_path / 'y.lock', 'another build'), \
       pytest.raises(LockHeld, match='another build'):
    build('in', str(tmp_path), name='y')


def _env():
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env.pop('XLA_FLAGS', None)
  return env


def test_data_prep_build_refuses_while_another_build_holds_the_data_set(tmp_path):
  with FileLock(tmp_path / 'out' / 'songs.lock', 'data_prep build'):
    out = subprocess.run(
        [sys.executable, '-m', 'data_prep', 'build', f'--input={tmp_path}',
         f'--data_dir={tmp_path / "out"}', '--name=songs', '--no_progress'],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300, check=False)
  assert out.returncode == 2, out.stderr
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: ')
  assert f'data_prep build on host {socket.gethostname()}, pid {os.getpid()}' in lines[0]


def test_training_lr_find_and_import_refuse_a_held_workdir(tiny_data_dir, tmp_path):
  from conftest import tiny_config

  from crnn_jax.train import from_weights, lr_find, trainer
  config = tiny_config(tiny_data_dir)
  workdir = tmp_path / 'w'
  with FileLock(workdir / 'run.lock', 'training'):
    for run in (trainer.train_and_evaluate, lr_find.lr_range_test):
      with pytest.raises(LockHeld, match=f'{workdir} is in use by training on host'):
        run(config, str(workdir))
    with pytest.raises(LockHeld):
      from_weights.write_workdir(str(workdir), config, {}, {})
  assert sorted(os.listdir(workdir)) == []  # nothing written while refused


@pytest.mark.slow
def test_a_second_training_run_on_a_workdir_refuses(tiny_data_dir, tmp_path):
  """Two main.py on one workdir: the second stops at once with one line; the
  first is unaffected (it is stopped here only to keep the test short)."""
  workdir = tmp_path / 'w'
  args = [sys.executable, 'main.py', '--config=configs/default.py', f'--workdir={workdir}',
          '--config.data.name=tiny', f'--config.data.data_dir={tiny_data_dir}',
          '--config.train.batch_size=16', '--config.train.eval_batch_size=16',
          '--config.train.num_epochs=50']
  first = subprocess.Popen(args, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.time() + 240
    while not (workdir / 'run.lock').exists():
      assert first.poll() is None, first.stderr.read()
      assert time.time() < deadline
      time.sleep(0.2)
    second = subprocess.run(args, cwd=ROOT, env=_env(), capture_output=True, text=True,
                            timeout=300, check=False)
    assert first.poll() is None  # still training
  finally:
    first.kill()
    first.wait()
  assert second.returncode == 2
  lines = second.stderr.strip().splitlines()
  assert len(lines) == 1, second.stderr
  assert lines[0].startswith(f'error: {workdir} is in use by training on host '
                             f'{socket.gethostname()}, pid {first.pid}, since ')


def test_a_remote_data_set_is_locked_by_a_local_file_named_after_its_url():
  remote = build.lock_path('gs://bucket/data', 'songs')
  assert not remote.startswith(os.getcwd()) and 'gs:' not in remote
  assert remote == build.lock_path('gs://bucket/data/', 'songs')
  assert remote != build.lock_path('gs://bucket/data', 'other')
  assert build.lock_path('data', 'songs') == os.path.abspath('data/songs.lock')
