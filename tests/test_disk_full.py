"""A full disk or unwritable storage: one line, nothing already written
damaged, and the same command continues once there is space.

Three kinds of test keep each promise:
  * on a really small file system: a size-limited tmpfs mounted for the test
    (needs root, or CAP_SYS_ADMIN, as in this project's containers; elsewhere
    these skip, saying why);
  * under a file size limit (RLIMIT_FSIZE, ``tests/limited_writes.py``), which
    needs no privileges: the kernel refuses the same write calls partway
    through a file, in orbax, TFDS and our own writers, with EFBIG ('file too
    large') instead of ENOSPC; every layer reacts to the refusal as to a full
    disk (the message names the cause). These run wherever the tmpfs ones run,
    so CI exercises the same commands with or without mount;
  * by injecting ENOSPC (OSError errno 28) at the write calls, which runs
    everywhere: the cache, the data set and JSON/CSV/PNG writes raise it where
    the operating system would, a checkpoint save raises the error tensorstore
    raises for it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence

import numpy as np
import pytest
from conftest import ROOT

from crnn_jax.core import audio, storage
from crnn_jax.core.storage import StorageError
from data_prep import build, decode, demo, writer

CLIP = audio.ClipSettings(seconds=3.0, position='start', min_seconds=1.0)
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class SmallDisk:
  """A tmpfs of a given size at ``path``, with ballast to fill it."""

  WHAT, FIX = 'disk full', 'free some space'

  def __init__(self, path: str):
    self.path = path
    self.ballast = os.path.join(path, 'ballast')

  def resize(self, kib: int) -> None:
    subprocess.run(['mount', '-o', f'remount,size={kib}k', self.path], check=True)

  def fill(self, leave_kib: int) -> None:
    free = shutil.disk_usage(self.path).free
    fd = os.open(self.ballast, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
      os.posix_fallocate(fd, 0, max(free - leave_kib * 1024, 4096))
    finally:
      os.close(fd)

  def free_space(self) -> None:
    os.remove(self.ballast)

  def read_only(self, on: bool = True) -> None:
    subprocess.run(['mount', '-o', 'remount,' + ('ro' if on else 'rw'), self.path], check=True)

  @contextlib.contextmanager
  def refusing(self) -> Iterator[None]:
    """Writes of more than a few KiB refused, until the block ends."""
    self.fill(leave_kib=8)
    try:
      yield
    finally:
      self.free_space()

  def limit(self, total_kib: int, file_kib: int, after_first_checkpoint: bool = False
            ) -> list[str]:
    """The disk holds ``total_kib`` (``file_kib`` is FileSizeLimit's): the
    arguments before a command's own."""
    del file_kib, after_first_checkpoint  # a disk limits the sum of the files
    self.resize(total_kib)
    return []

  def full(self, leave_kib: int, file_kib: int) -> list[str]:
    """Only ``leave_kib`` left (``file_kib`` is FileSizeLimit's)."""
    del file_kib
    self.fill(leave_kib)
    return []

  def unlimited(self) -> list[str]:
    if os.path.exists(self.ballast):
      self.free_space()
    self.resize(20 * 1024)
    return []


@pytest.fixture
def small_disk(tmp_path):
  path = str(tmp_path / 'small')
  os.makedirs(path)
  mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', path],
                           capture_output=True, text=True, check=False)
  if mounted.returncode:
    pytest.skip(f'cannot mount a tmpfs here ({mounted.stderr.strip() or "mount failed"}); '
                'the *_injected tests and the file size limit keep the same promise')
  try:
    yield SmallDisk(path)
  finally:
    subprocess.run(['umount', '-l', path], check=False)


class FileSizeLimit:
  """Writes that would take a file past a size refused (RLIMIT_FSIZE: EFBIG),
  in a folder ``path`` of the usual disk; no mount, no root. In this process
  with ``refusing``, in commands through tests/limited_writes.py."""

  WHAT = 'file too large'
  FIX = 'raise the file size limit or write somewhere else'
  HELPER = os.path.join(ROOT, 'tests', 'limited_writes.py')

  def __init__(self, path: str):
    self.path = path

  @contextlib.contextmanager
  def refusing(self, nbytes: int = 8 << 10) -> Iterator[None]:
    assert signal.getsignal(signal.SIGXFSZ) == signal.SIG_IGN  # CPython's: EFBIG, not a kill
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
      yield
    finally:
      resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))

  def limit(self, total_kib: int, file_kib: int, after_first_checkpoint: bool = False
            ) -> list[str]:
    """Each file may hold ``file_kib`` (``total_kib`` is SmallDisk's), from the
    start or from the first checkpoint saved on."""
    del total_kib  # one file at a time
    return [self.HELPER, str(file_kib << 10)] + (
        ['--after_first_checkpoint'] if after_first_checkpoint else [])

  def full(self, leave_kib: int, file_kib: int) -> list[str]:
    """Each file may hold ``file_kib`` (``leave_kib`` is SmallDisk's)."""
    del leave_kib
    return self.limit(0, file_kib)

  def unlimited(self) -> list[str]:
    return []


@pytest.fixture
def file_size_limit(tmp_path):
  path = str(tmp_path / 'limited')
  os.makedirs(path)
  return FileSizeLimit(path)


@pytest.fixture(params=['small_disk', 'file_size_limit'])
def refusing_storage(request):
  """Each test of a refused write, on a small disk (skips without mount) and
  under a file size limit (runs everywhere)."""
  return request.getfixturevalue(request.param)


def _one_line(storage: SmallDisk | FileSizeLimit, path: str) -> str:
  """What a write the storage refused prints."""
  return (f'{storage.WHAT} writing {path!r}: nothing written before was damaged; {storage.FIX}, '
          'then rerun the same command to continue')


def _env():
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env.pop('XLA_FLAGS', None)
  return env


def _last_line(out: subprocess.CompletedProcess) -> str:
  assert 'Traceback' not in out.stderr, out.stderr[-3000:]
  return out.stderr.strip().splitlines()[-1]


# ---------------------------------------------------------------- JSON, CSV, PNG

def test_a_refused_write_leaves_the_old_file_whole(refusing_storage):
  path = os.path.join(refusing_storage.path, 'results.json')
  storage.write_json(path, {'old': True})
  with refusing_storage.refusing(), pytest.raises(StorageError) as e:
    storage.write_json(path, {'new': 'x' * 100_000})
  assert str(e.value) == _one_line(refusing_storage, path)
  assert storage.read_json(path) == {'old': True}
  assert os.listdir(refusing_storage.path) == ['results.json']  # no temp file
  storage.write_json(path, {'new': 1})
  assert storage.read_json(path) == {'new': 1}


def test_a_full_disk_leaves_the_old_file_whole_injected(tmp_path):
  path = str(tmp_path / 'report.csv')
  storage.write_text(path, 'old\n')
  with pytest.raises(StorageError, match='disk full writing'), storage.atomic_write(path) as f:
    f.write('new')
    raise ENOSPC  # what the write or the flush at close raises on a full disk
  with open(path) as f:
    assert f.read() == 'old\n'
  assert os.listdir(tmp_path) == ['report.csv']


def _training_refuses_workdir(workdir: str, data_dir: str, reason: str) -> None:
  out = subprocess.run(
      [sys.executable, 'main.py', '--config=configs/default.py', f'--workdir={workdir}',
       '--config.data.name=tiny', f'--config.data.data_dir={data_dir}'],
      cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300, check=False)
  assert out.returncode == 2
  assert out.stderr.strip().splitlines() == [
      f"error: workdir '{workdir}' is not writable ({reason}); choose another --workdir"]


def test_read_only_storage_is_one_line(small_disk, tiny_data_dir):
  small_disk.read_only()
  with pytest.raises(StorageError, match='read-only file system writing'):
    storage.write_json(os.path.join(small_disk.path, 'x.json'), {})
  _training_refuses_workdir(f'{small_disk.path}/w', tiny_data_dir, 'Read-only file system')


def test_unwritable_folder_is_one_line(tmp_path, tiny_data_dir):
  """The read-only test's promise without a mount: a folder this user may not
  write (EACCES), where permission bits bind (not for root)."""
  folder = tmp_path / 'locked'
  folder.mkdir(mode=0o555)
  try:
    if os.access(folder, os.W_OK):
      pytest.skip('permissions do not bind this user (root); test_read_only_storage_is_one_line '
                  'keeps the promise where a tmpfs can be mounted')
    with pytest.raises(StorageError, match='permission denied writing'):
      storage.write_json(str(folder / 'x.json'), {})
    _training_refuses_workdir(f'{folder}/w', tiny_data_dir, 'Permission denied')
  finally:
    folder.chmod(0o755)


# ---------------------------------------------------------------- checkpoints

def _state(scale: float):
  import jax.numpy as jnp
  noise = np.random.default_rng(0).random((256, 256), np.float32)  # 256 KiB, incompressible
  return {'w': jnp.asarray(noise + scale)}


def _saved_steps(workdir: str) -> list[str]:
  return sorted(os.listdir(os.path.join(workdir, 'checkpoints')))


def test_a_checkpoint_save_on_a_full_disk_keeps_the_previous_one(small_disk, monkeypatch):
  from crnn_jax.workdir import checkpoints
  small_disk.resize(4096)
  workdir = os.path.join(small_disk.path, 'w')
  mgr = checkpoints.manager(workdir)
  checkpoints.save(mgr, 1, _state(1.0), {'epoch': 1})
  small_disk.fill(leave_kib=100)
  with pytest.raises(StorageError, match=f"disk full writing '{workdir}/checkpoints'"):
    checkpoints.save(mgr, 2, _state(2.0), {'epoch': 2})  # refused before writing
  # A disk that fills during the save (another writer): orbax's own failure.
  monkeypatch.setattr(checkpoints, '_check_free_space', lambda directory, state: None)
  with pytest.raises(StorageError, match=f"disk full writing '{workdir}/checkpoints/2'"):
    checkpoints.save(mgr, 2, _state(2.0), {'epoch': 2})
  small_disk.free_space()
  _previous_checkpoint_kept_then_saved(mgr, workdir)


def test_a_checkpoint_save_refused_midway_keeps_the_previous_one(file_size_limit):
  """orbax's own write (tensorstore's) refused partway through the state."""
  from crnn_jax.workdir import checkpoints
  workdir = os.path.join(file_size_limit.path, 'w')
  mgr = checkpoints.manager(workdir)
  checkpoints.save(mgr, 1, _state(1.0), {'epoch': 1})
  with file_size_limit.refusing(64 << 10), pytest.raises(StorageError) as e:
    checkpoints.save(mgr, 2, _state(2.0), {'epoch': 2})  # 256 KiB of state
  assert str(e.value) == _one_line(file_size_limit, f'{workdir}/checkpoints/2')
  _previous_checkpoint_kept_then_saved(mgr, workdir)


def _previous_checkpoint_kept_then_saved(mgr, workdir: str) -> None:
  """After a refused save of step 2: step 1 is whole, and the same save works now."""
  from crnn_jax.workdir import checkpoints
  assert _saved_steps(workdir) == ['1']  # the unfinished save was removed
  state, meta = checkpoints.restore(checkpoints.manager(workdir), _state(0.0))
  assert meta == {'epoch': 1}
  np.testing.assert_array_equal(state['w'], _state(1.0)['w'])
  checkpoints.save(mgr, 2, _state(2.0), {'epoch': 2})  # the same save, now it fits
  assert _saved_steps(workdir) == ['1', '2']
  mgr.close()


def test_a_checkpoint_save_on_a_full_disk_keeps_the_previous_one_injected(tmp_path, monkeypatch):
  import orbax.checkpoint as ocp

  from crnn_jax.workdir import checkpoints
  workdir = str(tmp_path / 'w')
  mgr = checkpoints.manager(workdir)
  checkpoints.save(mgr, 1, _state(1.0), {'epoch': 1})
  real_save = ocp.CheckpointManager.save

  def full_disk(self, step, *args, **kwargs):
    os.makedirs(os.path.join(workdir, 'checkpoints', f'{step}.orbax-checkpoint-tmp', 'state'))
    raise ValueError('RESOURCE_EXHAUSTED: Error writing "w/0.0" in OCDBT database: Failed to '
                     "write 262144 bytes to file 19: No space left on device [os_error_code='28']")

  monkeypatch.setattr(ocp.CheckpointManager, 'save', full_disk)  # what tensorstore raises
  with pytest.raises(StorageError, match=f"disk full writing '{workdir}/checkpoints/2'"):
    checkpoints.save(mgr, 2, _state(2.0), {'epoch': 2})
  assert _saved_steps(workdir) == ['1']
  monkeypatch.setattr(ocp.CheckpointManager, 'save', real_save)
  checkpoints.save(mgr, 2, _state(2.0), {'epoch': 2})
  assert _saved_steps(workdir) == ['1', '2']
  mgr.close()


def test_orbax_stragglers_failing_after_the_save_raised_stay_quiet(tmp_path, caplog, monkeypatch):
  """On a busy machine one of orbax's parallel writes or reads can fail, and be
  collected, after the save or read raised and the quiet window closed: asyncio
  logs "Task (or _GatheringFuture) exception was never retrieved", or the
  unraisable hook prints "Exception ignored in: <coroutine ...>", each with a
  traceback under the one-line error. Such reports of orbax's own code are
  dropped; others are not."""
  import asyncio
  import gc

  import orbax.checkpoint as ocp

  from crnn_jax.workdir import checkpoints
  orbax_file = os.path.join(os.path.dirname(ocp.__file__), '_src', 'serialization.py')
  mine = str(tmp_path / 'serialization.py')

  def defined_in(function, source_file: str):
    function.__code__ = function.__code__.replace(co_filename=source_file)
    return function

  def failing_futures_of(source_file: str) -> None:
    """A task and a gathering future fail; nobody reads their exceptions."""
    async def write() -> None:
      raise ValueError('File too large')

    async def start() -> tuple[asyncio.Future, ...]:
      return (asyncio.create_task(defined_in(write, source_file)()),
              asyncio.gather(defined_in(write, source_file)()))

    loop = asyncio.new_event_loop()
    futures = loop.run_until_complete(start())
    loop.run_until_complete(asyncio.sleep(0.01))
    loop.close()
    del futures
    gc.collect()

  class Suspend:
    def __await__(self):
      yield

  def coroutine_failing_when_collected(source_file: str) -> None:
    async def read() -> None:
      try:
        await Suspend()
      finally:
        raise ValueError('Encountered error while reading array index')

    coroutine = defined_in(read, source_file)()
    coroutine.send(None)  # suspended, then closed when collected: its finally raises
    del coroutine
    gc.collect()

  ignored = []
  monkeypatch.setattr(sys, 'unraisablehook', lambda u: ignored.append(u.object.cr_code))
  with pytest.raises(StorageError), checkpoints._quiet_failures():
    raise StorageError(errno.EFBIG, os.strerror(errno.EFBIG), str(tmp_path))
  caplog.set_level(logging.ERROR, logger='asyncio')
  failing_futures_of(orbax_file)
  coroutine_failing_when_collected(orbax_file)
  assert not caplog.records and not ignored
  failing_futures_of(mine)
  coroutine_failing_when_collected(mine)
  assert sorted(r.getMessage().splitlines()[0] for r in caplog.records) == [
      'Task exception was never retrieved', '_GatheringFuture exception was never retrieved']
  assert [code.co_filename for code in ignored] == [mine]


# ---------------------------------------------------------------- data_prep build

def _library(root: str) -> str:
  demo.generate_demo_library(root, seed=0, clips_per_class=10, seconds=CLIP.seconds)
  return root


def _dataset(data_dir: str, name: str) -> dict:
  import tensorflow_datasets as tfds
  out = {}
  for split, src in tfds.data_source(name, data_dir=data_dir).items():
    for i in range(len(src)):
      r = src[i]
      out[r['track_id']] = (split, int(r['label']), r['spectrogram'].tobytes())
  return out


def _build_cli(library: str, data_dir: str, limit: Sequence[str] = ()
               ) -> subprocess.CompletedProcess:
  return subprocess.run(
      [sys.executable, *limit, '-m', 'data_prep', 'build', f'--input={library}',
       f'--data_dir={data_dir}', '--name=songs', f'--clip_seconds={CLIP.seconds}',
       f'--min_seconds={CLIP.min_seconds}', '--workers=1', '--no_progress'],
      cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.slow
def test_a_build_on_a_full_disk_continues_once_space_is_freed(refusing_storage, tmp_path):
  storage = refusing_storage
  library = _library(str(tmp_path / 'lib'))
  reference = str(tmp_path / 'reference')
  assert _build_cli(library, reference).returncode == 0
  data_dir = os.path.join(storage.path, 'data')
  # The decode cache does not fit (a cached clip is 17 KiB).
  first = _build_cli(library, data_dir, storage.limit(total_kib=400, file_kib=4))
  assert first.returncode == 2
  assert _last_line(first).startswith(f"error: {storage.WHAT} writing '{data_dir}/songs_cache/")
  cached = len(os.listdir(os.path.join(data_dir, 'songs_cache')))
  # The cache fits, the data set does not (its training split is 400 KiB).
  second = _build_cli(library, data_dir, storage.limit(total_kib=1100, file_kib=128))
  assert second.returncode == 2, second.stderr
  assert _last_line(second) == 'error: ' + _one_line(storage, f'{data_dir}/songs/1.0.0')
  assert len(os.listdir(os.path.join(data_dir, 'songs_cache'))) >= cached  # kept
  third = _build_cli(library, data_dir, storage.unlimited())
  assert third.returncode == 0, third.stderr
  assert '40 from the cache' in third.stdout  # nothing decoded twice
  assert _dataset(data_dir, 'songs') == _dataset(reference, 'songs')


def test_a_build_on_a_full_disk_continues_once_space_is_freed_injected(tmp_path, monkeypatch):
  library = _library(str(tmp_path / 'lib'))
  options = {'clip': CLIP, 'workers': 1, 'progress': False, 'verbose': False}
  build.build_dataset(library, str(tmp_path / 'reference'), 'songs', **options)
  data_dir = str(tmp_path / 'data')
  real_savez, saved = np.savez, []

  def savez_until_full(f, **arrays):
    if len(saved) == 15:
      raise ENOSPC
    saved.append(1)
    real_savez(f, **arrays)

  monkeypatch.setattr(decode.np, 'savez', savez_until_full)
  with pytest.raises(StorageError, match=f"disk full writing '{data_dir}/songs_cache/"):
    build.build_dataset(library, data_dir, 'songs', **options)
  monkeypatch.setattr(decode.np, 'savez', real_savez)
  real_example, written = writer.cached_example, []

  def example_until_full(item):
    if len(written) == 20:
      raise ENOSPC
    written.append(1)
    return real_example(item)

  monkeypatch.setattr(writer, 'cached_example', example_until_full)
  with pytest.raises(StorageError, match=f"disk full writing '{data_dir}/songs/1.0.0'"):
    build.build_dataset(library, data_dir, 'songs', **options)
  monkeypatch.setattr(writer, 'cached_example', real_example)
  summary = build.build_dataset(library, data_dir, 'songs', **options)
  assert (summary['decoded'], summary['from_cache']) == (0, 40)
  assert _dataset(data_dir, 'songs') == _dataset(str(tmp_path / 'reference'), 'songs')


def test_a_failed_rebuild_gives_the_previous_data_set_back_injected(tmp_path, monkeypatch):
  library = _library(str(tmp_path / 'lib'))
  options = {'clip': CLIP, 'workers': 1, 'progress': False, 'verbose': False}
  data_dir = str(tmp_path / 'data')
  build.build_dataset(library, data_dir, 'songs', **options)
  before = _dataset(data_dir, 'songs')
  monkeypatch.setattr(writer, 'cached_example', lambda item: (_ for _ in ()).throw(ENOSPC))
  with pytest.raises(StorageError):  # another split: a different data set, which fails
    build.build_dataset(library, data_dir, 'songs', **options, seed=7)
  assert _dataset(data_dir, 'songs') == before
  assert sorted(os.listdir(os.path.join(data_dir, 'songs'))) == ['1.0.0']


def test_after_a_replacement_killed_midway_the_same_build_is_reused(tmp_path):
  """A kill between setting the old data set aside and writing the new one:
  the old set comes back, and rebuilding it (same inputs) reuses it."""
  library = _library(str(tmp_path / 'lib'))
  options = {'clip': CLIP, 'workers': 1, 'progress': False, 'verbose': False}
  data_dir = str(tmp_path / 'data')
  build.build_dataset(library, data_dir, 'songs', **options)
  before = _dataset(data_dir, 'songs')
  version = os.path.join(data_dir, 'songs', '1.0.0')
  os.replace(version, version + '.previous')  # where the kill left it
  summary = build.build_dataset(library, data_dir, 'songs', **options)
  assert summary['reused_existing'] and _dataset(data_dir, 'songs') == before
  assert sorted(os.listdir(os.path.join(data_dir, 'songs'))) == ['1.0.0']


# ---------------------------------------------------------------- training and results

def _train_args(data_dir: str, workdir: str, epochs: int, mode: str = 'train') -> list[str]:
  return [sys.executable, 'main.py', '--config=configs/default.py', f'--workdir={workdir}',
          '--config.data.name=tiny', f'--config.data.data_dir={data_dir}',
          '--config.train.batch_size=16', '--config.train.eval_batch_size=16',
          f'--config.train.num_epochs={epochs}', '--config.train.max_lr=3e-3', f'--mode={mode}']


def _main(*args, limit: Sequence[str] = ()) -> subprocess.CompletedProcess:
  argv = _train_args(*args)
  return subprocess.run([argv[0], *limit, *argv[1:]], cwd=ROOT, env=_env(), capture_output=True,
                        text=True, timeout=600, check=False)


def _checkpoint_bytes(data_dir: str) -> int:
  """What the tiny model's train state holds (params, batch statistics, Adam's moments)."""
  import jax
  from conftest import tiny_config

  from crnn_jax.data import source
  from crnn_jax.train import state as state_lib
  config = tiny_config(data_dir)
  state = jax.eval_shape(lambda: state_lib.create_train_state(
      config, source.load_info(config), jax.random.key(0), state_lib.make_optimizer(config, 8)))
  return sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(state))


@pytest.mark.slow
def test_training_on_a_full_disk_resumes_with_the_same_results(refusing_storage, tiny_data_dir,
                                                               tmp_path):
  """The storage has room for the first checkpoint, not the second: the run
  stops at the second save (a small disk: before it writes; a file size limit:
  in orbax's write); the same command, once allowed, resumes."""
  storage = refusing_storage
  straight = str(tmp_path / 'straight')
  assert _main(tiny_data_dir, straight, 2).returncode == 0
  state_bytes = _checkpoint_bytes(tiny_data_dir)
  assert state_bytes > 1 << 20  # its largest file is over the file size limit below
  workdir = os.path.join(storage.path, 'w')
  full = _main(tiny_data_dir, workdir, 2, limit=storage.limit(
      total_kib=(int(state_bytes * 1.6) >> 10) + 1024, file_kib=256, after_first_checkpoint=True))
  assert full.returncode == 2, full.stderr
  # A small disk is refused by the free-space check before the save starts.
  refused = f'{workdir}/checkpoints' + ('/8' if isinstance(storage, FileSizeLimit) else '')
  assert _last_line(full) == 'error: ' + _one_line(storage, refused)
  assert _saved_steps(workdir) == ['4']
  resumed = _main(tiny_data_dir, workdir, 2, limit=storage.unlimited())
  assert resumed.returncode == 0, resumed.stderr
  assert 'Resuming from' in resumed.stdout
  with open(os.path.join(straight, 'results.json')) as a, \
       open(os.path.join(workdir, 'results.json')) as b:
    assert json.load(a) == json.load(b)
  # Writing results: evaluation on a full disk leaves results.json as it was.
  with open(os.path.join(workdir, 'results.json'), 'rb') as f:
    results = f.read()
  refusing = storage.full(leave_kib=16, file_kib=1)
  evaluated = _main(tiny_data_dir, workdir, 2, 'eval', limit=refusing)
  assert evaluated.returncode == 2
  assert _last_line(evaluated).startswith(f'error: {storage.WHAT} writing ')
  with open(os.path.join(workdir, 'results.json'), 'rb') as f:
    assert f.read() == results
