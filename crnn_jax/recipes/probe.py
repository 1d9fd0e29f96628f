"""The probe: logistic regression on a pretrained model's embeddings, saved as an ordinary workdir.

A model's embedding (``return_embedding=True``) is the input of its classifier
layer (crnn_jax/model/crnn.py: the GRU readout, 1,280 wide for the reference's
flatten readout and the GRU width for 'mean' or 'last'; in the metal model the
concatenation of ``audio_fc``'s and the tabular MLP's outputs). A logistic
regression on standardised embeddings is linear in them, so it folds exactly
into that layer: kernel = coef / scale, bias = intercept - coef . (mean / scale).
The probe's workdir is the pretrained model (``config.init_from``) with this
classifier layer, written as a step-0 checkpoint (as an imported model), so
evaluation, ``predict``, ``serve``, ``export`` and ``--embeddings`` use it as
any other model; ``probe.json`` records the fit.

The regression learns from the training split's track-mean embeddings (one row
per track: the mean of its windows'), scikit-learn's StandardScaler then
LogisticRegression, its C chosen by inner cross-validation (log-loss), grouped by the
data set's groups (artist, album; a track where the source names none) so no
group is on both sides of an inner split. The saved model, like every model,
scores each window and averages a track's window probabilities.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np
from scipy.special import softmax
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from crnn_jax.core import storage
from crnn_jax.core.errors import UserError
from crnn_jax.data import folds, pipeline, source
from crnn_jax.data.info import DataInfo
from crnn_jax.inference.model import InferenceModel
from crnn_jax.train import finetune, from_weights, trainer

PROBE_FILE = 'probe.json'
MAX_ITER = 5000  # lbfgs on a few hundred standardised rows converges well within this


@dataclasses.dataclass
class Embedded:
  """One split's embeddings: every window's, and which track each belongs to."""
  windows: np.ndarray  # (windows, width) float32
  track: np.ndarray  # (windows,) index into the per-track arrays
  labels: np.ndarray  # (tracks,) class index
  groups: np.ndarray  # (tracks,) folds.groups_of: the artist or album, else the track
  track_ids: np.ndarray  # (tracks,)

  def track_means(self) -> np.ndarray:
    """(tracks, width): the mean of each track's window embeddings."""
    sums = np.zeros((len(self.labels), self.windows.shape[1]), np.float64)
    np.add.at(sums, self.track, self.windows)
    return sums / np.bincount(self.track, minlength=len(self.labels))[:, None]

  def tracks(self, keep: np.ndarray) -> Embedded:
    """The tracks where ``keep`` (a boolean per track) is set, with their windows."""
    index = np.cumsum(keep) - 1
    mine = keep[self.track]
    return Embedded(self.windows[mine], index[self.track[mine]], self.labels[keep],
                    self.groups[keep], self.track_ids[keep])


@dataclasses.dataclass
class Fit:
  """A fitted probe and how its regularisation was chosen."""
  estimator: Pipeline
  C: float
  inner_top1: float | None  # mean inner cross-validated track top-1 at C; None: not chosen
  inner_folds: int

  def head(self, num_classes: int) -> dict[str, np.ndarray]:
    """The classifier layer's {'kernel' (width, classes), 'bias'}: the
    regression folded through the standardisation. Two classes (one
    scikit-learn logit z) become logits (-z/2, z/2), the same softmax; a class
    absent from the training rows gets a logit no input reaches."""
    scaler, regression = self.estimator['scale'], self.estimator['regression']
    coef = regression.coef_ / scaler.scale_[None, :]
    intercept = regression.intercept_ - coef @ scaler.mean_
    if len(regression.classes_) == 2:
      coef, intercept = np.concatenate([-coef, coef]) / 2, np.concatenate([-intercept,
                                                                          intercept]) / 2
    kernel = np.zeros((coef.shape[1], num_classes), np.float32)
    bias = np.full(num_classes, -1e4, np.float32)
    kernel[:, regression.classes_] = coef.T
    bias[regression.classes_] = intercept
    return {'kernel': kernel, 'bias': bias}

  def window_probabilities(self, windows: np.ndarray, num_classes: int) -> np.ndarray:
    """(windows, classes): as the saved model scores each window, through the
    folded layer (a track's are then averaged, as for every model)."""
    head = self.head(num_classes)
    return softmax(np.asarray(windows, np.float64) @ head['kernel'] + head['bias'], axis=-1)

  def record(self) -> dict[str, Any]:
    return {'C': self.C, 'inner_cv_track_top1': self.inner_top1, 'inner_folds': self.inner_folds}


# --------------------------------------------------------------------------
# The pretrained model, and whether a probe of it applies to this data set
# --------------------------------------------------------------------------
def backbone(config: ml_collections.ConfigDict, info: DataInfo
             ) -> tuple[finetune.Pretrained, InferenceModel]:
  """config.init_from's model (loaded as fine-tuning loads it) and its
  InferenceModel; one-line errors where a probe of it does not apply."""
  if not config.get('init_from'):
    raise UserError('the probe reads a pretrained model\'s embeddings: set --config.init_from '
                    '(a shipped model name or a crnn_jax workdir)')
  if config.multilabel:
    raise UserError('the probe is a single-label classifier (softmax over classes): for a '
                    'multi-label data set use --config.recipe=finetune')
  pre = finetune.load(config.init_from)
  check_applies(pre, info)
  # The pretrained model reading this data set's clips (a mean readout takes any length).
  reads = pre.info.to_json()
  reads.update(frames=info.frames, metadata={**reads['metadata'],
                                             'clip': info.metadata.get('clip')})
  model = InferenceModel(pre.config, pre.variables, reads,
                         batch_size=int(config.train.eval_batch_size))
  return pre, model


def check_applies(pre: finetune.Pretrained, info: DataInfo) -> None:
  """The pretrained model must read this data set's inputs unchanged: the same
  tabular columns (its tabular branch is part of the embedding), and with a
  flatten readout clips of its length (its classifier reads every time step)."""
  where = f'config.init_from {pre.workdir!r}'
  theirs = list(pre.info.metadata.get('tabular_names') or [])
  mine = list(info.metadata.get('tabular_names') or [])
  if pre.info.num_tabular != info.num_tabular or theirs != mine:
    raise UserError(
        f'{where}: the probe feeds this data set to the pretrained model unchanged, but the '
        f'model takes tabular columns {theirs or "none"} and the data set has {mine or "none"}; '
        'prepare the data set with the model\'s columns (data_prep build --tabular=...), or '
        'fine-tune (--config.recipe=finetune), which trains a new head')
  readout = pre.config.model.readout
  if readout == 'flatten' and pre.info.frames and info.frames != pre.info.frames:
    seconds = (pre.info.metadata.get('clip') or {}).get('seconds', '?')
    raise UserError(
        f'{where} reads {pre.info.frames} spectrogram frames ({seconds} s clips) with a flatten '
        f'readout (a weight per time step); this data set\'s clips have {info.frames}: '
        f'prepare it with --clip_seconds={seconds}, or probe a model with a mean readout')


# --------------------------------------------------------------------------
# Embeddings, the fit, the folded layer
# --------------------------------------------------------------------------
def embed(model: InferenceModel, config: ml_collections.ConfigDict, info: DataInfo,
          split_source: Any, track_ids: np.ndarray, artist_ids: np.ndarray) -> Embedded:
  """Every example's embedding through the pretrained model (inputs as
  training reads them), with the tracks' labels and groups (folds.groups_of)."""
  windows, labels = [], []
  for batch in pipeline.eval_batches(pipeline.Reader(split_source, info, config),
                                     model.batch_size):
    keep = batch['mask'] > 0
    tab = batch['tabular'][keep] if model.num_tabular else None
    windows.append(model.forward(batch['spectrogram'][keep], tab)[1])
    labels.append(batch['label'][keep])
  label = np.concatenate(labels)
  ids, first, track = np.unique(np.asarray(track_ids, str), return_index=True,
                                return_inverse=True)
  return Embedded(np.concatenate(windows), track.reshape(-1), label[first],
                  folds.groups_of(artist_ids)[first], ids)


def embed_split(model: InferenceModel, config: ml_collections.ConfigDict, info: DataInfo,
                split: str) -> Embedded:
  sources = source.open_sources(config)
  return embed(model, config, info, sources[split], source.read_track_ids(config, split),
               source.read_text(config, split, 'artist_id'))


def inner_folds(labels: np.ndarray, groups: np.ndarray, wanted: int) -> int:
  """Inner folds that fit: every class needs a group in each; 0 when fewer than 2."""
  per_class = [len(set(groups[labels == c])) for c in np.unique(labels)]
  return min([wanted, *per_class]) if min(per_class, default=0) >= 2 else 0


def fit(embedded: Embedded, config: ml_collections.ConfigDict) -> Fit:
  """StandardScaler + LogisticRegression on track-mean embeddings; C from
  config.probe.c_grid by inner cross-validation, the lowest log-loss (on a
  few dozen tracks many C tie on accuracy, and the smallest of them gives
  probabilities near uniform, which a track's average and an average of
  models then weigh too little). The inner folds are data/folds.py's: whole
  groups, every class in every fold, so no inner fit lacks a class (whose
  log-loss would be undefined for every C). With fewer than two groups in
  some class there is no inner split, and C is 1."""
  x, y, groups = embedded.track_means(), embedded.labels, embedded.groups
  if len(np.unique(y)) < 2:
    raise UserError('the probe needs training tracks of at least two classes')
  estimator = Pipeline([('scale', StandardScaler()),
                        ('regression', LogisticRegression(max_iter=MAX_ITER))])
  splits = inner_splits(y, groups, int(config.probe.inner_folds), int(config.seed))
  if not splits:
    estimator.fit(x, y)
    return Fit(estimator, 1.0, None, 0)
  search = GridSearchCV(
      estimator, {'regression__C': [float(c) for c in config.probe.c_grid]},
      scoring={'log_loss': 'neg_log_loss', 'top1': 'accuracy'}, refit='log_loss', cv=splits)
  search.fit(x, y)
  return Fit(search.best_estimator_, float(search.best_params_['regression__C']),
             float(search.cv_results_['mean_test_top1'][search.best_index_]), len(splits))


def inner_splits(labels: np.ndarray, groups: np.ndarray, wanted: int, seed: int
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
  """(train, test) row indices of the inner folds: as many as every class's
  groups allow, up to ``wanted`` (none below two)."""
  for k in range(inner_folds(labels, groups, wanted), 1, -1):
    try:
      fold = folds.assign(labels, groups, k, seed, [str(c) for c in range(labels.max() + 1)])
    except UserError:  # groups shared between classes: try fewer folds
      continue
    return [(np.flatnonzero(fold != f), np.flatnonzero(fold == f)) for f in range(k)]
  return []


# --------------------------------------------------------------------------
# The probe as a workdir
# --------------------------------------------------------------------------
def probe_config(config: ml_collections.ConfigDict, pre: finetune.Pretrained
                 ) -> ml_collections.ConfigDict:
  """The run's config with the pretrained model's fields: the probe is that
  model with another classifier layer, evaluated on its loaded statistics."""
  out = ml_collections.ConfigDict(config.to_dict())
  out.model = ml_collections.ConfigDict(pre.config.model.to_dict())
  out.recipe = 'probe'
  out.eval.recompute_bn = False
  return out


def save(workdir: str, config: ml_collections.ConfigDict, pre: finetune.Pretrained,
         model: InferenceModel, info: DataInfo, fitted: Fit, embedded: Embedded) -> None:
  """config.json, data_info.json, a step-0 checkpoint and probe.json."""
  params = dict(pre.variables['params'])
  params[model.model.classifier_name()] = fitted.head(len(info.class_names))
  from_weights.write_workdir(workdir, config, {'params': params,
                                               'batch_stats': pre.variables['batch_stats']},
                             info.to_json())
  storage.write_json(os.path.join(workdir, PROBE_FILE), {
      **fitted.record(), 'init_from': str(config.init_from), 'classes': list(info.class_names),
      'tracks': len(embedded.labels), 'windows': len(embedded.windows),
      'groups': len(set(embedded.groups)), 'embedding': model.embedding_description(),
      'c_grid': [float(c) for c in config.probe.c_grid],
      'fitted_on': 'track-mean embeddings of the training split (standardised)'})


def train_probe(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Fits the probe on the training split, saves it in ``workdir`` and
  evaluates it on validation and test as any model (results.json, reports)."""
  info = source.load_info(config)
  pre, model = backbone(config, info)
  embedded = embed_split(model, config, info, 'train')
  fitted = fit(embedded, config)
  run_config = probe_config(config, pre)
  save(workdir, run_config, pre, model, info, fitted, embedded)
  inner = ('' if fitted.inner_top1 is None else
           f', inner {fitted.inner_folds}-fold track top-1 {fitted.inner_top1:.3f}')
  print(f'probe: C={fitted.C:g}{inner} on {len(embedded.labels)} training tracks '
        f'({model.embedding_size}-wide embeddings of {config.init_from})', flush=True)
  return trainer.evaluate_only(run_config, workdir)


def read_record(workdir: str) -> Mapping[str, Any] | None:
  """probe.json of a probe workdir; None for other workdirs."""
  path = os.path.join(workdir, PROBE_FILE)
  return storage.read_json(path) if os.path.exists(path) else None
