"""A model (a workdir's, or one shipped with crnn_jax), ready to score spectrogram images."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from scipy.special import expit, softmax

from crnn_jax import model as model_lib
from crnn_jax.core import audio, labels, xla_defaults
from crnn_jax.core.errors import UserError
from crnn_jax.data.info import DataInfo
from crnn_jax.pretrained import resolve
from crnn_jax.workdir import checkpoints

DEFAULT_THRESHOLD = 0.5
DEFAULT_BATCH_SIZE = 16


Member = tuple[nn.Module, dict[str, Any]]  # a network and its variables


class InferenceModel:
  """Weights, config and data description of a model, with a jitted apply.

  Every call of the compiled function has the same (batch_size, ...) shape,
  so scoring any number of images costs one compilation. A model can be the
  average of several networks (``average_of``: each one's config and
  variables; config.recipe='average'): its probabilities are the mean of
  theirs, its logits their log, and its embedding theirs side by side; the
  exported graph holds every network.
  """

  def __init__(self, config: ml_collections.ConfigDict, variables: Mapping[str, Any],
               data_info: Mapping[str, Any], batch_size: int = DEFAULT_BATCH_SIZE,
               threshold: float | None = None, threshold_source: str = '', workdir: str = '',
               name: str = '',
               average_of: Sequence[tuple[ml_collections.ConfigDict, Mapping[str, Any]]] = ()):
    if int(batch_size) < 1:
      raise UserError(f'--batch_size must be at least 1, got {batch_size}')
    self.config = config
    self.workdir = workdir
    self.name = name  # of a shipped model (crnn_jax.pretrained); '' for a workdir's
    self.info = DataInfo.from_json(data_info)
    self.batch_size = int(batch_size)
    self.class_names = tuple(self.info.class_names)
    self.metadata = dict(self.info.metadata)
    self.clip = audio.ClipSettings.from_metadata(self.metadata.get('clip'))
    self.frames = audio.num_frames(self.clip.seconds)
    if self.info.frames is not None and int(self.info.frames) != self.frames:
      raise UserError(f'the model takes {self.info.frames} spectrogram frames but its clip '
                      f'settings ({self.clip.seconds:g} s) give {self.frames}: data_info.json in '
                      f'{workdir or "the workdir"!r} is inconsistent')
    self.num_tabular = int(self.info.num_tabular)
    self.tabular_names = list(self.metadata.get('tabular_names') or []) if self.num_tabular else []
    if len(self.metadata.get('tabular_mean') or []) != len(self.tabular_names):
      who = (f'the shipped model {name!r}' if name else f'workdir {workdir!r}' if workdir
             else 'this model')
      raise UserError(f'{who} cannot score audio: its tabular standardisation is '
                      f'{self.metadata.get("tabular_stats_source") or "missing"}')
    self.multilabel = bool(config.get('multilabel', False))
    self.threshold = float(DEFAULT_THRESHOLD if threshold is None else threshold)
    self.threshold_source = threshold_source or ('given' if threshold is not None else 'default')
    self.ancestors = (labels.hierarchy_matrix(self.class_names, config.get('label_hierarchy'))
                      if self.multilabel else None)
    if average_of and self.multilabel:
      raise UserError('an average of multi-label models is not supported')
    self.members: list[Member] = [
        (model_lib.create_model(c.model, len(self.class_names), self.num_tabular,
                                dtype=model_lib.compute_dtype(c.train.dtype)),
         {'params': v['params'], 'batch_stats': v.get('batch_stats', {})})
        for c, v in (average_of or [(config, variables)])]
    self.model, self.variables = self.members[0]  # the only network, or an average's first
    self._apply = jax.jit(self._forward, compiler_options=xla_defaults.inference_compiler_options(
        jax.default_backend()))
    dummy = model_lib.dummy_inputs(self.model, audio.N_MELS, self.frames)
    self.embedding_sizes = [int(jax.eval_shape(
        lambda v, *x, m=m: m.apply(v, *x, train=False, return_embedding=True), v, *dummy
    )[1].shape[-1]) for m, v in self.members]
    self.embedding_size = sum(self.embedding_sizes)

  def _forward(self, member_variables: Sequence[Mapping[str, Any]], model_input: jax.Array,
               tabular: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """(logits, embeddings) of the model: an average's are the log of its
    networks' mean probabilities and their embeddings side by side."""
    outputs = [m.apply(v, model_input, tabular, train=False, return_embedding=True)
               for (m, _), v in zip(self.members, member_variables)]
    if len(outputs) == 1:
      return outputs[0]
    return (average_logits([logits for logits, _ in outputs]),
            jnp.concatenate([e.astype(jnp.float32) for _, e in outputs], axis=-1))

  @property
  def member_variables(self) -> list[dict[str, Any]]:
    return [v for _, v in self.members]

  @classmethod
  def load(cls, model: str | None = None, workdir: str | None = None,
           batch_size: int = DEFAULT_BATCH_SIZE, checkpoint: str = 'best') -> InferenceModel:
    """A shipped model by name, or a workdir's: its best checkpoint where the
    run kept one (else the latest), or the latest with ``checkpoint='latest'``,
    and the multi-label threshold from results.json. Exactly one of the two."""
    found = resolve.load(model, workdir, checkpoint)
    loaded = cls(found.config, found.variables, found.data_info, batch_size=batch_size,
                 threshold=found.threshold, threshold_source=found.threshold_source,
                 workdir=found.workdir, name=found.name,
                 average_of=[(m.config, m.variables) for m in found.members])
    for (network, _), member in zip(loaded.members, found.members or [found]):
      checkpoints.check_shapes(model_lib.abstract_variables(network, audio.N_MELS, loaded.frames),
                               member.variables, member.origin)
    return loaded

  @classmethod
  def from_workdir(cls, workdir: str, batch_size: int = DEFAULT_BATCH_SIZE,
                   checkpoint: str = 'best') -> InferenceModel:
    return cls.load(workdir=workdir, batch_size=batch_size, checkpoint=checkpoint)

  def logits(self, images: np.ndarray, tabular: np.ndarray | None = None) -> np.ndarray:
    """uint8 spectrogram images (n, 128, frames) [+ encoded tabular (n, k)] ->
    float32 logits (n, classes)."""
    return self.forward(images, tabular)[0]

  def forward(self, images: np.ndarray, tabular: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """(logits (n, classes), embeddings (n, embedding_size)), float32, in
    fixed-size batches (the last one padded): one compilation for any n."""
    images = np.asarray(images, np.uint8)
    if images.ndim != 3 or images.shape[1:] != (audio.N_MELS, self.frames):
      raise ValueError(f'expected images (n, {audio.N_MELS}, {self.frames}), got {images.shape}')
    if self.num_tabular and (tabular is None or np.shape(tabular) != (len(images),
                                                                      self.num_tabular)):
      raise ValueError(f'this model needs tabular inputs of shape ({len(images)}, '
                       f'{self.num_tabular}), got {None if tabular is None else np.shape(tabular)}')
    b = self.batch_size
    logits, embeddings = [np.zeros((0, len(self.class_names)), np.float32)], [
        np.zeros((0, self.embedding_size), np.float32)]
    for start in range(0, len(images), b):
      chunk = images[start:start + b]
      n = len(chunk)
      spec = np.zeros((b, audio.N_MELS, self.frames), np.uint8)
      spec[:n] = chunk
      tab = None
      if self.num_tabular:
        tab = np.zeros((b, self.num_tabular), np.float32)
        tab[:n] = tabular[start:start + n]
      out, emb = self._apply(self.member_variables, audio.image_to_model_input(spec), tab)
      logits.append(np.asarray(out, np.float32)[:n])
      embeddings.append(np.asarray(emb, np.float32)[:n])
    return np.concatenate(logits), np.concatenate(embeddings)

  def log_probs_and_embeddings(self, model_input: jax.Array, tabular: jax.Array | None = None
                               ) -> tuple[jax.Array, jax.Array]:
    """float32 model input (batch, 128, frames) [+ encoded tabular] ->
    (log-probabilities, embeddings): the function an export writes out.
    Log-softmax, or log-sigmoid per class for multi-label models."""
    logits, embeddings = self._forward(self.member_variables, model_input, tabular)
    log_probs = jax.nn.log_sigmoid(logits) if self.multilabel else jax.nn.log_softmax(logits)
    return log_probs, embeddings.astype(np.float32)

  def classify(self, embeddings: np.ndarray) -> np.ndarray:
    """Logits from embeddings: the model's classifier layer alone (an
    average's: each network's on its part of the embedding, averaged)."""
    parts = np.split(np.asarray(embeddings, np.float32), np.cumsum(self.embedding_sizes)[:-1],
                     axis=-1)
    logits = []
    for (network, v), part in zip(self.members, parts):
      head = nn.Dense(len(self.class_names), dtype=network.dtype)
      logits.append(head.apply({'params': v['params'][network.classifier_name()]}, part))
    return np.asarray(logits[0] if len(logits) == 1 else average_logits(logits), np.float32)

  def embedding_description(self) -> str:
    """What an embedding is, for the files that hold them."""
    described = [_embedding_description(network, size, self.num_tabular)
                 for (network, _), size in zip(self.members, self.embedding_sizes)]
    if len(described) == 1:
      return described[0]
    return (f'the {len(described)} averaged networks\' embeddings side by side '
            f'({self.embedding_size} wide): ' + '; '.join(described))

  def probabilities(self, logits: np.ndarray) -> np.ndarray:
    """Softmax (single-label) or sigmoid (multi-label) of each window's logits."""
    x = np.asarray(logits, np.float64)
    return expit(x) if self.multilabel else softmax(x, axis=-1)

  def track_scores(self, window_probs: np.ndarray) -> np.ndarray:
    """Average over a track's windows; multi-label: then the label hierarchy
    (a parent scores at least its best child), as evaluation applies it."""
    scores = np.asarray(window_probs, np.float64).mean(axis=0)
    if self.ancestors is not None:
      scores = labels.apply_hierarchy_to_scores(scores[None], self.ancestors)[0]
    return scores

  def describe(self) -> dict[str, Any]:
    """What the output's numbers mean (the JSON header, the text header)."""
    d: dict[str, Any] = {
        'workdir': os.path.abspath(self.workdir) if self.workdir else '',
        'model': self.name,
        'classes': list(self.class_names),
        'multilabel': self.multilabel,
        'clip_seconds': self.clip.seconds,
        'min_seconds': self.clip.min_seconds,
        'scores': 'sigmoid, label hierarchy applied' if self.multilabel else 'softmax',
        'embedding': self.embedding_description(),
    }
    if len(self.members) > 1:
      d['average_of'] = len(self.members)
    if self.multilabel:
      d['threshold'] = self.threshold
      d['threshold_source'] = self.threshold_source
    if self.num_tabular:
      d['tabular_names'] = list(self.tabular_names)
    return d


def average_logits(logits: Sequence[jax.Array]) -> jax.Array:
  """Logits whose softmax is the mean of the given logits' softmaxes (the log
  of the mean probabilities)."""
  log_probs = jnp.stack([jax.nn.log_softmax(x.astype(jnp.float32)) for x in logits])
  return jax.nn.logsumexp(log_probs, axis=0) - jnp.log(float(len(logits)))


def _embedding_description(network: nn.Module, size: int, num_tabular: int) -> str:
  name = network.classifier_name()
  if num_tabular:
    return (f'input of {name} ({size} wide): audio_fc output ({network.audio_fc_features}) '
            f'then tabular MLP output ({size - network.audio_fc_features})')
  return f'input of {name} ({size} wide): the {network.readout} GRU readout'
