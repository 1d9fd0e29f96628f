"""Evaluation reports: metrics of a split, results.json, tables and pictures.

Single-label: top-1/top-k, balanced accuracy, per-class precision/recall/F1
with macro and weighted averages, the confusion matrix (PNG and CSV) and the
most-confused pairs named from the data set's own class list. Multi-label:
mAP, ROC-AUC, example-based F1 at a threshold chosen on validation, and top-k
"hit" rates comparable with the single-label numbers.

Every split is scored per clip and per track (``'track'``): a track's score is
the mean of its windows' probabilities, as prediction scores a long file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from scipy.special import expit, log_softmax, logsumexp, softmax

from crnn_jax.core import labels, storage
from crnn_jax.data.info import DataInfo
from crnn_jax.evaluate import metrics, plots
from crnn_jax.workdir.files import PREDICTIONS_FILE, RESULTS_FILE

# 'logits', 'loss', 'label', 'label_set' of a split's clips; optionally 'track_id'
Predictions = Mapping[str, np.ndarray]


def multilabel_scores(pred: Predictions, ancestors: np.ndarray | None
                      ) -> tuple[np.ndarray, np.ndarray]:
  """(targets, sigmoid scores), with the label hierarchy applied to both."""
  scores = expit(pred['logits'].astype(np.float64))
  targets = pred['label_set'] > 0.5
  if ancestors is not None:
    targets = labels.apply_hierarchy_to_targets(targets, ancestors)
    scores = labels.apply_hierarchy_to_scores(scores, ancestors)
  return targets, scores


def track_predictions(pred: Predictions, multilabel: bool) -> dict[str, np.ndarray]:
  """One row per track (in order of first appearance): scores from the mean of
  its windows' probabilities, as logits (log p; multi-label: log-odds) so the
  clip-level metrics apply unchanged; the loss is that of the mean."""
  tracks, first, inverse = np.unique(pred['track_id'], return_index=True, return_inverse=True)
  del tracks
  order = np.argsort(first)
  rank = np.empty_like(order)
  rank[order] = np.arange(len(order))
  group = rank[inverse.reshape(-1)]
  counts = np.bincount(group)[:, None]
  logits = np.asarray(pred['logits'], np.float64)
  probs = expit(logits) if multilabel else softmax(logits, axis=-1)
  mean = np.zeros((len(order), probs.shape[1]))
  np.add.at(mean, group, probs)
  mean = np.clip(mean / counts, 1e-12, 1 - 1e-12 if multilabel else 1.0)
  rows = first[order]
  label, label_set = pred['label'][rows], pred['label_set'][rows]
  if multilabel:
    scores = np.log(mean) - np.log1p(-mean)
    loss = -(label_set * np.log(mean) + (1 - label_set) * np.log1p(-mean)).mean(axis=-1)
  else:
    scores = np.log(mean)
    loss = -log_softmax(scores, axis=-1)[np.arange(len(rows)), label]
  return {'logits': scores, 'loss': loss, 'label': label, 'label_set': label_set}


def split_metrics(pred: Predictions, info: DataInfo, config: ml_collections.ConfigDict,
                  ancestors: np.ndarray | None = None, threshold: float | None = None
                  ) -> dict[str, Any]:
  """Every metric of one split; 'loss', 'top1' and f'top{k}' always present;
  with track ids, the same per track under 'track'."""
  report = _clip_metrics(pred, info, config, ancestors, threshold)
  if 'track_id' in pred and len(pred['label']):
    tracks = track_predictions(pred, bool(config.multilabel))
    report['track'] = _clip_metrics(tracks, info, config, ancestors, report.get('threshold'))
  return report


def _clip_metrics(pred: Predictions, info: DataInfo, config: ml_collections.ConfigDict,
                  ancestors: np.ndarray | None, threshold: float | None) -> dict[str, Any]:
  k = config.eval.top_k
  if len(pred['label']) == 0:
    return {'loss': float('nan'), 'top1': float('nan'), f'top{k}': float('nan'), 'count': 0}
  if config.multilabel:
    targets, scores = multilabel_scores(pred, ancestors)
    if threshold is None:
      threshold, _ = metrics.choose_threshold(targets, scores)
    report = metrics.multilabel_report(targets, scores, info.class_names, threshold, top_k=k)
  else:
    report = metrics.classification_report(pred['label'], pred['logits'], info.class_names,
                                           top_k=k)
  report['loss'] = float(np.mean(pred['loss']))
  return report


def evaluate_and_report(predict: Callable[[str], Predictions], info: DataInfo,
                        config: ml_collections.ConfigDict, workdir: str, *, num_params: int,
                        step: int, history: Sequence[Mapping[str, Any]],
                        lr_schedule: Sequence[float] | None, steps_per_epoch: int | None,
                        ancestors: np.ndarray | None,
                        checkpoint: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """Evaluates validation then test; writes results.json, report_test.txt,
  confusion_matrix_test.{png,csv}, training_curves.png and each split's
  predictions_{split}.npz. ``checkpoint`` says which checkpoint was evaluated
  (best or latest, its epoch)."""
  results: dict[str, Any] = {
      'classes': list(info.class_names),
      'num_params': num_params,
      'model_variant': config.model.variant,
      'multilabel': bool(config.multilabel),
      'data_set': info.name,
      'step': step,
      'checkpoint': dict(checkpoint or {}),
  }
  predictions = {split: predict(split) for split in ('validation', 'test')}
  results['validation'] = split_metrics(predictions['validation'], info, config, ancestors)
  # Multi-label: the test split is thresholded where validation was best.
  threshold = results['validation'].get('threshold')
  results['test'] = split_metrics(predictions['test'], info, config, ancestors, threshold)
  if jax.process_index() == 0:
    for split, pred in predictions.items():
      write_predictions(workdir, split, pred)
    storage.write_json(os.path.join(workdir, RESULTS_FILE), results)
    _write_test_report(results['test'], info, config, workdir)
    if history:
      plots.plot_training_curves(history, os.path.join(workdir, 'training_curves.png'),
                                 lr_schedule=lr_schedule, steps_per_epoch=steps_per_epoch,
                                 title=f'{info.name}: training')
  return results


def write_predictions(workdir: str, split: str, pred: Predictions) -> None:
  """predictions_{split}.npz: every clip's logits, label and track id."""
  path = os.path.join(workdir, PREDICTIONS_FILE.format(split=split))
  track_ids = pred.get('track_id', np.arange(len(pred['label'])))
  with storage.atomic_write(path, 'wb') as f:
    np.savez(f, logits=np.asarray(pred['logits'], np.float32),
             label=np.asarray(pred['label'], np.int64),
             track_id=np.asarray(track_ids).astype(str))


def average_predictions(parts: Sequence[Predictions]) -> dict[str, np.ndarray]:
  """Single-label predictions of the same clips by several models (as
  read_predictions gives them) -> those of their average: logits the log of
  the mean probabilities, each clip's loss, one-hot label sets."""
  first = parts[0]
  for part in parts[1:]:
    if not (np.array_equal(part['label'], first['label'])
            and np.array_equal(part['track_id'], first['track_id'])):
      raise ValueError('the models to average were evaluated on different clips')
  log_probs = [log_softmax(np.asarray(p['logits'], np.float64), axis=-1) for p in parts]
  logits = logsumexp(np.stack(log_probs), axis=0) - np.log(len(parts))
  label = np.asarray(first['label'], np.int64)
  return {'logits': logits, 'loss': -logits[np.arange(len(label)), label], 'label': label,
          'label_set': np.eye(logits.shape[-1], dtype=np.float32)[label],
          'track_id': first['track_id']}


def read_predictions(workdir: str, split: str) -> dict[str, np.ndarray]:
  """What write_predictions wrote: 'logits', 'label', 'track_id' per clip."""
  with np.load(os.path.join(workdir, PREDICTIONS_FILE.format(split=split))) as data:
    return {k: data[k] for k in data.files}


def _write_test_report(test: Mapping[str, Any], info: DataInfo,
                       config: ml_collections.ConfigDict, workdir: str) -> None:
  """report_test.txt (printed too) and, single-label, the confusion matrix."""
  k = config.eval.top_k
  if config.multilabel:
    text = (f'test (multi-label, threshold {test["threshold"]:.3f}): mAP macro '
            f'{test["map_macro"]:.4f} micro {test["map_micro"]:.4f}, ROC-AUC macro '
            f'{test["roc_auc_macro"]:.4f}, example F1 {test["example_f1"]:.4f}, hit@1 '
            f'{test["top1"]:.4f}, hit@{k} {test[f"top{k}"]:.4f}')
  else:
    text = metrics.format_report(test, title=f'test split ({counts(test)})')
    cm = np.asarray(test['confusion_matrix'])
    plots.plot_confusion_matrix(cm, info.class_names,
                                os.path.join(workdir, 'confusion_matrix_test.png'),
                                title=f'{info.name}: test confusion matrix')
    storage.write_text(os.path.join(workdir, 'confusion_matrix_test.csv'),
                     metrics.confusion_csv(cm, info.class_names))
  track = test.get('track')
  if track and track['count'] < test['count']:  # several windows per track: both intervals
    text += '\n' + clip_and_track_table(test, config)
    if 'top1_interval' in test:
      text += '\n' + top1_summary(test)
  storage.write_text(os.path.join(workdir, 'report_test.txt'), text + '\n')
  print(text, flush=True)


def counts(split: Mapping[str, Any]) -> str:
  """'35 clips of 12 tracks' (or '35 clips' without track ids)."""
  track = split.get('track')
  return f'{split["count"]} clips' + (f' of {track["count"]} tracks' if track else '')


def top1_summary(split: Mapping[str, Any]) -> str:
  """A split's top-1 with its 95% Wilson interval and what it counts, per
  clip and (with track ids) per track: on a few dozen test tracks the
  interval is often +-0.15, wider than most differences between recipes."""
  def one(r: Mapping[str, Any], unit: str) -> str:
    interval = ('95% interval {:.2f}-{:.2f}, '.format(*r['top1_interval'])
                if 'top1_interval' in r else '')  # multi-label hit@1: none
    return f'{r["top1"]:.4f} ({interval}{r["count"]} {unit})'
  text = f'top-1 {one(split, "clips")}'
  if split.get('track'):
    text += f'; per track {one(split["track"], "tracks")}'
  return text


def clip_and_track_table(split: Mapping[str, Any], config: ml_collections.ConfigDict) -> str:
  """Clip- and track-level metrics of a split side by side."""
  keys = (('top1', 'top-1'), ('map_macro', 'mAP macro'), ('example_f1', 'example F1')) \
      if config.multilabel else (('top1', 'top-1'), ('f1_macro', 'macro F1'),
                                 ('balanced_accuracy', 'balanced accuracy'))
  rows = [('clips', split), ('tracks', split['track'])]
  lines = [f'{"":<8}{"count":>7}' + ''.join(f'{label:>19}' for _, label in keys)]
  for name, r in rows:
    lines.append(f'{name:<8}{r["count"]:>7}' + ''.join(f'{_metric(r, k):>19.4f}' for k, _ in keys))
  return '\n'.join(lines)


def _metric(report: Mapping[str, Any], key: str) -> float:
  if key == 'f1_macro':
    return float(report['macro']['f1'])
  return float(report[key])
