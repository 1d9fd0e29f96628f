"""Genres of audio files: decode -> windows -> spectrogram images -> scores per file.

Every file goes through exactly what data preparation did (crnn_jax.core.audio,
SPEC.md section 2): decode to mono 22,050 Hz, the model's clip length (the
data set's metadata 'clip', 30 s by default), the reference's uint8
spectrogram image, / 255. A file longer than one clip is scored over every
full non-overlapping window (audio.sliding_windows) and the window
probabilities averaged; a shorter one is zero-padded as in preparation, and
rejected below the data set's minimum length. Windows quieter than
preparation's silence floor are left out. Windows of consecutive files share
fixed-size batches, so a folder costs one compilation.

Outputs: single-label models give softmax probabilities; multi-label ones
(config.multilabel) per-genre sigmoid scores with the config's label
hierarchy applied, and list every genre at or above the threshold chosen on
validation (results.json), else 0.5, besides the top k.

A file that cannot be scored (corrupt, not audio, too short, silent) gets an
entry {'file', 'error'} with a one-line reason; the others are still scored.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from crnn_jax.core import audio, tabular
from crnn_jax.core.errors import UserError
from crnn_jax.inference import inputs
from crnn_jax.inference.model import DEFAULT_BATCH_SIZE, InferenceModel


@dataclasses.dataclass
class PreparedFile:
  """A decoded file ready for the model: its windows and its tabular vector."""
  path: str
  images: np.ndarray  # (windows, 128, frames) uint8, the spectrogram contract
  tabular: np.ndarray | None  # (encoded width,) float32, shared by every window
  tabular_info: dict[str, Any] | None


@dataclasses.dataclass
class _Pending:
  """A file whose windows are on their way through the model."""
  path: str
  windows: int = 0
  tabular_info: dict[str, Any] | None = None
  probs: list[np.ndarray] = dataclasses.field(default_factory=list)
  result: dict[str, Any] | None = None


class Predictor:
  """An InferenceModel applied to audio files."""

  def __init__(self, model: InferenceModel):
    self.model = model

  @classmethod
  def from_workdir(cls, workdir: str, batch_size: int = DEFAULT_BATCH_SIZE,
                   checkpoint: str = 'best') -> Predictor:
    return cls(InferenceModel.from_workdir(workdir, batch_size, checkpoint))

  # ---------------------------------------------------------------- audio
  def prepare_audio(self, y: np.ndarray, path: str = '<array>',
                    tabular_raw: np.ndarray | None = None,
                    tabular_info: dict[str, Any] | None = None) -> PreparedFile:
    """A decoded mono 22,050 Hz signal -> its audible windows' spectrogram images."""
    clip = self.model.clip
    windows = audio.sliding_windows(y, clip.seconds, clip.min_seconds)
    images = [audio.spectrogram_image(w, clip.seconds) for w in windows if not audio.is_silent(w)]
    if not images:
      raise audio.AudioError('silent clip (peak below -80 dBFS)')
    encoded = None
    if self.model.num_tabular:
      if tabular_raw is None:
        tabular_raw, tabular_info = inputs.estimate_tabular(y, self.model.tabular_names,
                                                            self.model.metadata)
      try:
        encoded = tabular.encode(np.asarray(tabular_raw, np.float32), self.model.metadata,
                                 self.model.info.categorical_encoding)
      except (ValueError, KeyError) as e:
        raise UserError(f'tabular settings in data_info.json are unusable: {e}') from None
    return PreparedFile(path, np.stack(images), encoded, tabular_info)

  def prepare_file(self, path: str, table: inputs.TabularTable | None = None) -> PreparedFile:
    """Decode + windows (+ tabular). AudioError / ValueError carry the reason."""
    tabular_raw, tabular_info = None, None
    if self.model.num_tabular and table is not None:  # before decoding: a missing row is cheap
      try:
        row, key = table.lookup(path)
      except KeyError as e:
        raise ValueError(e.args[0]) from None
      tabular_raw, tabular_info = inputs.tabular_from_row(row, key, self.model.tabular_names)
    return self.prepare_audio(audio.load_audio(path), path, tabular_raw, tabular_info)

  def _prepare_or_error(self, path: str, table: inputs.TabularTable | None
                        ) -> PreparedFile | str:
    try:
      return self.prepare_file(path, table)
    except UserError:
      raise
    except (audio.AudioError, ValueError) as e:
      return inputs.one_line(e)
    except Exception as e:  # noqa: BLE001  one bad file must not stop the others
      return inputs.one_line(f'unexpected error: {type(e).__name__}: {e}')[:300]

  def _prepared(self, entries: Sequence[tuple[str, str | None]],
                table: inputs.TabularTable | None, workers: int
                ) -> Iterator[tuple[str, PreparedFile | str]]:
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
  def iter_predict(self, paths: Iterable[str | os.PathLike], tabular_csv: str | None = None,
                   top_k: int = 5, num_workers: int | None = None) -> Iterator[dict[str, Any]]:
    """One result dict per file, in input order, as soon as it is scored.

    Windows of consecutive files are packed into the same batches; a file's
    result comes out once its last window has been through the model.
    """
    if int(top_k) < 1:
      raise UserError(f'--top_k must be at least 1, got {top_k}')
    table = (inputs.TabularTable(tabular_csv, self.model.tabular_names)
             if tabular_csv and self.model.num_tabular else None)
    workers = int(num_workers if num_workers is not None else min(4, os.cpu_count() or 1))
    order: collections.deque[_Pending] = collections.deque()
    queue: list[tuple[_Pending, np.ndarray, np.ndarray | None]] = []
    for path, prepared in self._prepared(inputs.expand_inputs(paths), table, workers):
      if isinstance(prepared, str):
        order.append(_Pending(path, result={'file': path, 'error': prepared}))
      else:
        pending = _Pending(path, len(prepared.images), prepared.tabular_info)
        order.append(pending)
        queue += [(pending, img, prepared.tabular) for img in prepared.images]
      while len(queue) >= self.model.batch_size:
        self._score(queue[:self.model.batch_size], top_k)
        del queue[:self.model.batch_size]
      yield from _finished(order)
    if queue:
      self._score(queue, top_k)
    yield from _finished(order)

  def _score(self, batch: list[tuple[_Pending, np.ndarray, np.ndarray | None]],
             top_k: int) -> None:
    """One batch of windows through the model; files whose last window it held get results."""
    images = np.stack([img for _, img, _ in batch])
    tab = np.stack([t for _, _, t in batch]) if self.model.num_tabular else None
    probs = self.model.probabilities(self.model.logits(images, tab))
    for (pending, _, _), p in zip(batch, probs):
      pending.probs.append(p)
      if len(pending.probs) == pending.windows:
        pending.result = self.summarise(pending.path, np.stack(pending.probs), top_k,
                                        pending.tabular_info)

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
    """A file's result from its windows' probabilities."""
    scores = self.model.track_scores(window_probs)
    ranked = np.argsort(-scores, kind='stable')
    names = self.model.class_names

    def entry(i: int) -> dict[str, Any]:
      return {'genre': names[i], 'probability': float(scores[i])}

    result: dict[str, Any] = {
        'file': path,
        'windows': len(window_probs),
        'top_k': [entry(int(i)) for i in ranked[:top_k]],
        'probabilities': {n: float(s) for n, s in zip(names, scores)},
    }
    if self.model.multilabel:
      result['threshold'] = self.model.threshold
      result['above_threshold'] = [entry(int(i)) for i in ranked
                                   if scores[i] >= self.model.threshold]
    if tabular_info is not None:
      result['tabular'] = tabular_info
    return result


def _finished(order: collections.deque[_Pending]) -> Iterator[dict[str, Any]]:
  """Results of the files at the head of the queue that are complete, in order."""
  while order and order[0].result is not None:
    yield order.popleft().result
