"""The tabular branch's schema and encoding (docs/reference.md section 3).

One definition of the reference's 16 columns, of which are categorical, of how
a source value in Spotify's conventions becomes a stored number, and of how
stored numbers become model input. Data preparation, training, prediction and
the reference import all go through here, so they agree exactly:
  - stored: categorical columns as 1-based codes (explicit 1..2, key 1..12,
    mode 1..2), continuous ones as given;
  - encoded, continuous: (x - mean) / (std + 1e-7) with the training split's
    mean and sample std, as the reference;
  - encoded, categorical: the raw code (reference, 'raw') or a one-hot vector
    ('onehot'), which stops treating key as a number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# The reference metal model's 16 inputs, in vector order.
REFERENCE_COLUMNS = (
    'explicit', 'key', 'mode', 'acousticness', 'danceability', 'duration_ms', 'energy',
    'instrumentalness', 'liveness', 'loudness', 'num_sections', 'popularity', 'speechiness',
    'tempo', 'time_signature', 'valence')
# Categorical columns -> number of categories (stored as 1-based codes).
CATEGORICAL = {'explicit': 2, 'key': 12, 'mode': 2}
STD_EPSILON = 1e-7
ENCODINGS = ('raw', 'onehot')


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


def training_stats(rows: np.ndarray, names: Sequence[str]) -> tuple[list[float], list[float]]:
  """Training-split mean and sample std per column; categorical columns get 0 and 1."""
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


def _check(encoding: str) -> None:
  if encoding not in ENCODINGS:
    raise ValueError(f'unknown categorical encoding {encoding!r}: use one of {ENCODINGS}')


def encoded_size(metadata: Mapping[str, Any], encoding: str) -> int:
  """Width of the encoded vector: what the model's tabular branch receives."""
  _check(encoding)
  names = list(metadata.get('tabular_names', []))
  categorical = dict(metadata.get('tabular_categorical', {}))
  if encoding == 'raw':
    return len(names)
  return sum(int(categorical[n]) if n in categorical else 1 for n in names)


def encode(raw: np.ndarray, metadata: Mapping[str, Any], encoding: str) -> np.ndarray:
  """raw (..., k) float -> encoded (..., encoded_size) float32."""
  _check(encoding)
  names = list(metadata.get('tabular_names', []))
  raw = np.asarray(raw, dtype=np.float32)
  if raw.shape[-1] != len(names):
    raise ValueError(f'expected {len(names)} tabular values ({names}), got {raw.shape[-1]}')
  if not names:
    return raw
  categorical = dict(metadata.get('tabular_categorical', {}))
  mean = np.asarray(metadata['tabular_mean'], dtype=np.float32)
  std = np.asarray(metadata['tabular_std'], dtype=np.float32)
  columns = []
  for i, name in enumerate(names):
    x = raw[..., i]
    if name not in categorical:
      columns.append(((x - mean[i]) / (std[i] + STD_EPSILON))[..., None])
    elif encoding == 'raw':
      columns.append(x[..., None])
    else:
      n = int(categorical[name])
      codes = np.clip(np.rint(x).astype(np.int64) - 1, 0, n - 1)
      columns.append(np.eye(n, dtype=np.float32)[codes])
  return np.concatenate(columns, axis=-1).astype(np.float32)


def contract(metadata: Mapping[str, Any], encoding: str) -> dict[str, Any]:
  """How raw values become the model's tabular input, as data (the export's JSON)."""
  _check(encoding)
  names = list(metadata.get('tabular_names', []))
  categorical = {n: int(k) for n, k in dict(metadata.get('tabular_categorical', {})).items()}
  return {
      'names': names,
      'categorical': categorical,
      'mean': [float(x) for x in metadata.get('tabular_mean', [])],
      'std': [float(x) for x in metadata.get('tabular_std', [])],
      'std_epsilon': STD_EPSILON,
      'encoding': encoding,
      'encoded_size': encoded_size(metadata, encoding),
      'raw_values': 'categorical columns as 1-based codes (Spotify conventions: explicit '
                    'false/true -> 1/2, key 0..11 -> 1..12, mode 0/1 -> 1/2); others as given',
      'formula': ('continuous: (x - mean) / (std + std_epsilon); categorical: '
                  + ('the code itself' if encoding == 'raw' else 'one-hot of code - 1')
                  + '; in the order of names'),
  }
