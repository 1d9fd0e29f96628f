"""One command from a music source to a TFDS data set: ``build_dataset``.

Sources: a local library folder (one sub-folder per label, the GTZAN layout)
or a manifest CSV (``data_prep.manifest``). The build runs in phases, each a
function below:

  labels    map raw labels onto classes, drop unknown ones and duplicates
  columns   which tabular columns the data set gets
  decode    decode -> clip window(s) -> the reference's spectrogram (+ tabular
            features estimated from the audio), parallel and cached per track
            (data_prep.decode), so a rerun redoes no finished work
  rows      each decoded track's tabular values (source value, else estimate)
  split     64/16/20, stratified by label, whole artists per split
            (data_prep.split); the training split's tabular statistics
  windows   how many windows each track stores (``windows``: one at the clip
            position, every non-overlapping one, or N spread over the track);
            a track's windows are examples of its split, never of two splits
  write     the TFDS data set (data_prep.writer), skipped when an identical
            build already exists
  summary   clips per split and class, skips by reason, time

Bad input never stops a run: every skipped file or row is listed with its
reason in ``DIR/<name>_report.csv`` and counted in the printed summary.

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
import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import os
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from etils import epath
from tensorflow_datasets.core.utils import tqdm_utils

from crnn_jax.core import audio, audio_features, file_lock, storage, tabular
from crnn_jax.data import schema
from crnn_jax.data.schema import SPLITS
from data_prep import decode, split, writer
from data_prep.build_input import read_source
from data_prep.records import Problem, Source, Track

TABULAR_MODES = ('auto', 'none', 'source', 'audio')


@dataclasses.dataclass(frozen=True)
class Options:
  """How a data set is built; ``build_dataset``'s keyword arguments.

  clip: window length/position and the minimum length worth padding.
  windows: '1' (one window per track at clip.position), 'all' (every full
    non-overlapping window) or 'N' (N windows spread over the track); each
    window is an example, with the track's id and split.
  split: train, validation, test fractions. group_by_artist: no artist in two
    splits. stratify: each split has the label proportions (off with
    group_by_artist: the reference's per-track random split).
  source_split: each track's official split from the source instead (FMA's
    set.split, an MTG-Jamendo split folder); the three above are then unused.
  workers: decoding processes (None: every core).
  class_names: fixed class order; labels outside it are reported. Default:
    every (mapped) label seen, sorted alphabetically as the reference.
  label_map: raw label -> class name, or None to drop (e.g. metal's 32 query
    tags -> 20 classes); unmapped labels pass through.
  tabular: 'none' (audio only); 'source' (the manifest's tabular columns);
    'audio' (the reference's 16 columns: the source's value where present,
    else estimated from the audio, columns with neither dropped); 'auto'
    ('source' when the source has tabular columns, else 'none').
  manifest_options: read_manifest's keyword arguments (preset, audio_root, ...).
  beam_runner / beam_options: decode and write through Apache Beam instead of
    local processes (e.g. 'DirectRunner'; on a cluster, its runner and
    options). Results flow as pipeline elements, not through the local cache;
    data_dir and the audio paths may be remote (gs://..., read through
    etils.epath and Beam's file systems) and must be reachable by the workers.
  """
  clip: audio.ClipSettings = dataclasses.field(default_factory=audio.ClipSettings)
  windows: str = decode.SINGLE
  split: Sequence[float] = (0.64, 0.16, 0.20)
  group_by_artist: bool = True
  stratify: bool = True
  source_split: bool = False
  seed: int = 42
  workers: int | None = None
  class_names: Sequence[str] | None = None
  label_map: Mapping[str, str | None] | None = None
  tabular: str = 'auto'
  manifest_options: Mapping[str, Any] | None = None
  progress: bool = True
  verbose: bool = True
  beam_runner: Any = None
  beam_options: Any = None

  @property
  def uses_beam(self) -> bool:
    return self.beam_runner is not None or self.beam_options is not None


@dataclasses.dataclass
class Decoded:
  """What the decode phase found: per-track outcomes and where they are cached."""
  results: decode.Results
  cache_files: dict[str, str]
  jobs: int
  from_cache: int
  workers: int
  seconds: float
  windows: dict[str, int] = dataclasses.field(default_factory=dict)  # Beam: windows per track


@dataclasses.dataclass
class Split:
  """The usable tracks, their class indices, split names and tabular rows."""
  tracks: list[Track]
  class_names: list[str]
  label_index: list[int]
  splits: list[str]
  rows: np.ndarray  # (tracks, columns) float32, raw stored values
  grouped_by: str
  windows: list[int] = dataclasses.field(default_factory=list)  # stored windows per track


def lock_path(data_dir: str, name: str) -> str:
  """One build of a data set at a time: DIR/NAME.lock (crnn_jax.core.file_lock).

  A remote data_dir (gs://...) has no lock files: its lock is a local file
  named after the URL, which keeps apart the builds started on this machine.
  """
  if storage.is_remote(data_dir):
    url = f'{data_dir.rstrip("/")}/{name}'
    folder = os.path.join(tempfile.gettempdir(), 'crnn_jax_locks')
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, hashlib.sha1(url.encode()).hexdigest() + '.lock')
  return os.path.join(os.path.abspath(data_dir), f'{name}.lock')


@file_lock.exclusive(lock_path, 'data_prep build')
def build_dataset(input_path: str, data_dir: str, name: str, options: Options | None = None,
                  **overrides: Any) -> dict[str, Any]:
  """Prepares ``data_dir/name/<version>`` from a folder or manifest CSV.

  ``overrides`` are Options fields (``clip=..., workers=1``). Returns the
  summary (also printed when verbose).
  """
  t0 = time.time()
  opts = dataclasses.replace(options or Options(), **overrides)
  opts = dataclasses.replace(opts, windows=decode.check_windows(opts.windows))
  if not storage.is_remote(data_dir):
    data_dir = os.path.abspath(data_dir)
  schema.check_name(name)  # fail fast on a bad name
  if opts.tabular not in TABULAR_MODES:
    raise ValueError(f"tabular must be 'auto', 'none', 'source' or 'audio', got {opts.tabular!r}")
  source = read_source(input_path, **dict(opts.manifest_options or {}))
  problems: list[Problem] = list(source.problems)
  tracks = labelled_tracks(source, opts, problems)
  columns = tabular_columns(source, tracks, opts)
  decoded = decode_tracks(tracks, data_dir, name, columns.estimate, opts)
  good, rows = tabular_rows(tracks, decoded.results, columns.names, problems)
  report_path = os.path.join(data_dir, f'{name}_report.csv')
  if not good:
    write_report(report_path, problems)
    raise ValueError(f'no usable tracks in {input_path!r} ({len(problems)} skipped); '
                     f'see {report_path}')
  chosen = split_tracks(good, rows, len(columns.names), opts)
  chosen.windows = stored_windows(chosen.tracks, decoded, opts)
  problems.sort(key=lambda p: (p.origin, p.track_id, p.reason))
  write_report(report_path, problems)
  metadata = dataset_metadata(chosen, columns.names, decoded, source, report_path, opts)
  reused = write(chosen, decoded, metadata, data_dir, name, source.description, opts)
  summary = summarise(chosen, problems, decoded, data_dir, name, report_path, reused, columns,
                      time.time() - t0, opts)
  if opts.verbose:
    print(format_summary(summary))
  return summary


# ---------------------------------------------------------------- labels

def labelled_tracks(source: Source, opts: Options, problems: list[Problem]) -> list[Track]:
  """Tracks with their labels mapped and checked; duplicates and unknown or
  dropped labels become problems."""
  label_map = dict(opts.label_map or {})
  known = set(opts.class_names) if opts.class_names else None
  tracks: list[Track] = []
  seen: set[str] = set()
  for t in source.tracks:
    if t.track_id in seen:
      problems.append(Problem(t.origin, t.track_id, 'duplicate track id'))
      continue
    label = label_map.get(t.label, t.label)
    if label is None:
      problems.append(Problem(t.origin, t.track_id,
                              f'dropped label: {t.label!r} is mapped to no class'))
      continue
    if known is not None and label not in known:
      problems.append(Problem(t.origin, t.track_id, f'unknown label: {label!r}'))
      continue
    seen.add(t.track_id)
    extra = [m for m in (label_map.get(x, x) for x in t.labels) if m is not None]
    labels = tuple(dict.fromkeys([label] + [m for m in extra if known is None or m in known]))
    tracks.append(dataclasses.replace(t, label=label, labels=labels))
  return tracks


# ---------------------------------------------------------------- columns

@dataclasses.dataclass(frozen=True)
class Columns:
  """The data set's tabular columns, and whether the decode phase estimates features."""
  names: list[str]
  estimate: bool
  empty_in_source: list[str]


def tabular_columns(source: Source, tracks: Sequence[Track], opts: Options) -> Columns:
  """A column empty in every row (e.g. Spotify's refused audio features) is no
  column at all, not a reason to drop every row."""
  empty = [c for c in source.tabular_columns
           if all(str(t.tabular.get(c, '')).strip() == '' for t in tracks)]
  present = [c for c in source.tabular_columns if c not in empty]
  if empty and opts.verbose:
    print(f'tabular columns empty in every row, left out: {", ".join(empty)}')
  mode = opts.tabular
  if mode == 'auto':
    mode = 'source' if present else 'none'
  if mode == 'none':
    names: list[str] = []
  elif mode == 'source':
    names = present
  else:
    names = [c for c in tabular.REFERENCE_COLUMNS
             if c in audio_features.ESTIMATED or c in present]
    names += [c for c in present if c not in names]
  return Columns(names, mode == 'audio', empty)


# ---------------------------------------------------------------- decode

def decode_tracks(tracks: Sequence[Track], data_dir: str, name: str, estimate: bool,
                  opts: Options) -> Decoded:
  """Every track through data_prep.decode, from the cache where it can."""
  cache_dir = os.path.join(data_dir, f'{name}_cache')
  jobs: list[decode.Job] = []
  cache_files: dict[str, str] = {}
  for t in tracks:
    key = decode.cache_key(t.path, opts.clip, estimate, opts.windows)
    cache_file = (os.path.join(cache_dir, key[:2], key + '.npz') if key
                  else os.path.join(cache_dir, 'unstattable.npz'))
    cache_files[t.track_id] = cache_file
    jobs.append(decode.Job(t.track_id, t.path, cache_file if key else '', opts.clip, estimate,
                           opts.windows))
  workers = int(opts.workers or decode.available_cores())
  t0 = time.time()
  windows: dict[str, int] = {}
  if opts.uses_beam:  # results flow through the pipeline; no local cache on a cluster
    jobs = [dataclasses.replace(j, cache_file='') for j in jobs]
    from_cache = 0
    results, windows = decode.run_jobs_beam(jobs, opts.beam_runner, opts.beam_options,
                                            beam_work_dir(data_dir, name))
  else:
    from_cache = sum(1 for j in jobs if j.cache_file and os.path.exists(j.cache_file))
    results = decode.run_jobs(jobs, workers, opts.progress)
  used = workers if workers > 1 and len(jobs) - from_cache >= decode.MIN_POOL_JOBS else 1
  return Decoded(results, cache_files, len(jobs), from_cache, used, time.time() - t0, windows)


def beam_work_dir(data_dir: str, name: str) -> str:
  """Where a Beam build's decode pipeline leaves its outcomes for the write
  (beside the data set, so as remote as it; removed after the write)."""
  return os.fspath(epath.Path(data_dir) / f'{name}_beam_work')


# ---------------------------------------------------------------- rows

def tabular_rows(tracks: Sequence[Track], results: decode.Results, names: Sequence[str],
                 problems: list[Problem]) -> tuple[list[Track], list[list[float]]]:
  """The decoded tracks with a complete tabular row (the source's value, else
  the audio estimate); the others become problems."""
  good: list[Track] = []
  rows: list[list[float]] = []
  for t in tracks:
    error, features = results[t.track_id]
    if error:
      problems.append(Problem(t.origin, t.track_id, error))
      continue
    row, bad = _tabular_row(t, features, names)
    if bad:
      problems.append(Problem(t.origin, t.track_id, bad))
      continue
    good.append(t)
    rows.append(row)
  return good, rows


def _tabular_row(track: Track, features: Mapping[str, float], names: Sequence[str]
                 ) -> tuple[list[float], str | None]:
  row, bad = [], None
  for col in names:
    try:
      x = tabular.to_number(col, track.tabular.get(col))
    except ValueError as e:
      x, bad = None, str(e)
    if x is None and col in features:
      x = tabular.to_number(col, features[col])
    if x is None:
      return row, bad or f'missing tabular value: {col}'
    row.append(x)
  return row, bad  # a non-numeric source value is a problem even where estimated


# ---------------------------------------------------------------- split

def split_tracks(good: list[Track], rows: list[list[float]], num_columns: int,
                 opts: Options) -> Split:
  names = list(opts.class_names) if opts.class_names else sorted({t.label for t in good})
  index = {c: i for i, c in enumerate(names)}
  good = [dataclasses.replace(t, labels=tuple(x for x in t.labels if x in index)) for t in good]
  label_index = [index[t.label] for t in good]
  if opts.source_split:
    splits, grouped_by = split.source_splits(good), "the source's official split"
  else:
    splits = split.assign_splits(label_index, [split.artist_key(t) for t in good], opts.split,
                                 opts.seed, opts.group_by_artist, opts.stratify)
    grouped_by = split.grouping(good, opts.group_by_artist)
  empty = [s for s, f in zip(SPLITS, opts.split)
           if (f > 0 or opts.source_split) and s not in splits]
  if empty:
    raise ValueError(f'splits {empty} would be empty with {len(good)} usable tracks: add data '
                     'or change the split fractions')
  return Split(good, names, label_index, splits,
               np.asarray(rows, dtype=np.float32).reshape(len(good), num_columns), grouped_by)


# ---------------------------------------------------------------- windows

def stored_windows(tracks: Sequence[Track], decoded: Decoded, opts: Options) -> list[int]:
  """Windows each track stores (with several: from its cache file, or as the
  Beam pipeline counted them)."""
  if opts.windows == decode.SINGLE:
    return [1] * len(tracks)
  return [decoded.windows.get(t.track_id) or decode.window_count(decoded.cache_files[t.track_id])
          for t in tracks]


# ---------------------------------------------------------------- write

def dataset_metadata(chosen: Split, tab_names: list[str], decoded: Decoded, source: Source,
                     report_path: str, opts: Options) -> dict[str, Any]:
  """The data set's metadata, with a fingerprint of everything the data depend on."""
  train_rows = chosen.rows[[i for i, s in enumerate(chosen.splits) if s == 'train']]
  mean, std = tabular.training_stats(train_rows, tab_names)
  metadata = {
      'class_names': chosen.class_names,
      'tabular_names': tab_names,
      'tabular_categorical': {c: tabular.CATEGORICAL[c] for c in tab_names
                              if c in tabular.CATEGORICAL},
      'tabular_mean': mean,
      'tabular_std': std,
      'clip': dataclasses.asdict(opts.clip),
      'windows': opts.windows,
      'source': source.description,
      'report': report_path,
      'split': {'fractions': [float(f) for f in opts.split],
                'group_by_artist': opts.group_by_artist, 'grouped_by': chosen.grouped_by,
                'stratify': opts.stratify, 'seed': opts.seed,
                **({'source': True} if opts.source_split else {})},
      'label_map': dict(opts.label_map or {}),
  }
  items = [[t.track_id, os.path.basename(decoded.cache_files[t.track_id]), s, t.label,
            list(t.labels), t.artist_id, [float(v) for v in r], w]
           for t, s, r, w in sorted(zip(chosen.tracks, chosen.splits, chosen.rows.tolist(),
                                        chosen.windows), key=lambda x: x[0].track_id)]
  metadata['fingerprint'] = hashlib.sha256(json.dumps(
      [items, {k: v for k, v in metadata.items() if k not in ('report', 'source')}],
      sort_keys=True).encode()).hexdigest()
  return metadata


def write(chosen: Split, decoded: Decoded, metadata: dict[str, Any], data_dir: str, name: str,
          description: str, opts: Options) -> bool:
  """Writes the TFDS set unless an identical build exists; True when reused."""
  version_dir = epath.Path(data_dir) / name / schema.VERSION  # local or remote
  previous = version_dir.parent / (version_dir.name + '.previous')
  if previous.is_dir() and not version_dir.is_dir():
    previous.rename(version_dir)  # a replacement killed midway: the old set is back
  reused = _existing_fingerprint(version_dir) == metadata['fingerprint']
  if not reused:
    for leftover in version_dir.parent.glob(f'incomplete.*{schema.VERSION}'):
      leftover.rmtree(missing_ok=True)  # a write killed midway (SIGKILL)
    with _previous_kept_until_replaced(version_dir, previous, opts.verbose):
      _write_examples(chosen, decoded, metadata, data_dir, name, description, opts)
  if opts.uses_beam:
    epath.Path(beam_work_dir(data_dir, name)).rmtree(missing_ok=True)
  return reused


@contextlib.contextmanager
def _previous_kept_until_replaced(version_dir: epath.Path, previous: epath.Path, verbose: bool
                                  ) -> Iterator[None]:
  """A different earlier build stays (set aside as ``previous``) until the new
  one is complete: a failed write (a full disk) gives it back, and so does the
  next build after a kill (``write``)."""
  if version_dir.is_dir():
    if verbose:
      print(f'replacing {version_dir}: its inputs or settings differ from this build')
    previous.rmtree(missing_ok=True)
    version_dir.rename(previous)
  try:
    yield
  except BaseException as e:
    if previous.is_dir() and not version_dir.is_dir():
      previous.rename(version_dir)
    storage.raise_if_storage_error(e, os.fspath(version_dir))
    raise
  previous.rmtree(missing_ok=True)


def _write_examples(chosen: Split, decoded: Decoded, metadata: dict[str, Any], data_dir: str,
                    name: str, description: str, opts: Options) -> None:
  by_split: dict[str, list[tuple[str, dict[str, Any]]]] = {s: [] for s in SPLITS}
  for i, (t, s, count) in enumerate(zip(chosen.tracks, chosen.splits, chosen.windows)):
    for w in range(count):  # one window keeps the track id as its key, as before
      by_split[s].append((t.track_id if count == 1 else f'{t.track_id}#{w}', {
          'cache_file': decoded.cache_files[t.track_id], 'window': w,
          'tabular': chosen.rows[i].tolist(), 'label': chosen.label_index[i],
          'label_set': sorted(chosen.class_names.index(x) for x in t.labels),
          'num_classes': len(chosen.class_names), 'track_id': t.track_id,
          'artist_id': t.artist_id}))
  if opts.uses_beam:
    images = decode.images_pattern(beam_work_dir(data_dir, name))
    split_examples = {s: (lambda s=s, it=it: writer.beam_examples(s, it, images))
                      for s, it in by_split.items()}
  else:
    split_examples = {s: (lambda it=it: map(writer.cached_example, it))
                      for s, it in by_split.items()}
  bars_were_on = tqdm_utils._active  # pylint: disable=protected-access
  tqdm_utils.display_progress_bar(bars_were_on and opts.progress)
  try:
    writer.write_dataset(name, data_dir, chosen.class_names, chosen.rows.shape[1], split_examples,
                         metadata, description=f'Prepared by data_prep from {description}',
                         frames=opts.clip.frames(), beam_runner=opts.beam_runner,
                         beam_options=opts.beam_options)
  finally:
    tqdm_utils.display_progress_bar(bars_were_on)


def _existing_fingerprint(version_dir: epath.Path) -> str | None:
  try:
    return json.loads((version_dir / 'metadata.json').read_text()).get('fingerprint')
  except (OSError, ValueError):
    return None


def write_report(path: str, problems: Sequence[Problem]) -> None:
  text = io.StringIO(newline='')
  w = csv.writer(text)
  w.writerow(['origin', 'track_id', 'reason'])
  for p in problems:
    w.writerow([p.origin, p.track_id, p.reason])
  # File names that are not UTF-8 are written as \xNN.
  if storage.is_remote(path):
    epath.Path(path).write_bytes(text.getvalue().encode('utf-8', 'backslashreplace'))
  else:
    with storage.atomic_write(path, newline='', encoding='utf-8', errors='backslashreplace') as f:
      f.write(text.getvalue())


# ---------------------------------------------------------------- summary

def summarise(chosen: Split, problems: Sequence[Problem], decoded: Decoded, data_dir: str,
              name: str, report_path: str, reused: bool, columns: Columns, seconds: float,
              opts: Options) -> dict[str, Any]:
  counts = {s: collections.Counter() for s in SPLITS}
  tracks = collections.Counter(chosen.splits)
  for t, s, w in zip(chosen.tracks, chosen.splits, chosen.windows):
    counts[s][t.label] += w
  names = chosen.class_names
  return {
      'dataset': os.path.join(data_dir, name),
      'name': name,
      'classes': names,
      'clips': {s: {c: counts[s][c] for c in names} for s in SPLITS},
      'clips_per_split': {s: sum(counts[s].values()) for s in SPLITS},
      'tracks_per_split': {s: tracks[s] for s in SPLITS},
      'windows': opts.windows,
      'skipped': len(problems),
      'skipped_by_reason': dict(sorted(collections.Counter(p.kind for p in problems).items())),
      'report': report_path,
      'tabular_names': columns.names,
      'workers': decoded.workers,
      'runner': f'beam:{opts.beam_runner or "default"}' if opts.uses_beam else 'local',
      'decoded': decoded.jobs - decoded.from_cache,
      'from_cache': decoded.from_cache,
      'decode_seconds': round(decoded.seconds, 2),
      'seconds': round(seconds, 2),
      'reused_existing': reused,
      'empty_tabular_columns': columns.empty_in_source,
      'grouped_by': chosen.grouped_by,
      # Tracks whose source gives a split that this build's own split ignores.
      'source_split_unused': 0 if opts.source_split else sum(bool(t.split) for t in chosen.tracks),
  }


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
  if summary.get('windows', decode.SINGLE) != decode.SINGLE:
    lines.append(f"{'tracks':<{width}}  " + '  '.join(
        f"{summary['tracks_per_split'][s]:>10}" for s in SPLITS)
        + f"  (windows per track: {summary['windows']})")
  lines.append(f"skipped {summary['skipped']} input(s)" + (
      ': ' + ', '.join(f'{k} {v}' for k, v in summary['skipped_by_reason'].items())
      if summary['skipped'] else '') + f"; report: {summary['report']}")
  where = (f"on {summary['workers']} worker(s)" if summary.get('runner', 'local') == 'local'
           else f"with {summary['runner']}")
  grouped_by = summary.get('grouped_by', 'artist')
  if grouped_by.startswith(('track (', 'artist (')):
    lines.append(f'warning: split grouped by {grouped_by}: one artist\'s tracks may be in '
                 "several splits; a manifest with an 'artist' column groups them")
  if summary.get('source_split_unused'):
    lines.append(f"note: the source gives its own split for {summary['source_split_unused']} "
                 'track(s); --split_by=source keeps it')
  lines.append(f"time {summary['seconds']:.1f} s (decode {summary['decode_seconds']:.1f} s {where}; "
               f"{summary['decoded']} decoded, {summary['from_cache']} from the cache)")
  return '\n'.join(lines)
