"""One command from a music source to a TFDS data set: ``build_dataset``.

Sources: a local library folder (one sub-folder per label, the GTZAN layout)
or a manifest CSV (``data_prep.manifest``). For every track:

  decode -> clip window -> the reference's spectrogram (crnn_jax.audio)
  [+ tabular features estimated from the audio (crnn_jax.audio_features)]

in parallel worker processes, each result cached per track as an ``.npz`` under
``DIR/<name>_cache`` (keyed by path, size, mtime and settings), so a crashed or
interrupted run, rerun with the same command, redoes no finished work and
writes the same data set. Then the tracks are split (64/16/20, stratified by
label and grouped by artist by default), the training split's tabular
statistics computed, and the set written with ``tfds_builder.write_dataset``.

Bad input never stops a run: every skipped file or row is listed with its
reason in ``DIR/<name>_report.csv`` and counted in the printed summary. A file
whose decoding kills its process (decoder segfault, OOM kill) is retried once
in a process of its own, then reported and cached as 'worker crashed while
decoding' like any undecodable file, so a rerun does not die on it again.

Artist ids: a folder source has no artist information, so each file is its own
artist (artist id = track id = the file's path relative to the folder, without
extension); grouping by artist then reduces to a stratified per-track split,
which the metadata ('split' -> 'grouped_by') and a warning in the summary say.
Artists are grouped by name without case or surrounding spaces, and a
';'-joined list of artists by its first name ('Metallica;Lou Reed' goes with
'metallica').
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import csv
import dataclasses
import glob
import hashlib
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np

from crnn_jax import audio

AUDIO_EXTENSIONS = ('.mp3', '.ogg', '.oga', '.flac', '.wav')
SPLITS = ('train', 'validation', 'test')
CACHE_VERSION = 2  # bump when what a cache file holds or means changes
# A clip whose peak stays below this is treated as silence (digital silence
# decodes to tiny non-zero values through some codecs).
SILENCE_PEAK = 1e-4  # -80 dBFS
CATEGORICAL = {'explicit': 2, 'key': 12, 'mode': 2}
# SPEC.md section 3: the metal model's 16 tabular columns, in vector order.
REFERENCE_TABULAR = (
    'explicit', 'key', 'mode', 'acousticness', 'danceability', 'duration_ms', 'energy',
    'instrumentalness', 'liveness', 'loudness', 'num_sections', 'popularity', 'speechiness',
    'tempo', 'time_signature', 'valence')


@dataclasses.dataclass
class Track:
  """One input track, before decoding. ``tabular`` holds raw source values
  (strings from a CSV, or numbers), converted and checked later."""
  track_id: str
  path: str
  label: str
  labels: tuple[str, ...]
  artist_id: str
  origin: str  # where it came from, for the report: a path or 'file.csv:row 7'
  tabular: dict[str, Any] = dataclasses.field(default_factory=dict)
  artist_known: bool = False  # False: artist_id is the track id (no artist information)


@dataclasses.dataclass
class Problem:
  """A skipped input: one row of the bad-input report."""
  origin: str
  track_id: str
  reason: str

  @property
  def kind(self) -> str:
    """The reason without its details, to count skips by kind."""
    return self.reason.split(':')[0].split(' (')[0].strip()


@dataclasses.dataclass
class Source:
  """What a source reader found: tracks, problems, and its tabular columns."""
  tracks: list[Track]
  problems: list[Problem]
  tabular_columns: tuple[str, ...] = ()
  description: str = ''


# ---------------------------------------------------------------- folder source

def read_folder(root: str) -> Source:
  """A GTZAN-layout library: ``root/<label>/**/<file>.{mp3,ogg,flac,wav}``.

  Track id = path relative to root without extension (so 'rock/a.mp3' and
  'rock/a.wav' collide and the second is reported as a duplicate); artist id
  = track id (no artist information in a folder).
  """
  root = os.path.abspath(root)
  tracks, problems = [], []
  try:
    entries = sorted(os.listdir(root))
  except OSError as e:
    raise ValueError(f'cannot read input folder {root!r}: {e.strerror or e}') from None
  for entry in entries:
    full = os.path.join(root, entry)
    if not os.path.isdir(full):
      problems.append(Problem(full, '', 'not in a label folder: files must sit in '
                              '<input>/<label>/'))
      continue
    label = entry

    def on_error(e: OSError, full: str = full) -> None:
      problems.append(Problem(e.filename or full, '', f'unreadable path: {e.strerror or e}'))

    for dirpath, dirnames, filenames in os.walk(full, onerror=on_error):
      dirnames.sort()
      for fname in sorted(filenames):
        path = os.path.join(dirpath, fname)
        rel = os.path.relpath(path, root)
        stem, ext = os.path.splitext(rel)
        if ext.lower() not in AUDIO_EXTENSIONS:
          problems.append(Problem(path, '', f'not an audio file extension ({ext or "none"}): '
                                  f'expected one of {", ".join(AUDIO_EXTENSIONS)}'))
          continue
        track_id = stem.replace(os.sep, '/')
        tracks.append(Track(track_id=track_id, path=path, label=label, labels=(label,),
                            artist_id=track_id, origin=path))
  return Source(tracks, problems, (), f'folder:{root}')


def read_source(input_path: str, **manifest_kwargs: Any) -> Source:
  """A folder or a manifest CSV, by what ``input_path`` is."""
  if os.path.isdir(input_path):
    return read_folder(input_path)
  if os.path.isfile(input_path):
    from data_prep import manifest  # pylint: disable=import-outside-toplevel
    return manifest.read_manifest(input_path, **manifest_kwargs)
  raise ValueError(f'input {input_path!r} is neither a folder nor a CSV file')


# ---------------------------------------------------------------- per-track work

@dataclasses.dataclass(frozen=True)
class Job:
  track_id: str
  path: str
  cache_file: str
  clip: audio.ClipSettings
  estimate_features: bool


def cache_key(path: str, clip: audio.ClipSettings, estimate_features: bool) -> str | None:
  """Identifies one track's work product; None when the file cannot be stat'ed."""
  try:
    st = os.stat(path)
  except OSError:
    return None
  key = {'path': os.path.abspath(path), 'size': st.st_size, 'mtime_ns': st.st_mtime_ns,
         'clip': dataclasses.asdict(clip), 'features': estimate_features, 'version': CACHE_VERSION}
  if estimate_features:  # estimates of longer files depend on how much is analysed
    from crnn_jax import audio_features  # pylint: disable=import-outside-toplevel
    key['analysis_seconds'] = audio_features.MAX_ANALYSIS_SECONDS
  blob = json.dumps(key, sort_keys=True)
  return hashlib.sha1(blob.encode()).hexdigest()


def _atomic_savez(path: str, **arrays: Any) -> None:
  if not path:  # no cache for a file that could not be stat'ed
    return
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f'{path}.{os.getpid()}.tmp'
  with open(tmp, 'wb') as f:
    np.savez(f, **arrays)
  os.replace(tmp, path)


def compute_track(path: str, clip: audio.ClipSettings, estimate_features: bool
                  ) -> tuple[np.ndarray, dict[str, float]]:
  """Decode + window + spectrogram (+ audio features). Raises AudioError."""
  y = audio.load_audio(path)  # also rejects truncated MP3s
  window = audio.fixed_window(y, clip.seconds, clip.position, clip.min_seconds)
  if float(np.max(np.abs(window))) < SILENCE_PEAK:
    raise audio.AudioError('silent clip (peak below -80 dBFS)')
  image = audio.spectrogram_image(window, clip.seconds)
  features: dict[str, float] = {}
  if estimate_features:
    from crnn_jax import audio_features  # pylint: disable=import-outside-toplevel
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
    image, features = compute_track(job.path, job.clip, job.estimate_features)
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


def load_image(cache_file: str) -> np.ndarray:
  with np.load(cache_file) as z:
    return np.asarray(z['image'], dtype=np.uint8)


DEFAULT_CLIP = audio.ClipSettings()  # the reference: first 30 s, >= 5 s
MIN_POOL_JOBS = 48  # fewer clips to compute than this: decode in this process
# One worker process per core, each single-threaded: no BLAS/OpenMP oversubscription.
_ONE_THREAD = {'OMP_NUM_THREADS': '1', 'OPENBLAS_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1',
               'NUMBA_NUM_THREADS': '1'}


def available_cores() -> int:
  """Cores this process may run on (respects affinity / container CPU sets)."""
  try:
    return max(1, len(os.sched_getaffinity(0)))
  except AttributeError:  # not on Linux
    return os.cpu_count() or 1


def run_jobs(jobs: Sequence[Job], workers: int, progress: bool = True
             ) -> dict[str, tuple[str | None, dict[str, float]]]:
  """All jobs, over ``workers`` processes (spawned: safe when JAX is loaded)."""
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  results: dict[str, tuple[str | None, dict[str, float]]] = {}
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
              results: dict[str, tuple[str | None, dict[str, float]]], bar: Any) -> None:
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


WORKER_CRASHED = 'worker crashed while decoding'


def _record(results: dict[str, tuple[str | None, dict[str, float]]], bar: Any,
            result: tuple[str, str | None, dict[str, float]]) -> None:
  track_id, error, features = result
  results[track_id] = (error, features)
  bar.update()


def _pool_pass(pending: collections.deque[Job], workers: int, ctx: Any,
               results: dict[str, tuple[str | None, dict[str, float]]], bar: Any) -> list[Job]:
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
    import signal  # pylint: disable=import-outside-toplevel
    try:
      name = signal.Signals(-exitcode).name
    except ValueError:
      name = f'signal {-exitcode}'
    hint = ', out of memory?' if name == 'SIGKILL' else ''
    return f'{WORKER_CRASHED} (killed by {name}{hint})'
  return f'{WORKER_CRASHED} (exit code {exitcode})'


def _run_isolated(jobs: Sequence[Job], workers: int, ctx: Any,
                  results: dict[str, tuple[str | None, dict[str, float]]], bar: Any) -> None:
  """Each job in a process of its own (up to ``workers`` at once); a job whose
  process dies is reported and cached as crashed, so a rerun does not retry it."""
  from multiprocessing import connection  # pylint: disable=import-outside-toplevel
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
                  ) -> dict[str, tuple[str | None, dict[str, float]]]:
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


def make_example(item: tuple[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
  """(key, small picklable description) -> (key, TFDS example); the image is
  read from the cache here, in the writer (a Beam worker on a cluster)."""
  key, d = item
  label_set = np.zeros(d['num_classes'], np.uint8)
  label_set[list(d['label_set'])] = 1
  return key, {
      'spectrogram': load_image(d['cache_file']),
      'tabular': np.asarray(d['tabular'], np.float32),
      'label': int(d['label']),
      'label_set': label_set,
      'track_id': d['track_id'],
      'artist_id': d['artist_id'],
  }


def _beam_examples(split: str, items: list[tuple[str, dict[str, Any]]]) -> Any:
  import apache_beam as beam  # pylint: disable=import-outside-toplevel
  return (f'Create_{split}' >> beam.Create(items)
          | f'Example_{split}' >> beam.Map(make_example))


# ---------------------------------------------------------------- splits

def artist_key(track: Track) -> str:
  """The group a track is split with: its normalised first artist, else itself."""
  if track.artist_known:
    name = track.artist_id.split(';')[0].strip().casefold()
    if name:
      return 'artist:' + name
  return 'track:' + track.track_id


def grouping(tracks: Sequence[Track], group_by_artist: bool) -> str:
  """What the split was really grouped by, for the metadata and the summary."""
  if not group_by_artist:
    return 'track'
  unknown = sum(1 for t in tracks if not artist_key(t).startswith('artist:'))
  if not unknown:
    return 'artist'
  if unknown == len(tracks):
    return 'track (no artist information)'
  return (f'artist ({unknown} of {len(tracks)} tracks without artist information, '
          'each its own group)')


def assign_splits(labels: Sequence[int], groups: Sequence[str],
                  fractions: Sequence[float] = (0.64, 0.16, 0.20), seed: int = 42,
                  group_by_artist: bool = True, stratify: bool = True) -> list[str]:
  """Split name for every track.

  Default: whole artist groups are placed greedily (largest first, ties in
  seeded random order) into the split that most needs the group's labels
  relative to its target share, so labels are stratified and no artist is in
  two splits. ``group_by_artist=False, stratify=False`` is the reference's
  per-track random split: ceil(20%) test, then floor(20%) of the rest as
  validation (sklearn's and fastai's rounding).
  """
  n = len(labels)
  frac = np.asarray(fractions, dtype=np.float64)
  if frac.shape != (3,) or np.any(frac < 0) or not math.isclose(frac.sum(), 1.0, abs_tol=1e-6):
    raise ValueError(f'split fractions must be 3 non-negative numbers summing to 1, got {fractions}')
  rng = np.random.default_rng(seed)
  out = [''] * n
  if not group_by_artist and not stratify:
    perm = rng.permutation(n)
    n_test = math.ceil(frac[2] * n)
    rest = perm[n_test:]
    # 0.16 / 0.8 is 0.19999999999999998 in floats: rounded, fastai's int(0.2 * n).
    n_val = int(round(frac[1] / max(frac[0] + frac[1], 1e-12), 9) * len(rest))
    for i in perm[:n_test]:
      out[i] = 'test'
    for i in rest[:n_val]:
      out[i] = 'validation'
    for i in rest[n_val:]:
      out[i] = 'train'
    return out
  keys = list(groups) if group_by_artist else [str(i) for i in range(n)]
  strata = list(labels) if stratify else [0] * n
  members: dict[str, list[int]] = collections.defaultdict(list)
  for i, k in enumerate(keys):
    members[k].append(i)
  names = sorted(members)
  order = rng.permutation(len(names))
  ordered = sorted((names[j] for j in order), key=lambda g: -len(members[g]))  # stable
  num_strata = max(strata) + 1 if n else 1
  totals = np.bincount(strata, minlength=num_strata).astype(np.float64)
  target = frac[:, None] * totals[None, :]
  current = np.zeros_like(target)
  for g in ordered:
    counts = np.bincount([strata[i] for i in members[g]], minlength=num_strata)
    need = ((target - current) * counts[None, :] / np.maximum(totals, 1)[None, :]).sum(axis=1)
    need[frac == 0] = -np.inf
    s = int(np.argmax(need))
    current[s] += counts
    for i in members[g]:
      out[i] = SPLITS[s]
  # Tiny sets: a split with a non-zero share must not be empty (TFDS cannot
  # write an empty split); move it the smallest group of the fullest split.
  placed = {g: out[members[g][0]] for g in ordered}
  for s, f in zip(SPLITS, frac):
    if f > 0 and s not in placed.values():
      donors = collections.Counter(placed.values())
      donor = max(donors, key=lambda d: (donors[d], -SPLITS.index(d)))
      if donors[donor] < 2:
        raise ValueError(f'too few {"artists" if group_by_artist else "tracks"} '
                         f'({len(ordered)}) to fill the three splits {tuple(fractions)}')
      g = next(g for g in reversed(ordered) if placed[g] == donor)
      placed[g] = s
      for i in members[g]:
        out[i] = s
  return out


# ---------------------------------------------------------------- tabular

def to_number(name: str, value: Any) -> float | None:
  """A raw source value in Spotify's convention -> the stored number.

  Categorical columns become 1-based codes as the reference fed them:
  explicit False/True -> 1/2, key 0..11 -> 1..12 (-1, 'no key', is missing),
  mode 0/1 -> 1/2. None for missing; ValueError for non-numeric text.
  """
  if value is None or (isinstance(value, str) and value.strip() == ''):
    return None
  original = value.strip() if isinstance(value, str) else value
  if isinstance(value, str):
    text = value.strip()
    if name == 'explicit' and text.lower() in ('true', 'false'):
      value = text.lower() == 'true'
    else:
      try:
        value = float(text)
      except ValueError:
        raise ValueError(f'non-numeric {name}: {text[:40]!r}') from None
  x = float(value)
  if not math.isfinite(x):
    return None
  if name in CATEGORICAL:
    code = round(x) + 1
    if name == 'key' and code == 0:
      return None
    if not 1 <= code <= CATEGORICAL[name] or abs(x - round(x)) > 1e-6:
      raise ValueError(f'{name} {original} out of range (expected 0..{CATEGORICAL[name] - 1})')
    return float(code)
  return x


def tabular_stats(rows: np.ndarray, names: Sequence[str]) -> tuple[list[float], list[float]]:
  """Training-split mean and sample std; categorical columns get 0 and 1."""
  mean, std = [], []
  for j, name in enumerate(names):
    if name in CATEGORICAL:
      mean.append(0.0)
      std.append(1.0)
      continue
    col = rows[:, j].astype(np.float64) if len(rows) else np.zeros(0)
    mean.append(float(col.mean()) if len(col) else 0.0)
    std.append(float(col.std(ddof=1)) if len(col) > 1 else 1.0)
  return mean, std


# ---------------------------------------------------------------- the build

def _write_report(path: str, problems: Sequence[Problem]) -> None:
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  tmp = path + '.tmp'
  with open(tmp, 'w', newline='', encoding='utf-8') as f:
    w = csv.writer(f)
    w.writerow(['origin', 'track_id', 'reason'])
    for p in problems:
      w.writerow([p.origin, p.track_id, p.reason])
  os.replace(tmp, path)


def _existing_fingerprint(version_dir: str) -> str | None:
  try:
    with open(os.path.join(version_dir, 'metadata.json'), encoding='utf-8') as f:
      return json.load(f).get('fingerprint')
  except (OSError, ValueError):
    return None


def build_dataset(
    input_path: str,
    data_dir: str,
    name: str,
    *,
    clip: audio.ClipSettings = DEFAULT_CLIP,
    split: Sequence[float] = (0.64, 0.16, 0.20),
    group_by_artist: bool = True,
    stratify: bool = True,
    seed: int = 42,
    workers: int | None = None,
    class_names: Sequence[str] | None = None,
    label_map: Mapping[str, str | None] | None = None,
    tabular: str = 'auto',
    manifest_options: Mapping[str, Any] | None = None,
    progress: bool = True,
    verbose: bool = True,
    beam_runner: Any = None,
    beam_options: Any = None,
) -> dict[str, Any]:
  """Prepares ``data_dir/name/<version>`` from a folder or manifest CSV.

  clip: window length/position and the minimum length worth padding.
  class_names: fixed class order; labels outside it are reported. Default:
    every (mapped) label seen, sorted alphabetically as the reference.
  label_map: raw label -> class name, or None to drop (e.g. metal's 32 query
    tags -> 20 classes); unmapped labels pass through.
  tabular: 'none' (audio only); 'source' (the manifest's tabular columns);
    'audio' (the reference's 16 columns: the source's value where present,
    else estimated from the audio, columns with neither dropped); 'auto'
    ('source' when the source has tabular columns, else 'none').
  beam_runner / beam_options: decode and write through Apache Beam instead of
    local processes (e.g. 'DirectRunner'; on a cluster, its runner and
    options, with data_dir and the audio on storage all workers see).
  Returns the summary (also printed when verbose).
  """
  t0 = time.time()
  data_dir = os.path.abspath(data_dir)
  from data_prep import tfds_builder  # pylint: disable=import-outside-toplevel
  tfds_builder._class_name(name)  # pylint: disable=protected-access  # fail fast on a bad name
  if tabular not in ('auto', 'none', 'source', 'audio'):
    raise ValueError(f"tabular must be 'auto', 'none', 'source' or 'audio', got {tabular!r}")
  source = read_source(input_path, **dict(manifest_options or {}))
  problems: list[Problem] = list(source.problems)

  # Labels: map, check, de-duplicate.
  label_map = dict(label_map or {})

  def mapped(label: str) -> str | None:
    return label_map.get(label, label)

  known = set(class_names) if class_names else None
  tracks: list[Track] = []
  seen: set[str] = set()
  for t in source.tracks:
    if t.track_id in seen:
      problems.append(Problem(t.origin, t.track_id, 'duplicate track id'))
      continue
    label = mapped(t.label)
    if label is None:
      problems.append(Problem(t.origin, t.track_id, f'dropped label: {t.label!r} is mapped to no class'))
      continue
    if known is not None and label not in known:
      problems.append(Problem(t.origin, t.track_id, f'unknown label: {label!r}'))
      continue
    seen.add(t.track_id)
    extra = [m for m in (mapped(x) for x in t.labels) if m is not None]
    labels = tuple(dict.fromkeys([label] + [m for m in extra if known is None or m in known]))
    tracks.append(dataclasses.replace(t, label=label, labels=labels))

  # Tabular columns; a column empty in every row (e.g. Spotify's refused
  # audio features) is no column at all, not a reason to drop every row.
  empty_columns = [c for c in source.tabular_columns
                   if all(str(t.tabular.get(c, '')).strip() == '' for t in tracks)]
  if empty_columns:
    source = dataclasses.replace(source, tabular_columns=tuple(
        c for c in source.tabular_columns if c not in empty_columns))
    if verbose:
      print(f'tabular columns empty in every row, left out: {", ".join(empty_columns)}')
  mode = tabular
  if mode == 'auto':
    mode = 'source' if source.tabular_columns else 'none'
  estimate = mode == 'audio'
  if mode == 'none':
    tab_names: list[str] = []
  elif mode == 'source':
    tab_names = list(source.tabular_columns)
  else:
    from crnn_jax import audio_features  # pylint: disable=import-outside-toplevel
    tab_names = [c for c in REFERENCE_TABULAR
                 if c in audio_features.ESTIMATED or c in source.tabular_columns]
    tab_names += [c for c in source.tabular_columns if c not in tab_names]

  # Decode (cached, parallel).
  cache_dir = os.path.join(data_dir, f'{name}_cache')
  jobs: list[Job] = []
  cache_files: dict[str, str] = {}
  for t in tracks:
    key = cache_key(t.path, clip, estimate)
    cache_file = (os.path.join(cache_dir, key[:2], key + '.npz') if key
                  else os.path.join(cache_dir, 'unstattable.npz'))
    cache_files[t.track_id] = cache_file
    jobs.append(Job(t.track_id, t.path, cache_file if key else '', clip, estimate))
  workers = int(workers or available_cores())
  t_decode = time.time()
  from_cache = sum(1 for j in jobs if j.cache_file and os.path.exists(j.cache_file))
  if beam_runner is None and beam_options is None:
    results = run_jobs(jobs, workers, progress)
  else:
    results = run_jobs_beam(jobs, beam_runner, beam_options)
  decode_seconds = time.time() - t_decode

  good: list[Track] = []
  rows: list[list[float]] = []
  for t in tracks:
    error, features = results[t.track_id]
    if error:
      problems.append(Problem(t.origin, t.track_id, error))
      continue
    row, bad = [], None
    for col in tab_names:
      try:
        x = to_number(col, t.tabular.get(col))
      except ValueError as e:
        x, bad = None, str(e)
      if x is None and col in features:
        x = to_number(col, features[col])
      if x is None:
        bad = bad or f'missing tabular value: {col}'
        break
      row.append(x)
    if bad:
      problems.append(Problem(t.origin, t.track_id, bad))
      continue
    good.append(t)
    rows.append(row)

  report_path = os.path.join(data_dir, f'{name}_report.csv')
  if not good:
    _write_report(report_path, problems)
    raise ValueError(f'no usable tracks in {input_path!r} ({len(problems)} skipped); '
                     f'see {report_path}')
  names = list(class_names) if class_names else sorted({t.label for t in good})
  index = {c: i for i, c in enumerate(names)}
  good = [dataclasses.replace(t, labels=tuple(x for x in t.labels if x in index)) for t in good]
  label_idx = [index[t.label] for t in good]
  splits = assign_splits(label_idx, [artist_key(t) for t in good], split, seed,
                         group_by_artist, stratify)
  grouped_by = grouping(good, group_by_artist)
  empty = [s for s, f in zip(SPLITS, split) if f > 0 and s not in splits]
  if empty:
    raise ValueError(f'splits {empty} would be empty with {len(good)} usable tracks: add data '
                     'or change the split fractions')
  tab = np.asarray(rows, dtype=np.float32).reshape(len(good), len(tab_names))
  train_rows = tab[[i for i, s in enumerate(splits) if s == 'train']]
  mean, std = tabular_stats(train_rows, tab_names)

  problems.sort(key=lambda p: (p.origin, p.track_id, p.reason))
  _write_report(report_path, problems)

  fingerprint_items = [
      [t.track_id, os.path.basename(cache_files[t.track_id]), s, t.label, list(t.labels),
       t.artist_id, [float(v) for v in r]]
      for t, s, r in sorted(zip(good, splits, tab.tolist()), key=lambda x: x[0].track_id)]
  metadata = {
      'class_names': names,
      'tabular_names': tab_names,
      'tabular_categorical': {c: CATEGORICAL[c] for c in tab_names if c in CATEGORICAL},
      'tabular_mean': mean,
      'tabular_std': std,
      'clip': dataclasses.asdict(clip),
      'source': source.description,
      'report': report_path,
      'split': {'fractions': [float(f) for f in split], 'group_by_artist': group_by_artist,
                'grouped_by': grouped_by, 'stratify': stratify, 'seed': seed},
      'label_map': label_map,
  }
  metadata['fingerprint'] = hashlib.sha256(json.dumps(
      [fingerprint_items, {k: v for k, v in metadata.items() if k not in ('report', 'source')}],
      sort_keys=True).encode()).hexdigest()

  version_dir = os.path.join(data_dir, name, tfds_builder.VERSION)
  reused = _existing_fingerprint(version_dir) == metadata['fingerprint']
  if not reused:
    for leftover in glob.glob(os.path.join(data_dir, name, f'incomplete.*{tfds_builder.VERSION}')):
      shutil.rmtree(leftover, ignore_errors=True)  # a write killed midway (SIGKILL)
    if os.path.isdir(version_dir):
      if verbose:
        print(f'replacing {version_dir}: its inputs or settings differ from this build')
      shutil.rmtree(version_dir)
    by_split: dict[str, list[int]] = {s: [] for s in SPLITS}
    for i, s in enumerate(splits):
      by_split[s].append(i)

    def items(indices: list[int]) -> list[tuple[str, dict[str, Any]]]:
      out = []
      for i in indices:
        t = good[i]
        out.append((t.track_id, {
            'cache_file': cache_files[t.track_id], 'tabular': tab[i].tolist(),
            'label': label_idx[i], 'label_set': sorted(index[x] for x in t.labels),
            'num_classes': len(names), 'track_id': t.track_id, 'artist_id': t.artist_id}))
      return out

    if beam_runner is None and beam_options is None:
      split_examples = {s: (lambda ix=ix: map(make_example, items(ix)))
                        for s, ix in by_split.items()}
    else:
      split_examples = {s: (lambda s=s, ix=ix: _beam_examples(s, items(ix)))
                        for s, ix in by_split.items()}
    from tensorflow_datasets.core.utils import tqdm_utils  # pylint: disable=import-outside-toplevel
    bars_were_on = tqdm_utils._active  # pylint: disable=protected-access
    tqdm_utils.display_progress_bar(bars_were_on and progress)
    try:
      tfds_builder.write_dataset(
          name, data_dir, names, len(tab_names), split_examples,
          metadata, description=f'Prepared by data_prep from {source.description}',
          frames=clip.frames(), beam_runner=beam_runner, beam_options=beam_options)
    finally:
      tqdm_utils.display_progress_bar(bars_were_on)

  counts = {s: collections.Counter() for s in SPLITS}
  for t, s in zip(good, splits):
    counts[s][t.label] += 1
  summary = {
      'dataset': os.path.join(data_dir, name),
      'name': name,
      'classes': names,
      'clips': {s: {c: counts[s][c] for c in names} for s in SPLITS},
      'clips_per_split': {s: sum(counts[s].values()) for s in SPLITS},
      'skipped': len(problems),
      'skipped_by_reason': dict(sorted(collections.Counter(p.kind for p in problems).items())),
      'report': report_path,
      'tabular_names': tab_names,
      'workers': workers if workers > 1 and len(jobs) - from_cache >= MIN_POOL_JOBS else 1,
      'runner': ('local' if beam_runner is None and beam_options is None
                 else f'beam:{beam_runner or "default"}'),
      'decoded': len(jobs) - from_cache,
      'from_cache': from_cache,
      'decode_seconds': round(decode_seconds, 2),
      'seconds': round(time.time() - t0, 2),
      'reused_existing': reused,
      'empty_tabular_columns': empty_columns,
      'grouped_by': grouped_by,
  }
  if verbose:
    print(format_summary(summary))
  return summary


def format_summary(summary: Mapping[str, Any]) -> str:
  """A short table: clips per split and class, skips by reason, time."""
  names = summary['classes']
  width = max([len(c) for c in names] + [5])
  lines = [f"data set {summary['dataset']}" + (' (unchanged, reused)'
                                               if summary['reused_existing'] else '')]
  lines.append(f"{'class':<{width}}  " + '  '.join(f'{s:>10}' for s in SPLITS))
  for c in names:
    lines.append(f'{c:<{width}}  ' + '  '.join(f"{summary['clips'][s][c]:>10}" for s in SPLITS))
  lines.append(f"{'total':<{width}}  " + '  '.join(
      f"{summary['clips_per_split'][s]:>10}" for s in SPLITS))
  lines.append(f"skipped {summary['skipped']} input(s)" + (
      ': ' + ', '.join(f'{k} {v}' for k, v in summary['skipped_by_reason'].items())
      if summary['skipped'] else '') + f"; report: {summary['report']}")
  where = (f"on {summary['workers']} worker(s)" if summary.get('runner', 'local') == 'local'
           else f"with {summary['runner']}")
  grouped_by = summary.get('grouped_by', 'artist')
  if grouped_by.startswith(('track (', 'artist (')):
    lines.append(f'warning: split grouped by {grouped_by}: one artist\'s tracks may be in '
                 "several splits; a manifest with an 'artist' column groups them")
  lines.append(f"time {summary['seconds']:.1f} s (decode {summary['decode_seconds']:.1f} s {where}; "
               f"{summary['decoded']} decoded, {summary['from_cache']} from the cache)")
  return '\n'.join(lines)
