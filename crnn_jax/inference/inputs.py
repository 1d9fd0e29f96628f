"""What a model is given besides audio: the files to score and their tabular values.

``expand_inputs`` turns files and folders into an ordered list of audio files.
``TabularTable`` is --tabular_csv: a row of raw tabular values per file (matched
by a path/file/track_id/id column against the file's path, name or name without
extension; values in Spotify's conventions, converted as data preparation
converts them). ``tabular_from_features`` is the fallback: values estimated from
the audio by crnn_jax.core.audio_features; columns it cannot estimate (e.g.
danceability) get the training split's mean (the encoded value 0) and
categorical ones code 1 (explicit: not explicit), and the result says which.
"""

from __future__ import annotations

import collections
import csv
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from crnn_jax.core import audio, tabular
from crnn_jax.core.errors import UserError, one_line

# Columns of --tabular_csv that may name a file, in the order they are tried.
ID_COLUMNS = ('path', 'file', 'filename', 'track_id', 'id')
# Raw value for a categorical column that cannot be estimated: the first code
# (explicit: not explicit, the common case).
IMPUTED_CATEGORICAL_CODE = 1.0


FOLDER_NAMED_LIKE_AUDIO = 'a folder, not an audio file (its contents are read as usual)'


def _audio_name(name: str) -> bool:
  return os.path.splitext(name)[1].lower() in audio.AUDIO_EXTENSIONS


def expand_inputs(inputs: Iterable[str | os.PathLike]) -> list[tuple[str, str | None]]:
  """Files and folders -> [(path, error or None)], folders searched recursively.

  A file named explicitly is tried whatever its extension (decoding decides);
  inside folders only audio extensions are taken, sorted, so output order is
  stable. Missing paths and folders without audio become error entries.
  """
  out: list[tuple[str, str | None]] = []
  for item in inputs:
    path = os.fspath(item)
    if os.path.isdir(path):
      found: list[tuple[str, str | None]] = []
      for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        found += [(os.path.join(dirpath, d), FOLDER_NAMED_LIKE_AUDIO)
                  for d in dirnames if _audio_name(d)]
        found += [(os.path.join(dirpath, f), None) for f in sorted(filenames) if _audio_name(f)]
      if found:
        out += found
      else:
        out.append((path, f'no audio files ({", ".join(audio.AUDIO_EXTENSIONS)}) in this folder'))
    elif os.path.exists(path):
      out.append((path, None))
    else:
      out.append((path, 'no such file or folder'))
  return out


def _read_columns(path: str, wanted: set[str]) -> tuple[list[str], list[dict[str, str]]]:
  """(header, rows holding only the ``wanted`` columns): a CSV with a million
  columns costs one row of cells at a time, not a million-key dict per row."""
  with open(path, newline='', encoding='utf-8-sig') as f:
    reader = csv.reader(f)
    header = [h.strip() for h in next(reader, [])]
    keep = [(i, h) for i, h in enumerate(header) if h in wanted]
    rows = [{h: cells[i] if i < len(cells) else '' for i, h in keep} for cells in reader]
  return header, rows


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
      header, rows = _read_columns(path, set(ID_COLUMNS) | set(self.names))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
      raise UserError(f'--tabular_csv {path!r} cannot be read: '
                      f'{one_line(getattr(e, "strerror", None) or e)}') from None
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


def tabular_from_features(features: Mapping[str, float], names: Sequence[str],
                          metadata: Mapping[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
  """Raw tabular values from the audio's estimated features (crnn_jax.core.audio_features,
  the same estimates preparation stores); what they lack gets the training mean
  (categorical: code 1)."""
  mean = list(metadata.get('tabular_mean') or [0.0] * len(names))
  categorical = dict(metadata.get('tabular_categorical') or {})
  raw, estimated, imputed = [], [], []
  for i, name in enumerate(names):
    value = tabular.to_number(name, features[name]) if name in features else None
    if value is None:
      imputed.append(name)
      value = IMPUTED_CATEGORICAL_CODE if (name in categorical or name in tabular.CATEGORICAL) \
          else float(mean[i])
    else:
      estimated.append(name)
    raw.append(value)
  info = {'source': 'estimated from the audio (crnn_jax.core.audio_features): estimates, not '
                    "Spotify's values",
          'estimated': estimated, 'imputed': imputed,
          'values': dict(zip(names, (float(v) for v in raw)))}
  return np.asarray(raw, np.float32), info


def tabular_from_row(row: Mapping[str, str], key: str, names: Sequence[str]
                     ) -> tuple[np.ndarray, dict[str, Any]]:
  """Raw tabular values from a --tabular_csv row, converted as preparation does."""
  raw = []
  for name in names:
    value = tabular.to_number(name, row.get(name))  # ValueError: non-numeric / out of range
    if value is None:
      raise ValueError(f'--tabular_csv row {key!r} has no value for {name}')
    raw.append(value)
  info = {'source': f'--tabular_csv row {key!r}',
          'values': dict(zip(names, (float(v) for v in raw)))}
  return np.asarray(raw, np.float32), info
