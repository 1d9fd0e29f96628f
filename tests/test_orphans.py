"""No process outlives a command killed by SIGKILL: a build's decoding workers,
grain's loader workers and multiprocessing's resource tracker all exit within
seconds (crnn_jax.core.processes).

The command runs with a marker in its environment, which every process it
starts inherits (spawned workers and the tracker are exec'd with it). After the
kill, /proc is walked for live processes carrying the marker: ancestry is no
help then, since orphans are re-parented to init. Before the kill, the
command's descendants (by parent id) must all carry the marker, so the walk is
shown to find the workers it looks for.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable

import pytest

from data_prep import demo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = 'CRNN_JAX_TEST_ORPHAN_MARKER'
EXIT_SECONDS = 10.0  # how long the workers may take to notice (measured: well under 1 s)

pytestmark = pytest.mark.skipif(not os.path.isdir('/proc/self'), reason='walks /proc (Linux)')


def _stat(pid: int) -> tuple[str, int] | None:
  """(state letter, parent pid) from /proc/PID/stat, or None when gone."""
  try:
    with open(f'/proc/{pid}/stat', encoding='utf-8', errors='replace') as f:
      text = f.read()
  except OSError:
    return None
  fields = text[text.rindex(')') + 2:].split()  # the command name may hold spaces and ')'
  return fields[0], int(fields[1])


def _pids() -> list[int]:
  return [int(name) for name in os.listdir('/proc') if name.isdigit()]


def _alive(pid: int) -> bool:
  stat = _stat(pid)
  return stat is not None and stat[0] not in 'ZX'  # a zombie has exited


def marked(token: str) -> set[int]:
  """Live processes whose environment holds MARKER=token (this user's only)."""
  needle = f'{MARKER}={token}'.encode() + b'\0'
  found = set()
  for pid in _pids():
    try:
      with open(f'/proc/{pid}/environ', 'rb') as f:
        env = f.read()
    except OSError:  # gone, or another user's
      continue
    if needle in env and _alive(pid):
      found.add(pid)
  return found


def descendants(root: int) -> set[int]:
  """Live processes below ``root`` by parent id."""
  children: dict[int, list[int]] = {}
  for pid in _pids():
    stat = _stat(pid)
    if stat is not None and stat[0] not in 'ZX':
      children.setdefault(stat[1], []).append(pid)
  found, todo = set(), [root]
  while todo:
    for child in children.get(todo.pop(), []):
      found.add(child)
      todo.append(child)
  return found


def _wait_for(condition: Callable[[], bool], seconds: float, poll: float = 0.1) -> bool:
  deadline = time.monotonic() + seconds
  while time.monotonic() < deadline:
    if condition():
      return True
    time.sleep(poll)
  return condition()


def _start(args: list[str], token: str, log: str) -> subprocess.Popen:
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu', **{MARKER: token})
  with open(log, 'wb') as out:
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=out,
                            stderr=subprocess.STDOUT)


def kill_and_count_survivors(proc: subprocess.Popen, token: str, workers: int) -> float:
  """SIGKILLs ``proc`` once its workers run; returns the seconds until none of
  its processes is left, failing (and cleaning up) when some outlive EXIT_SECONDS."""
  below = descendants(proc.pid)
  assert len(below) >= workers + 1, f'expected {workers} workers and the resource tracker'
  unmarked = below - marked(token)
  assert not [p for p in unmarked if _alive(p)], 'the marker must find every process started'
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  t0 = time.monotonic()
  gone = _wait_for(lambda: not marked(token), EXIT_SECONDS)
  seconds = time.monotonic() - t0
  survivors = marked(token)
  for pid in survivors:  # never leave them behind, even when the test fails
    with contextlib.suppress(ProcessLookupError):
      os.kill(pid, signal.SIGKILL)
  assert gone, f'{len(survivors)} process(es) outlived the killed command by {EXIT_SECONDS} s'
  return seconds


def _spawned_workers(pid: int) -> int:
  count = 0
  for child in descendants(pid):
    with contextlib.suppress(OSError), open(f'/proc/{child}/cmdline', 'rb') as f:
      count += b'multiprocessing.spawn' in f.read()
  return count


def test_killed_build_leaves_no_process_and_the_rerun_resumes(tmp_path):
  library = str(tmp_path / 'lib')
  demo.generate_demo_library(library, seed=0, clips_per_class=14, seconds=1.5)  # 56 >= 48: a pool
  data_dir, token = tmp_path / 'tfds', uuid.uuid4().hex
  args = ['-m', 'data_prep', 'build', f'--input={library}', f'--data_dir={data_dir}',
          '--name=orphans', '--clip_seconds=1', '--min_seconds=0.5', '--workers=2',
          '--no_progress']
  cache = data_dir / 'orphans_cache'
  proc = _start(args, token, str(tmp_path / 'killed.log'))
  try:
    # Mid-build: half the clips decoded, the workers decoding the others
    # (which are then too few for a pool: the rerun decodes them in its own process).
    assert _wait_for(lambda: len(list(cache.glob('*/*.npz'))) >= 28, 120, poll=0.05), \
        (tmp_path / 'killed.log').read_text()
    assert _spawned_workers(proc.pid) == 2
    seconds = kill_and_count_survivors(proc, token, workers=2)
  finally:
    proc.kill()
  print(f'workers and tracker gone {seconds:.2f} s after the SIGKILL')
  cached = len(list(cache.glob('*/*.npz')))
  assert 28 <= cached < 56
  rerun = subprocess.run([sys.executable, *args], cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                         capture_output=True, text=True, timeout=300, check=False)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert f'{cached} from the cache' in rerun.stdout  # resumed: finished clips not decoded again


@pytest.mark.slow
def test_killed_training_leaves_no_loader_worker(tiny_data_dir, tmp_path):
  """grain's loader processes (config.data.num_workers) die with the training run."""
  token, log = uuid.uuid4().hex, tmp_path / 'train.log'
  args = ['main.py', '--config=configs/default.py', f'--workdir={tmp_path / "w"}',
          '--config.data.name=tiny', f'--config.data.data_dir={tiny_data_dir}',
          '--config.train.batch_size=4', '--config.train.eval_batch_size=16',
          '--config.train.num_epochs=50', '--config.data.num_workers=2']
  proc = _start(args, token, str(log))
  try:
    # A step done: batches came through the workers, which go on with the
    # epoch's other 15 (each worker of an epoch exits when its share is done).
    step_done = re.compile(r'\| *[1-9][0-9]*/16 \[')
    assert _wait_for(lambda: step_done.search(log.read_text(errors='replace')), 600, poll=0.2), \
        log.read_text(errors='replace')[-3000:]
    assert _spawned_workers(proc.pid) == 2
    seconds = kill_and_count_survivors(proc, token, workers=2)
  finally:
    proc.kill()
    proc.wait()
  print(f'loader workers and tracker gone {seconds:.2f} s after the SIGKILL')
