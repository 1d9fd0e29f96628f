"""Evaluation metrics: scikit-learn's, plus what it lacks for this task.

From scikit-learn: the confusion matrix, precision / recall / F1 with macro and
weighted averages, balanced and top-k accuracy, average precision and ROC-AUC,
example-based F1. Added here: the most confused pairs (named by the index
they belong to: the reference's write-up printed names in first-appearance
order for indices in sorted order, docs/reference.md section 7), the text table and
CSV, multi-label "hit" rates comparable with top-k accuracy, and a threshold
chosen on validation.

Conventions: a precision/recall/F1 whose denominator is zero is 0; macro
averages run over all classes; multi-label per-class AP / AUC that are
undefined (no positives, or no negatives for AUC) are NaN and left out of
the macro average.
"""

from __future__ import annotations

import csv
import io
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats
from sklearn import metrics as skm
from sklearn.exceptions import UndefinedMetricWarning

AVERAGES = ('macro', 'weighted')


def _check_labels(y: np.ndarray, num_classes: int, what: str) -> np.ndarray:
  y = np.asarray(y)
  if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
    raise ValueError(f'{what} must be a 1-D integer array, got {y.dtype} {y.shape}')
  if y.size and (y.min() < 0 or y.max() >= num_classes):
    raise ValueError(f'{what} has a class index outside 0..{num_classes - 1}')
  return y.astype(np.int64)


# --------------------------------------------------------------- single-label


def wilson_interval(right: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
  """Wilson score interval of the accuracy ``right / n``: where the figure of
  another draw of ``n`` examples would likely fall, each example an
  independent draw (clips of one track or tracks of one album are not, so the
  interval is then too narrow). Unlike the normal approximation it stays
  inside [0, 1] and is honest at 0 or n right. (nan, nan) when n is 0."""
  if n <= 0:
    return float('nan'), float('nan')
  ci = stats.binomtest(int(right), int(n)).proportion_ci(confidence, method='wilson')
  return float(ci.low), float(ci.high)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
  """Counts (num_classes, num_classes): row = true class, column = predicted."""
  y_true = _check_labels(y_true, num_classes, 'y_true')
  y_pred = _check_labels(y_pred, num_classes, 'y_pred')
  if y_true.shape != y_pred.shape:
    raise ValueError(f'y_true {y_true.shape} and y_pred {y_pred.shape} differ in length')
  return skm.confusion_matrix(y_true, y_pred, labels=np.arange(num_classes)).astype(np.int64)


def top_k_accuracy(y_true: np.ndarray, scores: np.ndarray, k: int = 1) -> float:
  """Fraction of examples whose true class is among the k highest scores."""
  scores = np.asarray(scores, dtype=np.float64)
  if scores.ndim != 2:
    raise ValueError(f'scores must be (examples, classes), got {scores.shape}')
  num_classes = scores.shape[1]
  y_true = _check_labels(y_true, num_classes, 'y_true')
  if len(y_true) == 0:
    return float('nan')
  if k >= num_classes:
    return 1.0
  if k == 1 or num_classes <= 2:  # sklearn's top-k takes 1-D scores for two classes
    return float(skm.accuracy_score(y_true, scores.argmax(axis=1)))
  return float(skm.top_k_accuracy_score(y_true, scores, k=k, labels=np.arange(num_classes)))


def precision_recall_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int
                        ) -> dict[str, np.ndarray]:
  """Per-class precision, recall, F1 and support."""
  p, r, f, s = skm.precision_recall_fscore_support(
      y_true, y_pred, labels=np.arange(num_classes), zero_division=0)
  return {'precision': p, 'recall': r, 'f1': f, 'support': s.astype(np.int64)}


def averages(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int
             ) -> dict[str, dict[str, float]]:
  """Macro (plain mean over all classes) and weighted (by support) averages."""
  out = {}
  for average in AVERAGES:
    p, r, f, _ = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=np.arange(num_classes), average=average, zero_division=0)
    out[average] = {'precision': float(p), 'recall': float(r), 'f1': float(f)}
  return out


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
  """Mean recall over the classes that occur in the targets."""
  if len(y_true) == 0:
    return float('nan')
  with warnings.catch_warnings():  # predicted classes absent from the targets are expected
    warnings.simplefilter('ignore', UserWarning)
    return float(skm.balanced_accuracy_score(y_true, y_pred))


def most_confused(cm: np.ndarray, class_names: Sequence[str], k: int = 5,
                  min_count: int = 1) -> list[tuple[str, str, int]]:
  """The k largest off-diagonal cells as (true name, predicted name, count).

  Names come from ``class_names[index]`` of the very row and column counted,
  so they can only be as wrong as the list passed in; sorted by count, then
  by (true, predicted) index for a stable order.
  """
  cm = np.asarray(cm)
  if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
    raise ValueError(f'confusion matrix must be square, got {cm.shape}')
  if len(class_names) != cm.shape[0]:
    raise ValueError(f'{len(class_names)} class names for a {cm.shape[0]}-class matrix')
  off = cm.copy()
  np.fill_diagonal(off, 0)
  rows, cols = np.nonzero(off >= max(min_count, 1))
  order = sorted(zip(rows, cols), key=lambda rc: (-off[rc], rc[0], rc[1]))
  return [(class_names[r], class_names[c], int(off[r, c])) for r, c in order[:k]]


def classification_report(y_true: np.ndarray, scores: np.ndarray, class_names: Sequence[str],
                          top_k: int = 5, num_confused: int = 5) -> dict:
  """Every single-label metric as a JSON-ready dict (``results.json``)."""
  scores = np.asarray(scores)
  num_classes = len(class_names)
  if scores.ndim != 2 or scores.shape[1] != num_classes:
    raise ValueError(f'scores {scores.shape} do not match {num_classes} class names')
  y_pred = scores.argmax(axis=1)
  cm = confusion_matrix(y_true, y_pred, num_classes)
  per_class = precision_recall_f1(y_true, y_pred, num_classes)
  right = int(np.sum(y_pred == np.asarray(y_true)))
  return {
      'count': len(y_true),
      'top1': top_k_accuracy(y_true, scores, 1),
      'top1_interval': list(wilson_interval(right, len(y_true))),
      f'top{top_k}': top_k_accuracy(y_true, scores, top_k),
      'balanced_accuracy': balanced_accuracy(y_true, y_pred),
      **averages(y_true, y_pred, num_classes),
      'per_class': {name: {key: (int(per_class[key][i]) if key == 'support'
                                 else float(per_class[key][i]))
                           for key in ('precision', 'recall', 'f1', 'support')}
                    for i, name in enumerate(class_names)},
      'confusion_matrix': cm.tolist(),
      'class_names': list(class_names),
      'most_confused': [{'true': t, 'predicted': p, 'count': n}
                        for t, p, n in most_confused(cm, class_names, num_confused)],
  }


def format_report(report: Mapping, title: str = '') -> str:
  """A readable text table of ``classification_report``'s output."""
  names = list(report['class_names'])
  width = max([len(n) for n in names] + [len('weighted avg'), 12])
  lines = [title] if title else []
  header = f'{"":<{width}}  {"precision":>9}  {"recall":>9}  {"f1":>9}  {"support":>8}'
  lines += [header, '-' * len(header)]
  for name in names:
    row = report['per_class'][name]
    lines.append(f'{name:<{width}}  {row["precision"]:9.3f}  {row["recall"]:9.3f}  '
                 f'{row["f1"]:9.3f}  {row["support"]:8d}')
  lines.append('-' * len(header))
  for key, label in (('macro', 'macro avg'), ('weighted', 'weighted avg')):
    row = report[key]
    lines.append(f'{label:<{width}}  {row["precision"]:9.3f}  {row["recall"]:9.3f}  '
                 f'{row["f1"]:9.3f}  {report["count"]:8d}')
  topk = [k for k in report if k.startswith('top') and k[3:].isdigit() and k != 'top1']
  summary = f'top-1 {report["top1"]:.4f}'
  if 'top1_interval' in report:
    summary += ' (95% interval {:.4f}-{:.4f})'.format(*report['top1_interval'])
  for k in topk:
    summary += f'   top-{k[3:]} {report[k]:.4f}'
  summary += f'   balanced accuracy {report["balanced_accuracy"]:.4f}'
  lines.append(summary)
  if report.get('most_confused'):
    lines.append('most confused (true -> predicted: count): ' + '; '.join(
        f'{c["true"]} -> {c["predicted"]}: {c["count"]}' for c in report['most_confused']))
  return '\n'.join(lines)


def confusion_csv(cm: np.ndarray, class_names: Sequence[str]) -> str:
  """CSV text: header 'true\\predicted,<names>', one row per true class."""
  cm = np.asarray(cm)
  if cm.shape != (len(class_names), len(class_names)):
    raise ValueError(f'{len(class_names)} class names for a matrix of shape {cm.shape}')
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator='\n')
  writer.writerow(['true\\predicted', *class_names])
  for name, row in zip(class_names, cm):
    writer.writerow([name, *[int(v) for v in row]])
  return buf.getvalue()


# ----------------------------------------------------------------- multi-label


def _check_multilabel(targets: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  targets = np.asarray(targets)
  scores = np.asarray(scores, dtype=np.float64)
  if targets.ndim != 2 or targets.shape != scores.shape:
    raise ValueError(f'targets {targets.shape} and scores {scores.shape} must be equal 2-D shapes')
  return targets.astype(bool), scores


def average_precision(target: np.ndarray, score: np.ndarray) -> float:
  """AP of one class (no interpolation; tied scores form one threshold); NaN
  when there is no positive."""
  target = np.asarray(target).astype(bool).ravel()
  if not target.any():
    return float('nan')
  return float(skm.average_precision_score(target, np.asarray(score, np.float64).ravel()))


def mean_average_precision(targets: np.ndarray, scores: np.ndarray) -> dict[str, float | list]:
  """mAP: 'macro' = mean of per-class AP (classes with positives), 'micro' =
  AP of all (example, class) pairs pooled, 'per_class' = the APs (NaN if none)."""
  targets, scores = _check_multilabel(targets, scores)
  per_class = np.array([average_precision(targets[:, c], scores[:, c])
                        for c in range(targets.shape[1])])
  defined = ~np.isnan(per_class)
  return {'macro': float(per_class[defined].mean()) if defined.any() else float('nan'),
          'micro': average_precision(targets.ravel(), scores.ravel()),
          'per_class': per_class.tolist()}


def roc_auc(target: np.ndarray, score: np.ndarray) -> float:
  """Area under the ROC curve of one class (ties count half); NaN when only
  one of positives / negatives occurs."""
  target = np.asarray(target).astype(bool).ravel()
  if target.all() or not target.any():
    return float('nan')
  return float(skm.roc_auc_score(target, np.asarray(score, np.float64).ravel()))


def roc_auc_scores(targets: np.ndarray, scores: np.ndarray) -> dict[str, float | list]:
  """ROC-AUC per class (NaN where undefined) and their macro mean."""
  targets, scores = _check_multilabel(targets, scores)
  per_class = np.array([roc_auc(targets[:, c], scores[:, c]) for c in range(targets.shape[1])])
  defined = ~np.isnan(per_class)
  return {'macro': float(per_class[defined].mean()) if defined.any() else float('nan'),
          'per_class': per_class.tolist()}


def threshold_predictions(scores: np.ndarray, threshold: float,
                          at_least_one: bool = False) -> np.ndarray:
  """Boolean label sets: every class scoring >= threshold; with ``at_least_one``
  the top class is added to an otherwise empty set."""
  scores = np.asarray(scores, dtype=np.float64)
  pred = scores >= threshold
  if at_least_one and len(scores):
    empty = ~pred.any(axis=1)
    pred[empty, scores[empty].argmax(axis=1)] = True
  return pred


def example_f1(targets: np.ndarray, predictions: np.ndarray) -> float:
  """Example-based F1: mean over examples of 2|T and P| / (|T| + |P|); an
  example with neither true nor predicted labels counts as 1."""
  targets, predictions = _check_multilabel(targets, predictions)
  if len(targets) == 0:
    return float('nan')
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', UndefinedMetricWarning)
    return float(skm.f1_score(targets, predictions.astype(bool), average='samples',
                              zero_division=1.0))


def choose_threshold(targets: np.ndarray, scores: np.ndarray,
                     candidates: Sequence[float] | None = None,
                     at_least_one: bool = False) -> tuple[float, float]:
  """(threshold, its example F1): the candidate with the best example F1 on
  these (validation) examples; among equal F1s the one nearest 0.5.

  Default candidates 0.01..0.99 in steps of 0.01: fine enough for sigmoid
  outputs, and a fixed grid keeps the choice stable across runs.
  """
  targets, scores = _check_multilabel(targets, scores)
  grid = np.round(np.arange(1, 100) / 100.0, 2) if candidates is None else np.asarray(candidates)
  if grid.size == 0:
    raise ValueError('no threshold candidates')
  f1s = np.array([example_f1(targets, threshold_predictions(scores, t, at_least_one))
                  for t in grid])
  best = np.flatnonzero(np.isclose(f1s, f1s.max(), rtol=0, atol=1e-12))
  pick = best[np.argmin(np.abs(grid[best] - 0.5))]
  return float(grid[pick]), float(f1s[pick])


def hit_rate(targets: np.ndarray, scores: np.ndarray, k: int = 1) -> float:
  """Fraction of examples with at least one true label among the k highest
  scores: with one label per example this is top-k accuracy, so multi-label
  runs are comparable with single-label ones. Ties rank the true label first
  (as ``top_k_accuracy``). Examples without labels are left out."""
  targets, scores = _check_multilabel(targets, scores)
  has_label = targets.any(axis=1)
  if not has_label.any():
    return float('nan')
  targets, scores = targets[has_label], scores[has_label]
  best_true = np.where(targets, scores, -np.inf).max(axis=1)
  rank = (scores > best_true[:, None]).sum(axis=1)
  return float(np.mean(rank < k))


def multilabel_report(targets: np.ndarray, scores: np.ndarray, class_names: Sequence[str],
                      threshold: float, top_k: int = 5) -> dict:
  """Every multi-label metric as a JSON-ready dict, at a threshold chosen
  beforehand (``choose_threshold`` on validation)."""
  targets, scores = _check_multilabel(targets, scores)
  if targets.shape[1] != len(class_names):
    raise ValueError(f'{len(class_names)} class names for {targets.shape[1]} outputs')
  ap = mean_average_precision(targets, scores)
  auc = roc_auc_scores(targets, scores)
  return {
      'count': len(targets),
      'map_macro': ap['macro'], 'map_micro': ap['micro'],
      'roc_auc_macro': auc['macro'],
      'threshold': float(threshold),
      'example_f1': example_f1(targets, threshold_predictions(scores, threshold)),
      'top1': hit_rate(targets, scores, 1),
      f'top{top_k}': hit_rate(targets, scores, top_k),
      'per_class': {name: {'ap': ap['per_class'][i], 'roc_auc': auc['per_class'][i],
                           'support': int(targets[:, i].sum())}
                    for i, name in enumerate(class_names)},
      'class_names': list(class_names),
  }
