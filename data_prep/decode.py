"""The per-track work of a build: decode -> clip window -> spectrogram (+ audio
features), cached per track and run over worker processes.

Every result, including a decode failure of an unchanged file, is cached as
an ``.npz`` keyed by the file's path, size, mtime and the settings, so a
crashed or interrupted build, rerun, redoes no finished work. A file whose
decoding kills its process (decoder segfault, OOM kill) is retried once in a
process of its own, then reported and cached as 'worker crashed while
decoding', so a rerun does not die on it again.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import connection
from typing import Any

import numpy as np
from tqdm import tqdm

from crnn_jax.core import audio, audio_features, files

CACHE_VERSION = 2  # bump when what a cache file holds or means changes
MIN_POOL_JOBS = 48  # fewer clips to compute than this: decode in this process
# One worker process per core, each single-threaded: no BLAS/OpenMP oversubscription.
_ONE_THREAD = {'OMP_NUM_THREADS': '1', 'OPENBLAS_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1',
               'NUMBA_NUM_THREADS': '1'}
WORKER_CRASHED = 'worker crashed while decoding'
Results = dict[str, tuple[str | None, dict[str, float]]]  # track id -> (error, features)


SINGLE = '1'  # --windows: one window per track, at the clip position (the reference)


@dataclasses.dataclass(frozen=True)
class Job:
  track_id: str
  path: str
  cache_file: str
  clip: audio.ClipSettings
  estimate_features: bool
  windows: str = SINGLE  # '1', 'all' (every full non-overlapping window) or N spread over the track


def check_windows(windows: str | int) -> str:
  """The --windows setting, normalised: '1', 'all' or a count >= 2; ValueError otherwise."""
  text = str(windows).strip().lower()
  if text == 'all' or (text.isdigit() and int(text) >= 1):
    return text if text == 'all' else str(int(text))
  raise ValueError(f"--windows {windows!r}: use 'all' (every non-overlapping window of a track) "
                   'or a number of windows spread over each track (1: one window, the default)')


def cache_key(path: str, clip: audio.ClipSettings, estimate_features: bool,
              windows: str = SINGLE) -> str | None:
  """Identifies one track's work product; None when the file cannot be stat'ed."""
  try:
    st = os.stat(path)
  except OSError:
    return None
  key = {'path': os.path.abspath(path), 'size': st.st_size, 'mtime_ns': st.st_mtime_ns,
         'clip': dataclasses.asdict(clip), 'features': estimate_features, 'version': CACHE_VERSION}
  if windows != SINGLE:  # one window keeps the keys (and caches) of earlier builds
    key['windows'] = windows
  if estimate_features:  # estimates of longer files depend on how much is analysed
    key['analysis_seconds'] = audio_features.MAX_ANALYSIS_SECONDS
  blob = json.dumps(key, sort_keys=True)
  return hashlib.sha1(blob.encode()).hexdigest()


def _atomic_savez(path: str, **arrays: Any) -> None:
  if not path:  # no cache for a file that could not be stat'ed
    return
  with files.atomic_write(path, 'wb') as f:
    np.savez(f, **arrays)


def track_windows(y: np.ndarray, clip: audio.ClipSettings, windows: str = SINGLE
                  ) -> list[np.ndarray]:
  """The audible windows a data set stores of one decoded track."""
  if windows == SINGLE:
    found = [audio.fixed_window(y, clip.seconds, clip.position, clip.min_seconds)]
  elif windows == 'all':
    found = list(audio.sliding_windows(y, clip.seconds, clip.min_seconds))
  else:
    found = audio.spread_windows(y, int(windows), clip.seconds, clip.min_seconds)
  audible = [w for w in found if not audio.is_silent(w)]
  if not audible:
    raise audio.AudioError('silent clip (peak below -80 dBFS)')
  return audible


def compute_track(path: str, clip: audio.ClipSettings, estimate_features: bool,
                  windows: str = SINGLE) -> tuple[np.ndarray, dict[str, float]]:
  """Decode + window(s) + spectrogram(s) (+ audio features). Raises AudioError.
  The image is (128, frames) for one window, (windows, 128, frames) otherwise."""
  y = audio.load_audio(path)  # also rejects truncated MP3s
  images = [audio.spectrogram_image(w, clip.seconds) for w in track_windows(y, clip, windows)]
  image = images[0] if windows == SINGLE else np.stack(images)
  features: dict[str, float] = {}
  if estimate_features:
    features = audio_features.estimate(y)
  return image, features


def run_job(job: Job) -> tuple[str, str | None, dict[str, float]]:
  """Worker entry point: (track_id, error reason or None, features).

  Results, including decode failures of an unchanged file, are cached, so a
  rerun neither decodes again nor re-tries a known-bad file.
  """
  if os.path.exists(job.cache_file):
    try:
      return read_cached(job.track_id, job.cache_file)
    except Exception:  # noqa: BLE001, S110  a damaged cache file is recomputed
      pass
  if not os.access(job.path, os.R_OK):
    reason = 'unreadable path: ' + ('no such file' if not os.path.lexists(job.path)
                                    else 'permission denied or broken link')
    return job.track_id, reason, {}  # not cached: may be fixed without touching the file
  try:
    image, features = compute_track(job.path, job.clip, job.estimate_features, job.windows)
  except audio.AudioError as e:
    _atomic_savez(job.cache_file, error=np.array(str(e)))
    return job.track_id, str(e), {}
  except Exception as e:  # noqa: BLE001  never fatal; not cached (may be transient)
    return job.track_id, f'unexpected error: {type(e).__name__}: {str(e)[:200]}', {}
  names = sorted(features)
  _atomic_savez(job.cache_file, image=image, feature_names=np.array(names, dtype=str),
                feature_values=np.array([features[n] for n in names], dtype=np.float64))
  return job.track_id, None, features


def read_cached(track_id: str, cache_file: str) -> tuple[str, str | None, dict[str, float]]:
  with np.load(cache_file) as z:
    if 'error' in z.files:
      return track_id, str(z['error']), {}
    names = [str(n) for n in z['feature_names']]
    return track_id, None, dict(zip(names, (float(v) for v in z['feature_values'])))


def load_image(cache_file: str, window: int = 0) -> np.ndarray:
  """One stored window's (128, frames) image."""
  with np.load(cache_file) as z:
    image = np.asarray(z['image'], dtype=np.uint8)
  return image[window] if image.ndim == 3 else image


def window_count(cache_file: str) -> int:
  """How many windows a track's cache file holds."""
  with np.load(cache_file) as z:
    shape = z['image'].shape
  return shape[0] if len(shape) == 3 else 1




def available_cores() -> int:
  """Cores this process may run on (respects affinity / container CPU sets)."""
  try:
    return max(1, len(os.sched_getaffinity(0)))
  except AttributeError:  # not on Linux
    return os.cpu_count() or 1


def run_jobs(jobs: Sequence[Job], workers: int, progress: bool = True
             ) -> Results:
  """All jobs, over ``workers`` processes (spawned: safe when JAX is loaded)."""
  results: Results = {}
  bar = tqdm(total=len(jobs), desc='decode+spectrogram', unit='clip', disable=not progress,
             file=sys.stderr, dynamic_ncols=True)
  with bar:
    # Cache hits are cheap reads: here. Worker processes pay ~2 s to start
    # (imports, numba), so only enough uncached work is worth sending to them.
    todo = []
    for job in jobs:
      if job.cache_file and os.path.exists(job.cache_file):
        track_id, error, features = run_job(job)
        results[track_id] = (error, features)
        bar.update()
      else:
        todo.append(job)
    jobs = todo
    ctx = multiprocessing.get_context('spawn')
    if workers <= 1 or len(jobs) < MIN_POOL_JOBS:
      _run_here(jobs, max(1, workers), ctx, results, bar)
      return results
    pending = collections.deque(jobs)
    with _one_thread_children():
      while pending:
        # A worker died (OOM kill, decoder segfault): the pool is broken and the
        # jobs in flight are suspects. Each gets a process of its own, so the
        # culprit is known and cached as failed; the rest go to a fresh pool.
        suspects = _pool_pass(pending, workers, ctx, results, bar)
        if suspects:
          _run_isolated(suspects, workers, ctx, results, bar)
  return results


@contextlib.contextmanager
def _one_thread_children() -> Iterator[None]:
  """Sets _ONE_THREAD while processes are spawned (their numpy/BLAS read it at import)."""
  saved = {k: os.environ.get(k) for k in _ONE_THREAD}
  os.environ.update(_ONE_THREAD)
  try:
    yield
  finally:
    for k, v in saved.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v


def _run_here(jobs: Sequence[Job], workers: int, ctx: Any,
              results: Results, bar: Any) -> None:
  """Jobs in this process, each marked while it runs: a marker left behind means
  the job killed the build (segfault, OOM kill), so a rerun runs it isolated."""
  suspects = []
  for job in jobs:
    marker = job.cache_file + '.running' if job.cache_file else ''
    if marker and os.path.exists(marker):
      suspects.append(job)
      continue
    if marker:
      os.makedirs(os.path.dirname(marker), exist_ok=True)
      open(marker, 'wb').close()  # pylint: disable=consider-using-with
    try:
      _record(results, bar, run_job(job))
    finally:  # Ctrl-C and exceptions included; only a dead process leaves the marker
      if marker:
        with contextlib.suppress(OSError):
          os.remove(marker)
  if suspects:
    with _one_thread_children():
      _run_isolated(suspects, workers, ctx, results, bar)
    for job in suspects:
      with contextlib.suppress(OSError):
        os.remove(job.cache_file + '.running')



def _record(results: Results, bar: Any,
            result: tuple[str, str | None, dict[str, float]]) -> None:
  track_id, error, features = result
  results[track_id] = (error, features)
  bar.update()


def _pool_pass(pending: collections.deque[Job], workers: int, ctx: Any,
               results: Results, bar: Any) -> list[Job]:
  """Runs ``pending`` jobs over a process pool until done or a worker dies.

  At most 2 * workers jobs are submitted at a time, so when the pool breaks
  only those are suspects (returned); jobs never submitted stay in ``pending``.
  """
  pool = concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
  in_flight: dict[concurrent.futures.Future, Job] = {}
  suspects: list[Job] = []
  try:
    while (pending or in_flight) and not suspects:
      while pending and len(in_flight) < 2 * workers:
        job = pending.popleft()
        in_flight[pool.submit(run_job, job)] = job
      done, _ = concurrent.futures.wait(in_flight, return_when=concurrent.futures.FIRST_COMPLETED)
      for future in done:
        job = in_flight.pop(future)
        try:
          _record(results, bar, future.result())
        except BrokenProcessPool:
          suspects.append(job)
    if suspects:  # every job still in flight died with the pool
      suspects += [in_flight[f] for f in in_flight]
      pool.shutdown(wait=True)
  except BaseException:  # Ctrl-C included: drop queued work now; finished clips stay cached
    pool.shutdown(wait=False, cancel_futures=True)
    raise
  pool.shutdown()
  return sorted(suspects, key=lambda j: j.track_id)


def _isolated_child(worker: Callable[[Job], Any], job: Job, conn: Any) -> None:
  conn.send(worker(job))
  conn.close()


def _crash_reason(exitcode: int | None) -> str:
  """Why a worker died, as the report says it (SIGKILL is usually the OOM killer)."""
  if exitcode is not None and exitcode < 0:
    try:
      name = signal.Signals(-exitcode).name
    except ValueError:
      name = f'signal {-exitcode}'
    hint = ', out of memory?' if name == 'SIGKILL' else ''
    return f'{WORKER_CRASHED} (killed by {name}{hint})'
  return f'{WORKER_CRASHED} (exit code {exitcode})'


def _run_isolated(jobs: Sequence[Job], workers: int, ctx: Any,
                  results: Results, bar: Any) -> None:
  """Each job in a process of its own (up to ``workers`` at once); a job whose
  process dies is reported and cached as crashed, so a rerun does not retry it."""
  queue = collections.deque(jobs)
  running: dict[Any, tuple[Any, Job]] = {}  # reader -> (process, job)
  try:
    while queue or running:
      while queue and len(running) < workers:
        job = queue.popleft()
        reader, writer = ctx.Pipe(duplex=False)
        process = ctx.Process(target=_isolated_child, args=(run_job, job, writer),
                              daemon=True)
        process.start()
        writer.close()  # the reader then sees EOF when the child dies
        running[reader] = (process, job)
      for reader in connection.wait(list(running)):
        process, job = running.pop(reader)
        try:
          result = reader.recv()
        except (EOFError, OSError):
          result = None
        reader.close()
        process.join()
        if result is None:
          reason = _crash_reason(process.exitcode)
          _atomic_savez(job.cache_file, error=np.array(reason))
          result = (job.track_id, reason, {})
        _record(results, bar, result)
  finally:
    for process, _ in running.values():
      process.kill()
      process.join()


def run_jobs_beam(jobs: Sequence[Job], beam_runner: Any, beam_options: Any
                  ) -> Results:
  """The decode phase as an Apache Beam pipeline (one element per track).

  Workers write their results to the per-track cache, which therefore must be
  on storage every worker and this process see (a shared file system on a
  cluster); this process then reads the results from it. Outcomes that are not
  cached (unreadable paths, unexpected errors) are redone here, cheaply.
  """
  import apache_beam as beam  # pylint: disable=import-outside-toplevel
  with beam.Pipeline(runner=beam_runner, options=beam_options) as pipeline:
    _ = (pipeline | 'Tracks' >> beam.Create(list(jobs))
         | 'DecodeSpectrogram' >> beam.Map(run_job))
  results = {}
  for job in jobs:
    track_id, error, features = run_job(job)  # cache hits: no decoding
    results[track_id] = (error, features)
  return results
