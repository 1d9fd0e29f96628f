"""Embeddings of audio files: what the model's classifier layer receives.

Per file, one embedding per scored window and their mean (the track
embedding), with the windows' start times. ``Predictor.embed_files`` makes
them with the same decoding, windows and batches as prediction
(``iter_predict(details=True)``); ``InferenceModel.classify`` turns them back
into the model's logits. The reference's genre model embeds a window in the
1,280 numbers of its flattened GRU output; ``mean``/``last`` readouts in the
GRU width; the metal model in the 96 numbers its final layer joins
(``audio_fc``'s 64, then the tabular MLP's 32).

Two file formats, chosen by extension, both read without crnn_jax:
  .npz      numpy: ``files`` (F,), ``track`` (F, D), ``windows`` (W, D),
            ``window_file`` (W,) index into files, ``window_start`` (W,)
            seconds, ``window_seconds``, ``description``
  .parquet  one row per file (pandas.read_parquet / pyarrow): ``file``,
            ``windows``, ``window_start`` (list), ``window_embeddings`` (list of
            D-vectors), ``track_embedding`` (D-vector); the description and
            window length in the schema metadata
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from crnn_jax.core import storage
from crnn_jax.core.errors import UserError
from crnn_jax.inference.model import InferenceModel

FORMATS = ('.npz', '.parquet')
DEFAULT_FORMAT = '.npz'  # a name without an extension gets it, as numpy.savez does


def target_path(path: str | os.PathLike) -> str:
  """Where embeddings named ``path`` are written: as given with a known
  extension, with .npz added without one; a UserError for another extension."""
  path = os.fspath(path)
  ext = os.path.splitext(path)[1].lower()
  if not ext:
    return path + DEFAULT_FORMAT
  if ext not in FORMATS:
    raise UserError(f'--embeddings {path!r}: name a .npz or .parquet file (without an '
                    f'extension, {DEFAULT_FORMAT} is added)')
  return path


@dataclasses.dataclass
class Embeddings:
  """Embeddings of several files; ``errors`` maps files that failed to the reason."""
  files: list[str]
  windows: list[np.ndarray]  # per file: (windows, D) float32
  starts: list[np.ndarray]  # per file: (windows,) float32 seconds
  window_seconds: float
  description: str
  errors: dict[str, str] = dataclasses.field(default_factory=dict)

  @classmethod
  def empty(cls, model: InferenceModel) -> Embeddings:
    return cls([], [], [], model.clip.seconds, model.embedding_description())

  @classmethod
  def from_results(cls, results: Iterable[Mapping[str, Any]], model: InferenceModel
                   ) -> Embeddings:
    """From ``iter_predict(..., details=True)`` results."""
    out = cls.empty(model)
    for result in results:
      out.add(result)
    return out

  def add(self, result: Mapping[str, Any]) -> None:
    """One ``iter_predict(..., details=True)`` result (an error is noted)."""
    if 'error' in result:
      self.errors[result['file']] = result['error']
      return
    details = result['details']
    self.files.append(result['file'])
    self.windows.append(np.asarray(details.embeddings, np.float32))
    self.starts.append(np.asarray(details.starts, np.float32))

  @property
  def size(self) -> int:
    return int(self.windows[0].shape[-1]) if self.windows else 0

  def track(self) -> np.ndarray:
    """(files, D) float32: the mean of each file's window embeddings."""
    if not self.windows:
      return np.zeros((0, 0), np.float32)
    return np.stack([w.mean(axis=0, dtype=np.float64) for w in self.windows]).astype(np.float32)

  # ------------------------------------------------------------------ files
  def save(self, path: str | os.PathLike) -> str:
    """Writes .npz or .parquet (by extension, ``target_path``), atomically;
    returns the path written."""
    path = target_path(path)
    if os.path.splitext(path)[1].lower() == '.npz':
      data = self.npz_bytes()
    else:
      sink = io.BytesIO()
      pq.write_table(self.table(), sink)
      data = sink.getvalue()
    try:
      with storage.atomic_write(path, 'wb') as f:
        f.write(data)
    except OSError as e:
      raise UserError(f'--embeddings {path!r} cannot be written: {e.strerror or e}') from None
    return path

  def npz_bytes(self) -> bytes:
    """The .npz file's bytes (also the web page's download)."""
    windows, starts, counts = self._flat()
    sink = io.BytesIO()
    np.savez(sink, files=np.asarray(self.files, dtype=str),
             track=self.track(), windows=windows,
             window_file=np.repeat(np.arange(len(counts), dtype=np.int32), counts),
             window_start=starts, window_seconds=np.float32(self.window_seconds),
             description=np.asarray(self.description))
    return sink.getvalue()

  def table(self) -> pa.Table:
    """One row per file, as the .parquet file holds it."""
    windows, starts, counts = self._flat()
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))

    def vectors(rows: np.ndarray) -> pa.Array:
      return pa.FixedSizeListArray.from_arrays(pa.array(rows.ravel(), pa.float32()), self.size)

    columns = {
        'file': pa.array(self.files, pa.string()),
        'windows': pa.array(counts, pa.int32()),
        'window_start': pa.ListArray.from_arrays(offsets, pa.array(starts, pa.float32())),
        'window_embeddings': pa.ListArray.from_arrays(offsets, vectors(windows)),
        'track_embedding': vectors(self.track()),
    }
    metadata = {'description': self.description, 'window_seconds': str(self.window_seconds)}
    return pa.table(columns, metadata=metadata)

  def _flat(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(windows (W, D), starts (W,), windows per file (F,)), file after file."""
    counts = np.asarray([len(w) for w in self.windows], np.int64)
    if not self.windows:
      return np.zeros((0, 0), np.float32), np.zeros(0, np.float32), counts
    return np.concatenate(self.windows), np.concatenate(self.starts), counts
