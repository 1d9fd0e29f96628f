"""Genres of audio files: decode -> windows -> spectrogram images -> scores per file.

Every file goes through exactly what data preparation did (crnn_jax.core.audio,
docs/reference.md section 2): decode to mono 22,050 Hz, the model's clip length (the
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

Files are decoded a block at a time (audio.AudioSource.blocks) and cut into
windows as they come, so a long file costs one block of its own samples plus
its windows' uint8 images, never its whole decoded signal; a model with
tabular inputs estimated from the audio streams over the file once more
(audio_features.estimate_file, at most its centre 5 minutes held).
With ``details`` each result also carries a WindowDetails: every window's
start, probabilities, embedding (the classifier layer's input) and image, for
embeddings (embeddings.py), the web page and anything else per window.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from crnn_jax.core import audio, audio_features, tabular
from crnn_jax.core.errors import UserError
from crnn_jax.inference import embeddings as embeddings_lib
from crnn_jax.inference import inputs
from crnn_jax.inference.model import DEFAULT_BATCH_SIZE, InferenceModel


@dataclasses.dataclass
class PreparedFile:
  """A decoded file ready for the model: its windows and its tabular vector."""
  path: str
  images: np.ndarray  # (windows, 128, frames) uint8, the spectrogram contract
  starts: np.ndarray  # (windows,) float32: where each window begins, in seconds
  tabular: np.ndarray | None  # (encoded width,) float32, shared by every window
  tabular_info: dict[str, Any] | None
  audio_info: dict[str, Any]  # seconds decoded; the file's channels and sample rate


@dataclasses.dataclass
class WindowDetails:
  """Per-window outputs of one file (``iter_predict(details=True)``)."""
  starts: np.ndarray  # (windows,) float32 seconds; silent windows are left out
  probabilities: np.ndarray  # (windows, classes), softmax or sigmoid
  embeddings: np.ndarray  # (windows, embedding size) float32
  images: np.ndarray  # (windows, 128, frames) uint8: what the model saw
  audio_info: dict[str, Any]


@dataclasses.dataclass
class _Pending:
  """A file whose windows are on their way through the model."""
  path: str
  prepared: PreparedFile | None = None
  probs: list[np.ndarray] = dataclasses.field(default_factory=list)
  embeddings: list[np.ndarray] = dataclasses.field(default_factory=list)
  result: dict[str, Any] | None = None


class Predictor:
  """An InferenceModel applied to audio files."""

  def __init__(self, model: InferenceModel):
    self.model = model

  @classmethod
  def load(cls, model: str | None = None, workdir: str | None = None,
           batch_size: int = DEFAULT_BATCH_SIZE, checkpoint: str = 'best') -> Predictor:
    """A shipped model by name, or a workdir's (InferenceModel.load)."""
    return cls(InferenceModel.load(model, workdir, batch_size, checkpoint))

  @classmethod
  def from_workdir(cls, workdir: str, batch_size: int = DEFAULT_BATCH_SIZE,
                   checkpoint: str = 'best') -> Predictor:
    return cls.load(workdir=workdir, batch_size=batch_size, checkpoint=checkpoint)

  # ---------------------------------------------------------------- audio
  def prepare_file(self, path: str, table: inputs.TabularTable | None = None) -> PreparedFile:
    """Decode + windows (+ tabular). AudioError / ValueError carry the reason.

    The file is decoded a block at a time (audio.AudioSource.blocks) and cut
    into windows as they come: a long file costs one block plus its windows'
    images (~165 kB each, 20 MB an hour at 30 s), never the whole decoded signal.
    """
    tabular_raw, tabular_info = None, None
    if self.model.num_tabular and table is not None:  # before decoding: a missing row is cheap
      try:
        row, key = table.lookup(path)
      except KeyError as e:
        raise ValueError(e.args[0]) from None
      tabular_raw, tabular_info = inputs.tabular_from_row(row, key, self.model.tabular_names)
    source = audio.open_audio(path)  # paths that must not be opened are refused here
    return self._prepare(source.blocks(), path, tabular_raw, tabular_info,
                         {'channels': source.channels, 'sample_rate': source.sample_rate},
                         lambda: audio_features.estimate_file(path))

  def _prepare(self, blocks: Iterable[np.ndarray], path: str, tabular_raw: np.ndarray | None,
               tabular_info: dict[str, Any] | None, audio_info: dict[str, Any],
               features: Callable[[], dict[str, float]]) -> PreparedFile:
    """Windows of a signal given in blocks -> images of the audible ones; tabular
    inputs from the row, else estimated from ``features()``."""
    clip = self.model.clip
    samples = [0]

    def counted() -> Iterator[np.ndarray]:
      for block in blocks:
        samples[0] += len(block)
        yield block

    images, starts = [], []
    for start, window in audio.stream_windows(counted(), clip.seconds, clip.min_seconds):
      if not audio.is_silent(window):
        images.append(audio.spectrogram_image(window, clip.seconds))
        starts.append(start)
    if not images:
      raise audio.AudioError('silent clip (peak below -80 dBFS)')
    encoded = None
    if self.model.num_tabular:
      if tabular_raw is None:
        tabular_raw, tabular_info = inputs.tabular_from_features(
            features(), self.model.tabular_names, self.model.metadata)
      try:
        encoded = tabular.encode(np.asarray(tabular_raw, np.float32), self.model.metadata,
                                 self.model.info.categorical_encoding)
      except (ValueError, KeyError) as e:
        raise UserError(f'tabular settings in data_info.json are unusable: {e}') from None
    audio_info = {'seconds': samples[0] / audio.SAMPLE_RATE, **audio_info}
    return PreparedFile(path, np.stack(images), np.asarray(starts, np.float32), encoded,
                        tabular_info, audio_info)

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
                   top_k: int = 5, num_workers: int | None = None, details: bool = False
                   ) -> Iterator[dict[str, Any]]:
    """One result dict per file, in input order, as soon as it is scored.

    Folders are searched recursively (inputs.expand_inputs). Windows of
    consecutive files are packed into the same batches; a file's result comes
    out once its last window has been through the model. With ``details``, a
    scored file's result also holds 'details': WindowDetails.
    """
    return self.iter_predict_entries(inputs.expand_inputs(paths), tabular_csv, top_k,
                                     num_workers, details)

  def iter_predict_entries(self, entries: Sequence[tuple[str, str | None]],
                           tabular_csv: str | None = None, top_k: int = 5,
                           num_workers: int | None = None, details: bool = False
                           ) -> Iterator[dict[str, Any]]:
    """``iter_predict`` of inputs already expanded: (path, why it cannot be
    scored or None), as inputs.expand_inputs gives them."""
    if int(top_k) < 1:
      raise UserError(f'--top_k must be at least 1, got {top_k}')
    table = (inputs.TabularTable(tabular_csv, self.model.tabular_names)
             if tabular_csv and self.model.num_tabular else None)
    workers = int(num_workers if num_workers is not None else min(4, os.cpu_count() or 1))
    order: collections.deque[_Pending] = collections.deque()
    queue: list[tuple[_Pending, int]] = []  # (file, window index)
    for path, prepared in self._prepared(entries, table, workers):
      if isinstance(prepared, str):
        order.append(_Pending(path, result={'file': path, 'error': prepared}))
      else:
        pending = _Pending(path, prepared)
        order.append(pending)
        queue += [(pending, i) for i in range(len(prepared.images))]
      while len(queue) >= self.model.batch_size:
        self._score(queue[:self.model.batch_size], top_k, details)
        del queue[:self.model.batch_size]
      yield from _finished(order)
    if queue:
      self._score(queue, top_k, details)
    yield from _finished(order)

  def _score(self, batch: list[tuple[_Pending, int]], top_k: int, details: bool) -> None:
    """One batch of windows through the model; files whose last window it held get results."""
    images = np.stack([pending.prepared.images[i] for pending, i in batch])
    tab = (np.stack([pending.prepared.tabular for pending, _ in batch])
           if self.model.num_tabular else None)
    logits, embeddings = self.model.forward(images, tab)
    probs = self.model.probabilities(logits)
    for (pending, _), p, e in zip(batch, probs, embeddings):
      pending.probs.append(p)
      pending.embeddings.append(e)
      prepared = pending.prepared
      if len(pending.probs) == len(prepared.images):
        window_probs = np.stack(pending.probs)
        pending.result = self.summarise(pending.path, window_probs, top_k,
                                        prepared.tabular_info)
        if details:
          pending.result['details'] = WindowDetails(
              prepared.starts, window_probs, np.stack(pending.embeddings), prepared.images,
              prepared.audio_info)
        pending.prepared = None  # its images are no longer needed here

  def predict_files(self, paths: Iterable[str | os.PathLike], tabular_csv: str | None = None,
                    top_k: int = 5, num_workers: int | None = None, details: bool = False
                    ) -> list[dict[str, Any]]:
    """Results of every file (folders searched recursively), in input order.

    Each is {'file', 'windows', 'top_k': [{'genre', 'probability'}],
    'probabilities': {genre: p}} (+ 'threshold' and 'above_threshold' for
    multi-label models, + 'tabular' where the model has that branch, +
    'details' if asked), or {'file', 'error'} for a file that could not be scored.
    """
    return list(self.iter_predict(paths, tabular_csv, top_k, num_workers, details))

  def embed_files(self, paths: Iterable[str | os.PathLike], tabular_csv: str | None = None,
                  num_workers: int | None = None) -> embeddings_lib.Embeddings:
    """Per-window and track-mean embeddings of every file that could be scored
    (``Embeddings.errors`` names the others and why)."""
    return embeddings_lib.Embeddings.from_results(
        self.iter_predict(paths, tabular_csv, num_workers=num_workers, details=True), self.model)

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
