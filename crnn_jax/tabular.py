"""Encoding of the tabular branch's inputs (SPEC.md section 3).

Data sets store raw values plus, in their metadata, which columns are
categorical and the training split's mean and sample std. Training and
prediction both encode through here, so they agree exactly:
  - continuous columns: (x - mean) / (std + 1e-7), as the reference;
  - categorical columns: the raw 1-based code (reference, 'raw') or a one-hot
    vector ('onehot'), which stops treating key as a number.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

STD_EPSILON = 1e-7
ENCODINGS = ('raw', 'onehot')


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
