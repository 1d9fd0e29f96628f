"""Evaluation reports: metrics of a split, results.json, tables and pictures.

Single-label: top-1/top-k, balanced accuracy, per-class precision/recall/F1
with macro and weighted averages, the confusion matrix (PNG and CSV) and the
most-confused pairs named from the data set's own class list. Multi-label:
mAP, ROC-AUC, example-based F1 at a threshold chosen on validation, and top-k
"hit" rates comparable with the single-label numbers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import ml_collections
import numpy as np

from crnn_jax import checkpoints, metrics, models
from crnn_jax.input_pipeline import DataInfo


def ancestors(config: ml_collections.ConfigDict, info: DataInfo) -> np.ndarray | None:
  """The config's label hierarchy (child -> parent names) as a matrix, if any."""
  hierarchy = dict(config.get('label_hierarchy', None) or {})
  if not hierarchy:
    return None
  try:
    return metrics.ancestor_matrix(info.class_names, hierarchy)
  except ValueError as e:
    from crnn_jax.errors import UserError  # pylint: disable=import-outside-toplevel
    raise UserError(f'config.label_hierarchy: {e}') from None


def multilabel_scores(pred: Mapping[str, np.ndarray], config: ml_collections.ConfigDict,
                      info: DataInfo) -> tuple[np.ndarray, np.ndarray]:
  """(targets, sigmoid scores), with the label hierarchy applied to both."""
  scores = 1.0 / (1.0 + np.exp(-pred['logits'].astype(np.float64)))
  targets = pred['label_set'] > 0.5
  anc = ancestors(config, info)
  if anc is not None:
    targets = metrics.apply_hierarchy_to_targets(targets, anc)
    scores = metrics.apply_hierarchy_to_scores(scores, anc)
  return targets, scores


def split_metrics(pred: Mapping[str, np.ndarray], info: DataInfo,
                  config: ml_collections.ConfigDict, threshold: float | None = None
                  ) -> dict[str, Any]:
  """Every metric of one split; 'loss', 'top1' and 'top5' always present."""
  k = config.eval.top_k
  if len(pred['label']) == 0:
    return {'loss': float('nan'), 'top1': float('nan'), 'top5': float('nan'), 'count': 0}
  if config.multilabel:
    targets, scores = multilabel_scores(pred, config, info)
    if threshold is None:
      threshold, _ = metrics.choose_threshold(targets, scores)
    report = metrics.multilabel_report(targets, scores, info.class_names, threshold, top_k=k)
  else:
    report = metrics.classification_report(pred['label'], pred['logits'], info.class_names,
                                           top_k=k)
  report['loss'] = float(np.mean(pred['loss']))
  report['top5'] = report[f'top{k}']  # the headline key, whatever top_k is
  return report


def evaluate_and_report(state: Any, sources: Mapping[str, Any], info: DataInfo, parallel: Any,
                        eval_fn: Callable, config: ml_collections.ConfigDict, workdir: str,
                        history: list[dict[str, Any]]) -> dict[str, Any]:
  """Evaluates validation then test; writes results.json, report_test.txt,
  confusion_matrix_test.{png,csv} and training_curves.png."""
  from crnn_jax import plots, train  # pylint: disable=import-outside-toplevel
  results: dict[str, Any] = {
      'classes': list(info.class_names),
      'num_params': models.count_params(jax.device_get(state.params)),
      'model_variant': config.model.variant,
      'multilabel': bool(config.multilabel),
      'data_set': info.name,
      'step': int(state.step),
  }
  val_pred = train.predict_split(state, sources['validation'], info, parallel, eval_fn, config)
  results['validation'] = split_metrics(val_pred, info, config)
  # Multi-label: the test split is thresholded where validation was best.
  threshold = results['validation'].get('threshold')
  test_pred = train.predict_split(state, sources['test'], info, parallel, eval_fn, config)
  results['test'] = split_metrics(test_pred, info, config, threshold=threshold)
  if jax.process_index() != 0:
    return results

  checkpoints.write_json(os.path.join(workdir, 'results.json'), results)
  test = results['test']
  if config.multilabel:
    text = (f'test (multi-label, threshold {test["threshold"]:.3f}): mAP macro '
            f'{test["map_macro"]:.4f} micro {test["map_micro"]:.4f}, ROC-AUC macro '
            f'{test["roc_auc_macro"]:.4f}, example F1 {test["example_f1"]:.4f}, hit@1 '
            f'{test["top1"]:.4f}, hit@{config.eval.top_k} {test["top5"]:.4f}')
  else:
    text = metrics.format_report(test, title=f'test split ({test["count"]} clips)')
    cm = np.asarray(test['confusion_matrix'])
    plots.plot_confusion_matrix(cm, info.class_names,
                                os.path.join(workdir, 'confusion_matrix_test.png'),
                                title=f'{info.name}: test confusion matrix')
    with open(os.path.join(workdir, 'confusion_matrix_test.csv'), 'w') as f:
      f.write(metrics.confusion_csv(cm, info.class_names))
  with open(os.path.join(workdir, 'report_test.txt'), 'w') as f:
    f.write(text + '\n')
  print(text, flush=True)
  if history:
    steps_per_epoch = int(history[0]['step'] // history[0]['epoch'])
    total = steps_per_epoch * int(config.train.num_epochs)
    lr_fn, _ = train.schedules(config, total)
    plots.plot_training_curves(history, os.path.join(workdir, 'training_curves.png'),
                               lr_schedule=[float(lr_fn(s)) for s in range(total)],
                               steps_per_epoch=steps_per_epoch, title=f'{info.name}: training')
  return results
