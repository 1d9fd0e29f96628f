"""The per-track work of a build: decode -> clip window(s) -> spectrogram(s) (+ audio
features), run over local worker processes (cached per track) or as an Apache
Beam pipeline (results as pipeline elements, no shared file system needed).

Single-machine builds: every result, including a decode failure of an unchanged file, is cached as
an ``.npz`` keyed by the file's path, size, mtime and the settings, so a
crashed or interrupted build, rerun, redoes no finished work. A file whose
decoding kills its process (decoder segfault, OOM kill) is retried once in a
process of its own, then reported and cached as 'worker crashed while
decoding', so a rerun does not die on it again.

Beam builds (``run_jobs_beam``): workers read the audio through ``etils.epath``
(local or remote paths, e.g. gs://), and each track's outcome flows on as an
element: the small part (error, features) to JSON lines this process reads
back for the split, the spectrogram to text files that the TFDS write
pipeline reads (data_prep.writer.beam_examples), both in a work folder that
may be remote too. No local cache is involved.
"""

from __future__ import annotations

import base64
import collections
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import io
import json
import multiprocessing
import os
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import connection
from typing import Any

import numpy as np
from etils import epath
from tqdm import tqdm

from crnn_jax.core import audio, audio_features, malloc, processes, storage

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
  """The --windows setting, normalised: 'all' or a count >= 1; ValueError otherwise."""
  text = str(windows).strip().lower()
  if text == 'all' or (text.isdigit() and int(text) >= 1):
    return text if text == 'all' else str(int(text))
  raise ValueError(f"--windows {windows!r}: use 'all' (every non-overlapping window of a track) "
                   'or a number of windows spread over each track (1: one window, the default)')


def cache_key(path: str, clip: audio.ClipSettings, estimate_features: bool,
              windows: str = SINGLE) -> str | None:
  """Identifies one track's work product; None when the file cannot be stat'ed."""
  try:
    if storage.is_remote(path):
      st = epath.Path(path).stat()
      size, mtime_ns, path = st.length, int(st.mtime * 1e9), os.fspath(path)
    else:
      st = os.stat(path)
      size, mtime_ns, path = st.st_size, st.st_mtime_ns, os.path.abspath(path)
  except (OSError, ValueError):
    return None
  key = {'path': path, 'size': size, 'mtime_ns': mtime_ns,
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
  with storage.atomic_write(path, 'wb') as f:
    np.savez(f, **arrays)


def track_windows(y: np.ndarray, clip: audio.ClipSettings, windows: str) -> list[np.ndarray]:
  """The windows a data set stores of one decoded track (several: 'all' or N)."""
  if windows == 'all':
    return list(audio.sliding_windows(y, clip.seconds, clip.min_seconds))
  return audio.spread_windows(y, int(windows), clip.seconds, clip.min_seconds)


def compute_track(path: str, clip: audio.ClipSettings, estimate_features: bool,
                  windows: str = SINGLE) -> tuple[np.ndarray, dict[str, float]]:
  """Decode + window(s) + spectrogram(s) (+ audio features). Raises AudioError.

  The image is (128, frames) for one window, (windows, 128, frames) otherwise;
  silent windows are left out. One window decodes only what the clip needs
  (audio.load_clip), so memory does not grow with the file's length; several
  need the whole track. Feature estimates stream over the file.
  """
  with _local_file(path) as local:
    if windows == SINGLE:
      found = [audio.load_clip(local, clip.seconds, clip.position, clip.min_seconds)]
    else:
      found = track_windows(audio.load_audio(local), clip, windows)
    audible = [w for w in found if not audio.is_silent(w)]
    if not audible:
      raise audio.AudioError('silent clip (peak below -80 dBFS)')
    features = audio_features.estimate_file(local) if estimate_features else {}
  images = [audio.spectrogram_image(w, clip.seconds) for w in audible]
  return (images[0] if windows == SINGLE else np.stack(images)), features


@contextlib.contextmanager
def _local_file(path: str) -> Iterator[str]:
  """``path`` itself, or a remote file's bytes in a local temporary file (the
  decoders take file names); same suffix, so formats are recognised alike."""
  if not storage.is_remote(path):
    yield path
    return
  with tempfile.NamedTemporaryFile(suffix=os.path.splitext(path)[1]) as tmp:
    tmp.write(epath.Path(path).read_bytes())
    tmp.flush()
    yield tmp.name


def _unreadable(path: str) -> str | None:
  """Why ``path`` cannot be read, or None."""
  if storage.is_remote(path):
    try:
      return None if epath.Path(path).is_file() else 'unreadable path: no such file'
    except Exception as e:  # noqa: BLE001  remote file systems raise their own types
      return f'unreadable path: {type(e).__name__}: {str(e)[:160]}'
  reason = audio.unreadable_reason(path)  # an empty file is a cacheable AudioError
  return reason if reason and reason.startswith('unreadable path') else None


@dataclasses.dataclass(frozen=True)
class Outcome:
  """One track's result. ``cacheable``: the same file would give it again
  (decoded, or undecodable audio), unlike a missing file or an odd error."""
  track_id: str
  error: str | None
  features: dict[str, float]
  image: np.ndarray | None
  cacheable: bool


def decode_job(job: Job) -> Outcome:
  """The work of one track, without any cache."""
  reason = _unreadable(job.path)
  if reason:
    return Outcome(job.track_id, reason, {}, None, False)
  try:
    image, features = compute_track(job.path, job.clip, job.estimate_features, job.windows)
  except audio.AudioError as e:
    return Outcome(job.track_id, str(e), {}, None, True)
  except Exception as e:  # noqa: BLE001  never fatal; not cached (may be transient)
    return Outcome(job.track_id, f'unexpected error: {type(e).__name__}: {str(e)[:200]}', {},
                   None, False)
  return Outcome(job.track_id, None, features, image, True)


def run_job(job: Job) -> tuple[str, str | None, dict[str, float]]:
  """Worker entry point of local builds: (track_id, error reason or None, features).

  Results, including decode failures of an unchanged file, are cached, so a
  rerun neither decodes again nor re-tries a known-bad file.
  """
  if os.path.exists(job.cache_file):
    try:
      return read_cached(job.track_id, job.cache_file)
    except Exception:  # noqa: BLE001, S110  a damaged cache file is recomputed
      pass
  outcome = decode_job(job)
  if outcome.cacheable and outcome.error:
    _atomic_savez(job.cache_file, error=np.array(outcome.error))
  elif outcome.cacheable:
    names = sorted(outcome.features)
    _atomic_savez(job.cache_file, image=outcome.image, feature_names=np.array(names, dtype=str),
                  feature_values=np.array([outcome.features[n] for n in names],
                                          dtype=np.float64))
  return outcome.track_id, outcome.error, outcome.features


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


def compile_librosa_here(clip: audio.ClipSettings, estimate_features: bool) -> None:
  """Runs a clip's librosa work once in this process, before any worker starts.

  librosa's numba functions compile on first use (some on import) into an
  on-disk cache (its package's ``__pycache__``, or ``NUMBA_CACHE_DIR``), and
  numba takes no lock: workers compiling the same function at once, as every
  worker of a fresh install's first parallel build would, can leave a cache
  that crashes the processes that load it later (segfaults in librosa's
  gufuncs). Compiled here first, the workers only load it. Costs ~2 s once the
  cache exists (imports, loading), a few more the first time.
  """
  noise = np.random.default_rng(0).normal(0.0, 0.1, audio.clip_samples(clip.seconds))
  noise = noise.astype(np.float32)
  audio.spectrogram_image(noise, clip.seconds)
  if estimate_features:
    audio_features.estimate(noise)


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
    compile_librosa_here(jobs[0].clip, any(job.estimate_features for job in jobs))
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
  the job killed the build (segfault, OOM kill), so a rerun runs it isolated.
  This process keeps freed memory for the next clip, as workers do (core.malloc)."""
  if jobs:
    malloc.keep_freed_memory()
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
  pool = concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx,
                                                initializer=_start_worker)
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


def _start_worker() -> None:
  """First thing in every decoding process: it dies with the build (even a
  build killed by SIGKILL) and keeps freed memory for the next clip."""
  processes.exit_with_parent()
  malloc.keep_freed_memory()


def _isolated_child(worker: Callable[[Job], Any], job: Job, conn: Any) -> None:
  _start_worker()
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


# --------------------------------------------------------------------------
# Apache Beam: results as pipeline elements
# --------------------------------------------------------------------------
OUTCOMES = 'outcomes'  # JSON lines: track_id, error, features, windows (stored)
IMAGES = 'images'  # text lines: one encoded (track_id, spectrogram) per decoded track


def image_record(track_id: str, image: np.ndarray) -> str:
  """A decoded track's spectrogram as one line of text: a compressed .npz of
  the image and its id, base64 (text files need no extra Beam dependency)."""
  buffer = io.BytesIO()
  np.savez_compressed(buffer, track_id=np.array(track_id), image=image)
  return base64.b64encode(buffer.getvalue()).decode('ascii')


def read_image_record(record: str) -> tuple[str, np.ndarray]:
  with np.load(io.BytesIO(base64.b64decode(record))) as z:
    return str(z['track_id']), np.asarray(z['image'], dtype=np.uint8)


def images_pattern(work_dir: str) -> str:
  """The files ``run_jobs_beam`` writes the spectrograms to."""
  return os.fspath(epath.Path(work_dir) / f'{IMAGES}*')


def _outcome_line(outcome: Outcome) -> str:
  image = outcome.image
  windows = 0 if image is None else (len(image) if image.ndim == 3 else 1)
  return json.dumps({'track_id': outcome.track_id, 'error': outcome.error,
                     'features': outcome.features, 'windows': windows})


def run_jobs_beam(jobs: Sequence[Job], beam_runner: Any, beam_options: Any, work_dir: str
                  ) -> tuple[Results, dict[str, int]]:
  """The decode phase as an Apache Beam pipeline (one element per track).

  Outcomes flow as elements into two sinks under ``work_dir`` (any path
  Beam's file systems and etils.epath take, e.g. gs://): JSON lines of
  (track_id, error, features, windows stored), which this process reads
  back, and text files of the spectrograms (``image_record``), which the TFDS write reads
  (``images_pattern``). Returns the results and each decoded track's count
  of stored windows.
  """
  import apache_beam as beam  # pylint: disable=import-outside-toplevel  # optional extra
  work = epath.Path(work_dir)
  if work.exists():  # a previous, unfinished build's files
    work.rmtree()
  work.mkdir(parents=True)
  with beam.Pipeline(runner=beam_runner, options=beam_options) as pipeline:
    outcomes = (pipeline | 'Tracks' >> beam.Create(list(jobs))
                | 'DecodeSpectrogram' >> beam.Map(decode_job))
    _ = (outcomes | 'Summaries' >> beam.Map(_outcome_line)
         | 'WriteSummaries' >> beam.io.WriteToText(os.fspath(work / OUTCOMES),
                                                   file_name_suffix='.jsonl'))
    _ = (outcomes | 'Decoded' >> beam.Filter(lambda o: o.image is not None)
         | 'EncodeImages' >> beam.Map(lambda o: image_record(o.track_id, o.image))
         | 'WriteImages' >> beam.io.WriteToText(os.fspath(work / IMAGES)))
  results: Results = {}
  windows: dict[str, int] = {}
  for path in sorted(work.glob(f'{OUTCOMES}*')):
    for line in path.read_text().splitlines():
      if line.strip():
        d = json.loads(line)
        results[d['track_id']] = (d['error'], d['features'])
        windows[d['track_id']] = d['windows']
  return results, windows
