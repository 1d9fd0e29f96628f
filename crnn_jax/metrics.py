"""Evaluation metrics as pure numpy functions (no JAX, no training imports).

Single-label: top-k accuracy, balanced accuracy, per-class precision / recall /
F1 with macro and weighted averages, the confusion matrix, the most confused
pairs, and a readable text table. Multi-label: average precision (mAP, macro
and micro), ROC-AUC per class and macro, example-based F1 at a threshold, the
threshold chosen on validation, top-k "hit" rates comparable with top-k
accuracy, and a label hierarchy (child implies parent).

Class names are always passed in index order, next to the matrices they
describe. The reference printed its most confused pairs with names in order
of first appearance in the data while the indices came from sorted order
(SPEC.md section 7); here a name is only ever looked up by the index it
belongs to (``class_names[i]`` for row/column ``i``), and ``encode_labels``
gives both from one sorted list.

Conventions (the same as scikit-learn's, so the tests can compare):
a precision/recall/F1 whose denominator is zero is 0; macro averages run over
all classes; multi-label per-class AP / AUC that are undefined (no positives,
or no negatives for AUC) are NaN and left out of the macro average.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

# ------------------------------------------------------------- label encoding


def encode_labels(labels: Sequence[str],
                  class_names: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
  """String labels -> (int indices, class names), both from one sorted list.

  With ``class_names`` given, indices follow that order and an unknown label
  raises ValueError; otherwise the names are the sorted distinct labels.
  """
  names = sorted(set(labels)) if class_names is None else list(class_names)
  index = {n: i for i, n in enumerate(names)}
  if len(index) != len(names):
    raise ValueError('class_names has duplicates')
  unknown = sorted(set(labels) - set(index))
  if unknown:
    raise ValueError(f'labels not in class_names: {unknown[:5]}')
  return np.array([index[l] for l in labels], dtype=np.int64), names


def _check_labels(y: np.ndarray, num_classes: int, what: str) -> np.ndarray:
  y = np.asarray(y)
  if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
    raise ValueError(f'{what} must be a 1-D integer array, got {y.dtype} {y.shape}')
  if y.size and (y.min() < 0 or y.max() >= num_classes):
    raise ValueError(f'{what} has a class index outside 0..{num_classes - 1}')
  return y.astype(np.int64)


# --------------------------------------------------------------- single-label


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
  """Counts (num_classes, num_classes): row = true class, column = predicted."""
  y_true = _check_labels(y_true, num_classes, 'y_true')
  y_pred = _check_labels(y_pred, num_classes, 'y_pred')
  if y_true.shape != y_pred.shape:
    raise ValueError(f'y_true {y_true.shape} and y_pred {y_pred.shape} differ in length')
  cm = np.zeros((num_classes, num_classes), dtype=np.int64)
  np.add.at(cm, (y_true, y_pred), 1)
  return cm


def top_k_accuracy(y_true: np.ndarray, scores: np.ndarray, k: int = 1) -> float:
  """Fraction of examples whose true class is among the k highest scores.

  A true class tied with others counts as ranked above them (its rank is the
  number of classes with a strictly higher score); with continuous scores
  ties do not occur.
  """
  scores = np.asarray(scores, dtype=np.float64)
  if scores.ndim != 2:
    raise ValueError(f'scores must be (examples, classes), got {scores.shape}')
  y_true = _check_labels(y_true, scores.shape[1], 'y_true')
  if len(y_true) == 0:
    return float('nan')
  true_score = scores[np.arange(len(y_true)), y_true]
  rank = (scores > true_score[:, None]).sum(axis=1)
  return float(np.mean(rank < k))


def precision_recall_f1(cm: np.ndarray) -> dict[str, np.ndarray]:
  """Per-class precision, recall, F1 and support from a confusion matrix."""
  cm = np.asarray(cm, dtype=np.float64)
  tp = np.diag(cm)
  predicted, support = cm.sum(axis=0), cm.sum(axis=1)
  precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
  recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
  denom = precision + recall
  f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
  return {'precision': precision, 'recall': recall, 'f1': f1,
          'support': support.astype(np.int64)}


def balanced_accuracy(cm: np.ndarray) -> float:
  """Mean recall over the classes that occur in the targets (sklearn's
  definition): a class with no examples has no recall to average."""
  cm = np.asarray(cm, dtype=np.float64)
  support = cm.sum(axis=1)
  present = support > 0
  if not present.any():
    return float('nan')
  return float(np.mean(np.diag(cm)[present] / support[present]))


def averages(per_class: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
  """Macro (plain mean over classes) and weighted (by support) averages."""
  support = np.asarray(per_class['support'], dtype=np.float64)
  out = {}
  for key in ('precision', 'recall', 'f1'):
    values = np.asarray(per_class[key], dtype=np.float64)
    out.setdefault('macro', {})[key] = float(values.mean()) if values.size else float('nan')
    total = support.sum()
    out.setdefault('weighted', {})[key] = (float((values * support).sum() / total) if total
                                           else float('nan'))
  return out


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
  per_class = precision_recall_f1(cm)
  avg = averages(per_class)
  return {
      'count': len(y_true),
      'top1': top_k_accuracy(y_true, scores, 1),
      f'top{top_k}': top_k_accuracy(y_true, scores, top_k),
      'balanced_accuracy': balanced_accuracy(cm),
      'macro': avg['macro'],
      'weighted': avg['weighted'],
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
  topk = [k for k in report if k.startswith('top') and k != 'top1']
  summary = f'top-1 {report["top1"]:.4f}'
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
  import csv  # pylint: disable=import-outside-toplevel
  import io  # pylint: disable=import-outside-toplevel
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
  """AP of one class: sum over distinct thresholds of (R_n - R_{n-1}) * P_n.

  No interpolation (as scikit-learn's average_precision_score); tied scores
  form one threshold. NaN when there is no positive.
  """
  target = np.asarray(target).astype(bool).ravel()
  score = np.asarray(score, dtype=np.float64).ravel()
  positives = target.sum()
  if positives == 0:
    return float('nan')
  order = np.argsort(-score, kind='mergesort')
  target, score = target[order], score[order]
  tp = np.cumsum(target)
  fp = np.cumsum(~target)
  last_of_tie = np.r_[np.diff(score) != 0, True]
  tp, fp = tp[last_of_tie], fp[last_of_tie]
  precision = tp / (tp + fp)
  recall = tp / positives
  return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


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


def _average_ranks(x: np.ndarray) -> np.ndarray:
  """1-based ranks with ties sharing their mean rank."""
  order = np.argsort(x, kind='mergesort')
  sorted_x = x[order]
  starts = np.r_[0, np.nonzero(np.diff(sorted_x))[0] + 1]
  ends = np.r_[starts[1:], len(x)]
  ranks_sorted = np.repeat((starts + ends + 1) / 2.0, ends - starts)
  ranks = np.empty(len(x))
  ranks[order] = ranks_sorted
  return ranks


def roc_auc(target: np.ndarray, score: np.ndarray) -> float:
  """Area under the ROC curve of one class, via the Mann-Whitney U statistic
  (the probability a positive outscores a negative, ties counting half).
  NaN when only one of positives / negatives occurs."""
  target = np.asarray(target).astype(bool).ravel()
  score = np.asarray(score, dtype=np.float64).ravel()
  pos, neg = int(target.sum()), int((~target).sum())
  if pos == 0 or neg == 0:
    return float('nan')
  ranks = _average_ranks(score)
  return float((ranks[target].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


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
  """Example-based F1: mean over examples of 2|T and P| / (|T| + |P|).

  An example with neither true nor predicted labels counts as 1 (nothing to
  find, nothing wrongly claimed; sklearn's f1_score(average='samples',
  zero_division=1))."""
  targets, predictions = _check_multilabel(targets, predictions)
  predictions = predictions.astype(bool)
  if len(targets) == 0:
    return float('nan')
  inter = (targets & predictions).sum(axis=1)
  total = targets.sum(axis=1) + predictions.sum(axis=1)
  f1 = np.where(total > 0, 2.0 * inter / np.maximum(total, 1), 1.0)
  return float(f1.mean())


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


# ------------------------------------------------------------ label hierarchy


def ancestor_matrix(class_names: Sequence[str],
                    hierarchy: Mapping[str, str | Sequence[str]]) -> np.ndarray:
  """Bool (C, C): [i, j] is True when class j is an ancestor of class i.

  ``hierarchy`` maps a child name to its parent name (or a list of parents),
  e.g. {'melodic death metal': 'death metal'}; the relation is closed
  transitively. Unknown names and cycles raise ValueError.
  """
  index = {n: i for i, n in enumerate(class_names)}
  n = len(class_names)
  direct = np.zeros((n, n), dtype=bool)
  for child, parents in hierarchy.items():
    parents = [parents] if isinstance(parents, str) else list(parents)
    for name in [child, *parents]:
      if name not in index:
        raise ValueError(f'label hierarchy names {name!r}, which is not a class')
    for parent in parents:
      direct[index[child], index[parent]] = True
  closure = direct.copy()
  for _ in range(n):  # at most n steps to close any chain
    grown = closure | ((closure.astype(np.int64) @ direct.astype(np.int64)) > 0)
    if np.array_equal(grown, closure):
      break
    closure = grown
  if np.any(np.diag(closure)):
    cyclic = [class_names[i] for i in np.flatnonzero(np.diag(closure))]
    raise ValueError(f'label hierarchy has a cycle through {cyclic}')
  return closure


def apply_hierarchy_to_targets(targets: np.ndarray, ancestors: np.ndarray) -> np.ndarray:
  """Adds every ancestor of each true label (a melodic death metal track is
  also death metal)."""
  targets = np.asarray(targets).astype(bool)
  implied = (targets.astype(np.int64) @ ancestors.astype(np.int64)) > 0
  return targets | implied


def apply_hierarchy_to_scores(scores: np.ndarray, ancestors: np.ndarray) -> np.ndarray:
  """Raises each parent's score to the highest score of its descendants, so a
  child predicted at any threshold predicts its parents too."""
  scores = np.asarray(scores, dtype=np.float64)
  out = scores.copy()
  for parent in np.flatnonzero(ancestors.any(axis=0)):
    children = np.flatnonzero(ancestors[:, parent])
    out[:, parent] = np.maximum(scores[:, parent], scores[:, children].max(axis=1))
  return out
