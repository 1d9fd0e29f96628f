r"""Genres of your own audio files, from a trained (or imported) workdir.

  python -m crnn_jax.predict --workdir=workdirs/demo demo_data/audio
  python -m crnn_jax.predict --workdir=DIR --top_k=3 --format=json song.mp3 more/
  python -m crnn_jax.predict --workdir=workdirs/reference_metal \
      --tabular_csv=tracks.csv previews/

Every file goes through exactly what data preparation did (crnn_jax.audio,
SPEC.md section 2): decode to mono 22,050 Hz, the model's clip length (the
data set's metadata 'clip', 30 s by default), the reference's uint8
spectrogram image, / 255. A file longer than one clip is scored over every
full non-overlapping window (audio.sliding_windows) and the window
probabilities averaged; a shorter one is zero-padded as in preparation, and
rejected below the data set's minimum length. Windows of all files share
fixed-size batches (the last one padded), so a folder costs one compilation.

Outputs: single-label models give softmax probabilities; multi-label ones
(config.multilabel) give per-genre sigmoid scores with the config's label
hierarchy applied, and list every genre at or above the threshold chosen on
validation (results.json), else 0.5, besides the top k.

Tabular inputs (models with the metal branch): a row of --tabular_csv per file
(matched by a path/file/track_id/id column against the file's path, name or
name without extension; values in Spotify's conventions, converted as data
preparation converts them), or else estimated from the audio by
crnn_jax.audio_features. Estimates are labelled as such; columns it cannot
estimate (e.g. danceability) get the training split's mean (the encoded value
0), explicit gets code 1 (not explicit), and the output names them.

A file that cannot be scored (corrupt, not audio, too short, silent) gets one
line on stderr (and an "error" entry with --format=json); the others are still
scored. Exit status: 0 if any file was scored, 1 if none, 2 for a usage or
workdir problem.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import csv
import dataclasses
import json
import math
import os
import re
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, TextIO

import numpy as np

from crnn_jax import audio
from crnn_jax.errors import UserError

DEFAULT_THRESHOLD = 0.5
DEFAULT_BATCH_SIZE = 16
# Columns of --tabular_csv that may name a file, in the order they are tried.
ID_COLUMNS = ('path', 'file', 'filename', 'track_id', 'id')
# Raw value for a categorical column that cannot be estimated: the first code
# (explicit: not explicit, the common case).
IMPUTED_CATEGORICAL_CODE = 1.0


def _one_line(text: str) -> str:
  return ' '.join(str(text).split())


# --------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------
def expand_inputs(inputs: Iterable[str | os.PathLike]) -> list[tuple[str, str | None]]:
  """Files and folders -> [(path, error or None)], folders searched recursively.

  A file named explicitly is tried whatever its extension (decoding decides);
  inside folders only audio extensions are taken, sorted, so output order is
  stable. Missing paths and folders without audio become error entries.
  """
  from data_prep.prepare import AUDIO_EXTENSIONS  # pylint: disable=import-outside-toplevel
  out: list[tuple[str, str | None]] = []
  for item in inputs:
    path = os.fspath(item)
    if os.path.isdir(path):
      found = []
      for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        found += [os.path.join(dirpath, f) for f in sorted(filenames)
                  if os.path.splitext(f)[1].lower() in AUDIO_EXTENSIONS]
      if found:
        out += [(p, None) for p in found]
      else:
        out.append((path, f'no audio files ({", ".join(AUDIO_EXTENSIONS)}) in this folder'))
    elif os.path.exists(path):
      out.append((path, None))
    else:
      out.append((path, 'no such file or folder'))
  return out


class TabularTable:
  """--tabular_csv: a row of raw tabular values per file, looked up by name.

  Keys of a row: each id column's value, its base name and its base name
  without extension (the reference's previews are ``<id>.mp3``), and for
  path-like values the absolute path (relative to the CSV's folder). A file
  is looked up by absolute path, then base name, then stem.
  """

  def __init__(self, path: str, names: Sequence[str]):
    self.path = path
    self.names = list(names)
    try:
      with open(path, newline='', encoding='utf-8-sig') as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        rows = [{(k or '').strip(): (v or '') for k, v in row.items()} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
      raise UserError(f'--tabular_csv {path!r} cannot be read: '
                      f'{_one_line(getattr(e, "strerror", None) or e)}') from None
    id_columns = [c for c in ID_COLUMNS if c in header]
    if not id_columns:
      raise UserError(f'--tabular_csv {path!r} has no column naming the file: add one of '
                      f'{", ".join(ID_COLUMNS)}')
    missing = [n for n in self.names if n not in header]
    if missing:
      raise UserError(f'--tabular_csv {path!r} lacks the model\'s tabular columns {missing}')
    self.rows = rows
    self._keys: dict[str, list[int]] = collections.defaultdict(list)
    base_dir = os.path.dirname(os.path.abspath(path))
    for i, row in enumerate(rows):
      keys = set()
      for col in id_columns:
        value = row.get(col, '').strip()
        if not value:
          continue
        name = os.path.basename(value)
        keys |= {value, name, os.path.splitext(name)[0]}
        if col in ('path', 'file', 'filename'):
          keys.add(os.path.normpath(os.path.join(base_dir, value)))
      for key in keys:
        self._keys[key].append(i)

  def lookup(self, file_path: str) -> tuple[dict[str, str], str]:
    """(row, the key that matched); KeyError with a reason if none or several."""
    name = os.path.basename(file_path)
    for key in (os.path.abspath(file_path), name, os.path.splitext(name)[0]):
      hits = self._keys.get(key, [])
      if len(hits) == 1:
        return self.rows[hits[0]], key
      if len(hits) > 1:
        raise KeyError(f'{len(hits)} rows of --tabular_csv match {key!r}; '
                       'give each file one row (a path column disambiguates)')
    raise KeyError(f'no row of --tabular_csv {self.path!r} names this file '
                   f'(looked for {name!r} and {os.path.splitext(name)[0]!r})')


@dataclasses.dataclass
class PreparedFile:
  """A decoded file ready for the model: its windows and its tabular vector."""
  path: str
  images: np.ndarray  # (windows, 128, frames) uint8, the spectrogram contract
  tabular: np.ndarray | None  # (encoded width,) float32, shared by every window
  tabular_info: dict[str, Any] | None


# --------------------------------------------------------------------------
# The predictor
# --------------------------------------------------------------------------
def validation_threshold(workdir: str) -> tuple[float | None, str]:
  """(multi-label threshold chosen on validation, where it came from); None
  when results.json has none (a fresh import, or training not finished)."""
  path = os.path.join(workdir, 'results.json')
  try:
    with open(path) as f:
      value = json.load(f).get('validation', {}).get('threshold')
  except FileNotFoundError:
    return None, 'default (no results.json)'
  except (OSError, ValueError, AttributeError):
    return None, 'default (results.json unreadable)'
  if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
    return float(value), 'chosen on validation (results.json)'
  return None, 'default (no validation threshold in results.json)'


class Predictor:
  """A loaded model plus everything needed to turn files into genre scores."""

  def __init__(self, config: Any, variables: Mapping[str, Any], data_info: Mapping[str, Any],
               batch_size: int = DEFAULT_BATCH_SIZE, threshold: float | None = None,
               threshold_source: str = '', workdir: str = ''):
    import jax  # pylint: disable=import-outside-toplevel

    from crnn_jax import evaluate, input_pipeline, train  # pylint: disable=import-outside-toplevel
    if int(batch_size) < 1:
      raise UserError(f'--batch_size must be at least 1, got {batch_size}')
    self.config = config
    self.workdir = workdir
    self.info = input_pipeline.DataInfo.from_json(data_info)
    self.batch_size = int(batch_size)
    self.class_names = tuple(self.info.class_names)
    self.metadata = dict(self.info.metadata)
    clip = dict(self.metadata.get('clip') or {})
    defaults = audio.ClipSettings()
    self.clip = audio.ClipSettings(seconds=float(clip.get('seconds', defaults.seconds)),
                                   position=str(clip.get('position', defaults.position)),
                                   min_seconds=float(clip.get('min_seconds', defaults.min_seconds)))
    self.frames = audio.num_frames(self.clip.seconds)
    if self.info.frames is not None and int(self.info.frames) != self.frames:
      raise UserError(f'the model takes {self.info.frames} spectrogram frames but its clip '
                      f'settings ({self.clip.seconds:g} s) give {self.frames}: data_info.json in '
                      f'{workdir or "the workdir"!r} is inconsistent')
    self.num_tabular = int(self.info.num_tabular)
    self.tabular_names = list(self.metadata.get('tabular_names') or []) if self.num_tabular else []
    self.multilabel = bool(config.get('multilabel', False))
    self.threshold = float(DEFAULT_THRESHOLD if threshold is None else threshold)
    self.threshold_source = threshold_source or ('given' if threshold is not None else 'default')
    self._ancestors = evaluate.ancestors(config, self.info) if self.multilabel else None
    self._variables = {'params': variables['params'],
                       'batch_stats': variables.get('batch_stats', {})}
    model = train.create_model(config, self.info)
    # One compiled function; every call has the same (batch_size, ...) shape.
    self._apply = jax.jit(lambda v, spec, tab: model.apply(v, spec, tab, train=False))

  @classmethod
  def from_workdir(cls, workdir: str, batch_size: int = DEFAULT_BATCH_SIZE) -> Predictor:
    """Loads the latest checkpoint; the multi-label threshold from results.json."""
    from crnn_jax import checkpoints  # pylint: disable=import-outside-toplevel
    if not workdir:
      raise UserError('--workdir is required: a trained or imported model\'s folder')
    if not os.path.isdir(workdir):
      raise UserError(f'workdir {workdir!r} does not exist: train with main.py or import a '
                      'model first, or fix --workdir')
    config, variables, data_info = checkpoints.load_pretrained(workdir)
    threshold, source = validation_threshold(workdir)
    return cls(config, variables, data_info, batch_size=batch_size, threshold=threshold,
               threshold_source=source, workdir=workdir)

  # ---------------------------------------------------------------- model
  def logits(self, images: np.ndarray, tabular: np.ndarray | None = None) -> np.ndarray:
    """uint8 spectrogram images (n, 128, frames) [+ encoded tabular (n, k)] ->
    float32 logits (n, classes), in fixed-size batches (the last one padded)."""
    images = np.asarray(images, np.uint8)
    if images.ndim != 3 or images.shape[1:] != (audio.N_MELS, self.frames):
      raise ValueError(f'expected images (n, {audio.N_MELS}, {self.frames}), got {images.shape}')
    if self.num_tabular and (tabular is None or np.shape(tabular) != (len(images),
                                                                      self.num_tabular)):
      raise ValueError(f'this model needs tabular inputs of shape ({len(images)}, '
                       f'{self.num_tabular}), got {None if tabular is None else np.shape(tabular)}')
    b = self.batch_size
    out = []
    for start in range(0, len(images), b):
      chunk = images[start:start + b]
      n = len(chunk)
      spec = np.zeros((b, audio.N_MELS, self.frames), np.uint8)
      spec[:n] = chunk
      tab = None
      if self.num_tabular:
        tab = np.zeros((b, self.num_tabular), np.float32)
        tab[:n] = tabular[start:start + n]
      logits = self._apply(self._variables, audio.image_to_model_input(spec), tab)
      out.append(np.asarray(logits, np.float32)[:n])
    if not out:
      return np.zeros((0, len(self.class_names)), np.float32)
    return np.concatenate(out)

  def window_probabilities(self, logits: np.ndarray) -> np.ndarray:
    """Softmax (single-label) or sigmoid (multi-label) of each window's logits."""
    x = np.asarray(logits, np.float64)
    if self.multilabel:
      return 1.0 / (1.0 + np.exp(-x))
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)

  def file_scores(self, window_probs: np.ndarray) -> np.ndarray:
    """Average over a file's windows; multi-label: then the label hierarchy
    (a parent scores at least its best child), as evaluation applies it."""
    scores = np.asarray(window_probs, np.float64).mean(axis=0)
    if self._ancestors is not None:
      from crnn_jax import metrics  # pylint: disable=import-outside-toplevel
      scores = metrics.apply_hierarchy_to_scores(scores[None], self._ancestors)[0]
    return scores

  # ---------------------------------------------------------------- audio
  def prepare_audio(self, y: np.ndarray, path: str = '<array>',
                    tabular_raw: np.ndarray | None = None,
                    tabular_info: dict[str, Any] | None = None) -> PreparedFile:
    """A decoded mono 22,050 Hz signal -> its windows' spectrogram images.

    Windows quieter than preparation's silence floor are left out (a silent
    intro or tail says nothing about the genre); a file with only such
    windows is an AudioError, as in preparation.
    """
    from data_prep.prepare import SILENCE_PEAK  # pylint: disable=import-outside-toplevel
    windows = list(audio.sliding_windows(y, self.clip.seconds, self.clip.min_seconds))
    images = [audio.spectrogram_image(w, self.clip.seconds) for w in windows
              if float(np.max(np.abs(w))) >= SILENCE_PEAK]
    if not images:
      raise audio.AudioError('silent clip (peak below -80 dBFS)')
    encoded = None
    if self.num_tabular:
      from crnn_jax import tabular  # pylint: disable=import-outside-toplevel
      if tabular_raw is None:
        tabular_raw, tabular_info = self.estimate_tabular(y)
      try:
        encoded = tabular.encode(np.asarray(tabular_raw, np.float32), self.metadata,
                                 self.info.categorical_encoding)
      except (ValueError, KeyError) as e:
        raise UserError(f'tabular settings in data_info.json are unusable: {e}') from None
    return PreparedFile(path, np.stack(images), encoded, tabular_info)

  def estimate_tabular(self, y: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Raw tabular values from the audio (crnn_jax.audio_features, the same
    estimates preparation stores); what it cannot estimate gets the training
    mean (categorical: code 1)."""
    from crnn_jax import audio_features  # pylint: disable=import-outside-toplevel
    from data_prep.prepare import CATEGORICAL, to_number  # pylint: disable=import-outside-toplevel
    features = audio_features.estimate(y)
    mean = list(self.metadata.get('tabular_mean') or [0.0] * len(self.tabular_names))
    categorical = dict(self.metadata.get('tabular_categorical') or {})
    raw, estimated, imputed = [], [], []
    for i, name in enumerate(self.tabular_names):
      value = to_number(name, features[name]) if name in features else None
      if value is None:
        imputed.append(name)
        value = IMPUTED_CATEGORICAL_CODE if (name in categorical or name in CATEGORICAL) \
            else float(mean[i])
      else:
        estimated.append(name)
      raw.append(value)
    info = {'source': 'estimated from the audio (crnn_jax.audio_features): estimates, not '
                      "Spotify's values",
            'estimated': estimated, 'imputed': imputed,
            'values': dict(zip(self.tabular_names, (float(v) for v in raw)))}
    return np.asarray(raw, np.float32), info

  def tabular_from_row(self, row: Mapping[str, str], key: str) -> tuple[np.ndarray, dict[str, Any]]:
    """Raw tabular values from a --tabular_csv row, converted as preparation does."""
    from data_prep.prepare import to_number  # pylint: disable=import-outside-toplevel
    raw = []
    for name in self.tabular_names:
      value = to_number(name, row.get(name))  # ValueError: non-numeric / out of range
      if value is None:
        raise ValueError(f'--tabular_csv row {key!r} has no value for {name}')
      raw.append(value)
    info = {'source': f'--tabular_csv row {key!r}',
            'values': dict(zip(self.tabular_names, (float(v) for v in raw)))}
    return np.asarray(raw, np.float32), info

  def prepare_file(self, path: str, table: TabularTable | None = None) -> PreparedFile:
    """Decode + windows (+ tabular). AudioError / ValueError carry the reason."""
    tabular_raw, tabular_info = None, None
    if self.num_tabular and table is not None:  # before decoding: a missing row is cheap
      try:
        row, key = table.lookup(path)
      except KeyError as e:
        raise ValueError(e.args[0]) from None
      tabular_raw, tabular_info = self.tabular_from_row(row, key)
    y = audio.load_audio(path)
    return self.prepare_audio(y, path, tabular_raw, tabular_info)

  def _prepare_or_error(self, path: str, table: TabularTable | None) -> PreparedFile | str:
    try:
      return self.prepare_file(path, table)
    except UserError:
      raise
    except (audio.AudioError, ValueError) as e:
      return _one_line(e)
    except Exception as e:  # noqa: BLE001  one bad file must not stop the others
      return _one_line(f'unexpected error: {type(e).__name__}: {e}')[:300]

  def _prepared(self, entries: Sequence[tuple[str, str | None]], table: TabularTable | None,
                workers: int) -> Iterator[tuple[str, PreparedFile | str]]:
    """Decoded files in input order; a few threads decode ahead of the model."""
    if workers <= 1:
      for path, error in entries:
        yield path, error or self._prepare_or_error(path, table)
      return
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
      ahead: collections.deque = collections.deque()
      for path, error in entries:
        ahead.append((path, error, None if error else
                      pool.submit(self._prepare_or_error, path, table)))
        if len(ahead) > 2 * workers:
          p, err, future = ahead.popleft()
          yield p, err or future.result()
      while ahead:
        p, err, future = ahead.popleft()
        yield p, err or future.result()

  # ---------------------------------------------------------------- files
  def iter_predict(self, inputs: Iterable[str | os.PathLike], tabular_csv: str | None = None,
                   top_k: int = 5, num_workers: int | None = None) -> Iterator[dict[str, Any]]:
    """One result dict per file, in input order, as soon as it is scored.

    Windows of consecutive files are packed into the same batches; a file's
    result comes out once its last window has been through the model.
    """
    if int(top_k) < 1:
      raise UserError(f'--top_k must be at least 1, got {top_k}')
    table = TabularTable(tabular_csv, self.tabular_names) if tabular_csv and self.num_tabular \
        else None
    entries = expand_inputs(inputs)
    workers = int(num_workers if num_workers is not None else min(4, os.cpu_count() or 1))
    order: collections.deque = collections.deque()  # per file: its state, in input order
    queue: list[tuple[dict[str, Any], np.ndarray, np.ndarray | None]] = []

    def run(batch: list[tuple[dict[str, Any], np.ndarray, np.ndarray | None]]) -> None:
      images = np.stack([img for _, img, _ in batch])
      tab = np.stack([t for _, _, t in batch]) if self.num_tabular else None
      probs = self.window_probabilities(self.logits(images, tab))
      for (state, _, _), p in zip(batch, probs):
        state['probs'].append(p)
        if len(state['probs']) == state['windows']:
          state['result'] = self.summarise(state['path'], np.stack(state['probs']), top_k,
                                           state['tabular_info'])

    def finished() -> Iterator[dict[str, Any]]:
      while order and order[0]['result'] is not None:
        yield order.popleft()['result']

    for path, prepared in self._prepared(entries, table, workers):
      if isinstance(prepared, str):
        order.append({'path': path, 'result': {'file': path, 'error': prepared}})
      else:
        state = {'path': path, 'result': None, 'probs': [], 'windows': len(prepared.images),
                 'tabular_info': prepared.tabular_info}
        order.append(state)
        queue += [(state, img, prepared.tabular) for img in prepared.images]
      while len(queue) >= self.batch_size:
        run(queue[:self.batch_size])
        del queue[:self.batch_size]
      yield from finished()
    if queue:
      run(queue)
    yield from finished()

  def predict_files(self, paths: Iterable[str | os.PathLike], tabular_csv: str | None = None,
                    top_k: int = 5, num_workers: int | None = None) -> list[dict[str, Any]]:
    """Results of every file (folders searched recursively), in input order.

    Each is {'file', 'windows', 'top_k': [{'genre', 'probability'}],
    'probabilities': {genre: p}} (+ 'threshold' and 'above_threshold' for
    multi-label models, + 'tabular' where the model has that branch), or
    {'file', 'error'} for a file that could not be scored.
    """
    return list(self.iter_predict(paths, tabular_csv, top_k, num_workers))

  def summarise(self, path: str, window_probs: np.ndarray, top_k: int = 5,
                tabular_info: dict[str, Any] | None = None) -> dict[str, Any]:
    scores = self.file_scores(window_probs)
    ranked = np.argsort(-scores, kind='stable')

    def entry(i: int) -> dict[str, Any]:
      return {'genre': self.class_names[i], 'probability': float(scores[i])}

    result: dict[str, Any] = {
        'file': path,
        'windows': len(window_probs),
        'top_k': [entry(int(i)) for i in ranked[:top_k]],
        'probabilities': {n: float(s) for n, s in zip(self.class_names, scores)},
    }
    if self.multilabel:
      result['threshold'] = self.threshold
      result['above_threshold'] = [entry(int(i)) for i in ranked if scores[i] >= self.threshold]
    if tabular_info is not None:
      result['tabular'] = tabular_info
    return result

  def describe(self) -> dict[str, Any]:
    """What the output's numbers mean (the JSON header, the text header)."""
    d: dict[str, Any] = {
        'workdir': os.path.abspath(self.workdir) if self.workdir else '',
        'classes': list(self.class_names),
        'multilabel': self.multilabel,
        'clip_seconds': self.clip.seconds,
        'min_seconds': self.clip.min_seconds,
        'scores': 'sigmoid, label hierarchy applied' if self.multilabel else 'softmax',
    }
    if self.multilabel:
      d['threshold'] = self.threshold
      d['threshold_source'] = self.threshold_source
    if self.num_tabular:
      d['tabular_names'] = list(self.tabular_names)
    return d


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------
def format_text(result: Mapping[str, Any]) -> str:
  """A scored file as a few readable lines."""
  n = result['windows']
  lines = [f'{result["file"]}  ({"1 window" if n == 1 else f"{n} windows averaged"})']
  if 'above_threshold' in result:
    above = ', '.join(f'{e["genre"]} {e["probability"]:.4f}' for e in result['above_threshold'])
    lines.append(f'  at or above {result["threshold"]:.3g}: {above or "none"}')
  width = max(len(e['genre']) for e in result['top_k'])
  for rank, e in enumerate(result['top_k'], 1):
    lines.append(f'  {rank:2d}. {e["genre"]:<{width}}  {e["probability"]:.4f}')
  tab = result.get('tabular')
  if tab:
    text = f'  tabular inputs: {tab["source"]}'
    if tab.get('imputed'):
      text += f'; training mean (not estimable) for {", ".join(tab["imputed"])}'
    lines.append(text)
  return '\n'.join(lines) + '\n'


def predict_main(workdir: str, inputs: Sequence[str], top_k: int = 5, fmt: str = 'text',
                 batch_size: int = DEFAULT_BATCH_SIZE, tabular_csv: str | None = None,
                 num_workers: int | None = None, out: TextIO | None = None,
                 err: TextIO | None = None, predictor: Predictor | None = None) -> int:
  """The command without absl: returns the exit status (0 if any file was scored).

  ``predictor`` (else loaded from ``workdir``) lets a caller reuse a loaded model.
  """
  out = out or sys.stdout
  err = err or sys.stderr
  if fmt not in ('text', 'json'):
    raise UserError(f"--format {fmt!r}: use 'text' or 'json'")
  if not inputs:
    raise UserError('give at least one audio file or folder to score')
  if tabular_csv and not os.path.isfile(tabular_csv):
    raise UserError(f'--tabular_csv {tabular_csv!r} does not exist')
  predictor = predictor or Predictor.from_workdir(workdir, batch_size=batch_size)
  header = predictor.describe()
  if tabular_csv and not predictor.num_tabular:
    print('note: this model has no tabular inputs; --tabular_csv is not used', file=err)
  if fmt == 'text':
    line = (f'# {len(header["classes"])} genres, {header["scores"]}, '
            f'{header["clip_seconds"]:g} s windows')
    if predictor.multilabel:
      line += f'; threshold {predictor.threshold:.3g} {predictor.threshold_source}'
    print(line, file=out, flush=True)
  results, scored = [], 0
  for result in predictor.iter_predict(inputs, tabular_csv, top_k, num_workers):
    if 'error' in result:
      print(f'error: {result["file"]}: {result["error"]}', file=err, flush=True)
    else:
      scored += 1
      if fmt == 'text':
        out.write(format_text(result))
        out.flush()
    results.append(result)
  if fmt == 'json':
    json.dump({**header, 'scored': scored, 'failed': len(results) - scored, 'results': results},
              out, indent=2)
    out.write('\n')
  if not scored:
    print(f'error: none of {len(results)} input(s) could be scored', file=err)
  return 0 if scored else 1


# What libmpg123 (inside libsndfile) writes straight to file descriptor 2
# while failing on a corrupt MP3; the file's own one-line error says it all.
_DECODER_CHATTER = re.compile(rb'^(Note: |\[src/libmpg123/)')


@contextlib.contextmanager
def _without_decoder_chatter() -> Iterator[None]:
  """Passes stderr through a filter that drops libmpg123's notes (C code
  writing to fd 2 cannot be silenced from Python any other way)."""
  try:
    sys.stderr.flush()
    saved = os.dup(2)
  except (OSError, ValueError, AttributeError):
    yield
    return
  read_fd, write_fd = os.pipe()
  os.dup2(write_fd, 2)
  os.close(write_fd)

  def pump() -> None:
    with os.fdopen(read_fd, 'rb', buffering=0) as source:
      for line in source:
        if not _DECODER_CHATTER.match(line):
          os.write(saved, line)

  thread = threading.Thread(target=pump, name='stderr-filter', daemon=True)
  thread.start()
  try:
    yield
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)  # the pipe's last write end closes: the pump sees EOF
    thread.join(timeout=5)
    os.close(saved)


def _define_flags() -> None:
  from absl import flags  # pylint: disable=import-outside-toplevel
  flags.DEFINE_string('workdir', None, 'A trained or imported model\'s workdir.')
  flags.DEFINE_integer('top_k', 5, 'How many genres to print per file.')
  flags.DEFINE_enum('format', 'text', ['text', 'json'], 'text for people, json for programs.')
  flags.DEFINE_integer('batch_size', DEFAULT_BATCH_SIZE,
                       'Windows per model call (every call has this size; the last is padded).')
  flags.DEFINE_string('tabular_csv', None,
                      'Models with tabular inputs: a CSV with a path/file/track_id/id column and '
                      'the model\'s tabular columns; else they are estimated from the audio.')
  flags.DEFINE_integer('num_workers', None, 'Decoding threads (default: up to 4).')


def run() -> None:
  """Entry point: one-line errors for the user, no traceback."""
  from crnn_jax import xla_defaults  # pylint: disable=import-outside-toplevel
  xla_defaults.apply()  # jax is imported lazily, after this
  from absl import app, flags, logging  # pylint: disable=import-outside-toplevel
  _define_flags()

  def main(argv: list[str]) -> None:
    logging.set_verbosity(logging.WARNING)
    f = flags.FLAGS
    try:
      with _without_decoder_chatter():
        status = predict_main(f.workdir, argv[1:], top_k=f.top_k, fmt=f.format,
                              batch_size=f.batch_size, tabular_csv=f.tabular_csv,
                              num_workers=f.num_workers)
    except UserError as e:
      print(f'error: {_one_line(e)}', file=sys.stderr)
      sys.exit(2)
    sys.exit(status)

  app.run(main)


if __name__ == '__main__':
  run()
