"""Metrics: each against a hand-computed example and against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from crnn_jax.core import labels
from crnn_jax.evaluate import metrics

# Hand example: 3 classes, 8 examples.
#   true: 0 0 0 1 1 1 1 2        pred: 0 0 1 1 1 2 0 2
# confusion (rows true, cols pred):
#   [[2, 1, 0],
#    [1, 2, 1],
#    [0, 0, 1]]
Y_TRUE = np.array([0, 0, 0, 1, 1, 1, 1, 2])
Y_PRED = np.array([0, 0, 1, 1, 1, 2, 0, 2])
CM = np.array([[2, 1, 0], [1, 2, 1], [0, 0, 1]])


def test_confusion_matrix_by_hand_and_sklearn():
  cm = metrics.confusion_matrix(Y_TRUE, Y_PRED, 3)
  np.testing.assert_array_equal(cm, CM)
  np.testing.assert_array_equal(cm, skm.confusion_matrix(Y_TRUE, Y_PRED, labels=[0, 1, 2]))
  with pytest.raises(ValueError):
    metrics.confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)


def test_precision_recall_f1_by_hand_and_sklearn():
  r = metrics.precision_recall_f1(Y_TRUE, Y_PRED, 3)
  # precision = tp / column sum: 2/3, 2/3, 1/2; recall = tp / row sum: 2/3, 2/4, 1/1
  np.testing.assert_allclose(r['precision'], [2 / 3, 2 / 3, 1 / 2])
  np.testing.assert_allclose(r['recall'], [2 / 3, 1 / 2, 1.0])
  f1 = [2 / 3, 2 * (2 / 3) * 0.5 / (2 / 3 + 0.5), 2 * 0.5 / 1.5]
  np.testing.assert_allclose(r['f1'], f1)
  np.testing.assert_array_equal(r['support'], [3, 4, 1])
  p, rc, f, s = skm.precision_recall_fscore_support(Y_TRUE, Y_PRED, labels=[0, 1, 2])
  np.testing.assert_allclose(r['precision'], p)
  np.testing.assert_allclose(r['recall'], rc)
  np.testing.assert_allclose(r['f1'], f)
  np.testing.assert_array_equal(r['support'], s)
  avg = metrics.averages(Y_TRUE, Y_PRED, 3)
  assert avg['macro']['f1'] == pytest.approx(np.mean(f1))
  assert avg['weighted']['recall'] == pytest.approx((3 * 2 / 3 + 4 * 0.5 + 1) / 8)
  for average in ('macro', 'weighted'):
    p, rc, f, _ = skm.precision_recall_fscore_support(Y_TRUE, Y_PRED, average=average)
    assert (avg[average]['precision'], avg[average]['recall'], avg[average]['f1']) == \
        pytest.approx((p, rc, f))


def test_zero_division_is_zero_like_sklearn():
  y_true, y_pred = np.array([0, 0, 1, 1]), np.array([0, 0, 0, 0])  # class 1 never predicted
  r = metrics.precision_recall_f1(y_true, y_pred, 2)
  p, rc, f, _ = skm.precision_recall_fscore_support(y_true, y_pred, zero_division=0)
  np.testing.assert_allclose([r['precision'], r['recall'], r['f1']], [p, rc, f])
  assert r['precision'][1] == 0 and r['f1'][1] == 0


def test_balanced_accuracy_by_hand_and_sklearn():
  assert metrics.balanced_accuracy(Y_TRUE, Y_PRED) == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
  assert metrics.balanced_accuracy(Y_TRUE, Y_PRED) == pytest.approx(
      skm.balanced_accuracy_score(Y_TRUE, Y_PRED))
  # a class absent from the targets is not averaged in
  assert metrics.balanced_accuracy(np.array([0, 0, 1]), np.array([0, 2, 1])) == pytest.approx(
      (0.5 + 1.0) / 2)


def test_top_k_accuracy_by_hand_and_sklearn():
  scores = np.array([[0.5, 0.3, 0.2],    # true 0: rank 0
                     [0.5, 0.3, 0.2],    # true 1: rank 1
                     [0.5, 0.3, 0.2],    # true 2: rank 2
                     [0.1, 0.2, 0.7]])   # true 0: rank 2
  y = np.array([0, 1, 2, 0])
  assert metrics.top_k_accuracy(y, scores, 1) == 0.25
  assert metrics.top_k_accuracy(y, scores, 2) == 0.5
  assert metrics.top_k_accuracy(y, scores, 3) == 1.0
  rng = np.random.default_rng(0)
  scores = rng.random((200, 7))
  y = rng.integers(0, 7, 200)
  for k in (1, 3, 5):
    assert metrics.top_k_accuracy(y, scores, k) == pytest.approx(
        skm.top_k_accuracy_score(y, scores, k=k, labels=np.arange(7)))


def _encode_labels(labels, class_names=None):
  """String labels -> (indices, names), both from one sorted list, as fastai encoded them."""
  names = sorted(set(labels)) if class_names is None else list(class_names)
  return np.array([names.index(label) for label in labels]), names


def test_most_confused_names_the_right_pair_where_the_reference_did_not():
  # Labels in the order the data first shows them: rock, jazz, folk, house, techno.
  # The reference encoded indices in sorted order but printed names in this
  # first-appearance order.
  labels = ['rock'] * 10 + ['jazz'] * 10 + ['folk'] * 10 + ['house'] * 10 + ['techno'] * 10
  y_true, names = _encode_labels(labels)
  assert names == ['folk', 'house', 'jazz', 'rock', 'techno']
  predicted = list(labels)
  predicted[:6] = ['folk'] * 6          # rock -> folk: 6, the top confusion
  predicted[40:43] = ['house'] * 3      # techno -> house: 3
  predicted[10:12] = ['rock'] * 2       # jazz -> rock: 2
  y_pred, _ = _encode_labels(predicted, names)
  cm = metrics.confusion_matrix(y_true, y_pred, len(names))
  ours = metrics.most_confused(cm, names, k=3)
  assert ours == [('rock', 'folk', 6), ('techno', 'house', 3), ('jazz', 'rock', 2)]
  # the reference's naming: sorted-order indices looked up in first-appearance names
  first_appearance = list(dict.fromkeys(labels))
  i, j = np.unravel_index(np.argmax(cm - np.diag(np.diag(cm))), cm.shape)
  buggy = (first_appearance[i], first_appearance[j])
  assert buggy != ours[0][:2] and buggy == ('house', 'rock')
  with pytest.raises(ValueError):
    metrics.most_confused(cm, names[:-1])


def test_classification_report_table_and_csv():
  rng = np.random.default_rng(1)
  names = [f'class {c}' for c in range(20)]
  y = rng.integers(0, 20, 300)
  scores = rng.random((300, 20))
  scores[np.arange(300), y] += 0.6  # mostly right
  report = metrics.classification_report(y, scores, names, top_k=5)
  assert report['top1'] == pytest.approx(skm.accuracy_score(y, scores.argmax(1)))
  assert report['top5'] == pytest.approx(skm.top_k_accuracy_score(y, scores, k=5))
  assert report['macro']['f1'] == pytest.approx(skm.f1_score(y, scores.argmax(1), average='macro'))
  assert sum(report['per_class'][n]['support'] for n in names) == 300
  import json
  json.dumps(report)  # JSON-ready
  table = metrics.format_report(report, 'test')
  assert all(n in table for n in names) and 'macro avg' in table and 'top-5' in table
  csv_text = metrics.confusion_csv(np.array(report['confusion_matrix']), names)
  rows = [r.split(',') for r in csv_text.strip().split('\n')]
  assert rows[0][1:] == names and len(rows) == 21
  assert sum(int(v) for r in rows[1:] for v in r[1:]) == 300


def _wilson_by_hand(right: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
  p = right / n
  centre = (p + z * z / (2 * n)) / (1 + z * z / n)
  half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
  return centre - half, centre + half


@pytest.mark.parametrize('right,n', [(8, 10), (0, 5), (5, 5), (113, 171), (1, 1)])
def test_wilson_interval_by_hand(right, n):
  assert metrics.wilson_interval(right, n) == pytest.approx(_wilson_by_hand(right, n), abs=1e-12)
  low, high = metrics.wilson_interval(right, n)
  assert 0.0 <= low <= right / n <= high <= 1.0
  assert np.isnan(metrics.wilson_interval(0, 0)).all()


def test_the_report_gives_top1_its_interval():
  report = metrics.classification_report(Y_TRUE, np.eye(3)[Y_PRED], ['a', 'b', 'c'])
  assert report['top1'] == 5 / 8
  assert report['top1_interval'] == pytest.approx(_wilson_by_hand(5, 8))  # 0.306-0.863
  low, high = report['top1_interval']
  assert f'top-1 0.6250 (95% interval {low:.4f}-{high:.4f})' in metrics.format_report(report)


# ------------------------------------------------------------------ multi-label

# Hand example for AP: scores descending 0.9(+) 0.8(-) 0.7(+) 0.6(-) 0.5(+)
# precision at each positive: 1/1, 2/3, 3/5 -> AP = (1 + 2/3 + 3/5) / 3
AP_TARGET = np.array([1, 0, 1, 0, 1])
AP_SCORE = np.array([0.9, 0.8, 0.7, 0.6, 0.5])


def test_average_precision_by_hand_and_sklearn():
  assert metrics.average_precision(AP_TARGET, AP_SCORE) == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
  # ties form one threshold: all tied -> precision = prevalence
  assert metrics.average_precision([1, 0, 0, 1], [0.5] * 4) == pytest.approx(0.5)
  assert np.isnan(metrics.average_precision([0, 0], [0.1, 0.2]))
  rng = np.random.default_rng(2)
  targets = rng.random((120, 6)) < 0.3
  scores = np.round(rng.random((120, 6)) + 0.5 * targets, 2)  # rounding makes ties
  m = metrics.mean_average_precision(targets, scores)
  assert m['macro'] == pytest.approx(skm.average_precision_score(targets, scores, average='macro'))
  assert m['micro'] == pytest.approx(skm.average_precision_score(targets, scores, average='micro'))
  np.testing.assert_allclose(m['per_class'],
                             skm.average_precision_score(targets, scores, average=None))


def test_roc_auc_by_hand_and_sklearn():
  # positives 0.9, 0.7, 0.5 vs negatives 0.8, 0.6: pairs won 2 + 1 + 0 = 3 of 6
  assert metrics.roc_auc(AP_TARGET, AP_SCORE) == pytest.approx(3 / 6)
  assert metrics.roc_auc([1, 0], [0.5, 0.5]) == 0.5  # a tie counts half
  assert np.isnan(metrics.roc_auc([1, 1], [0.2, 0.3]))
  rng = np.random.default_rng(3)
  targets = rng.random((150, 5)) < 0.4
  scores = np.round(rng.random((150, 5)) + 0.4 * targets, 2)
  auc = metrics.roc_auc_scores(targets, scores)
  np.testing.assert_allclose(auc['per_class'], skm.roc_auc_score(targets, scores, average=None))
  assert auc['macro'] == pytest.approx(skm.roc_auc_score(targets, scores, average='macro'))


def test_example_f1_threshold_and_hits():
  targets = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 0], [1, 0, 1]], bool)
  scores = np.array([[0.9, 0.4, 0.1], [0.2, 0.8, 0.7], [0.1, 0.2, 0.3], [0.3, 0.6, 0.2]])
  pred = metrics.threshold_predictions(scores, 0.5)
  # per example: {0} vs {0,1}: 2/3; {1,2} vs {1}: 2/3; {} vs {}: 1; {1} vs {0,2}: 0
  assert metrics.example_f1(targets, pred) == pytest.approx((2 / 3 + 2 / 3 + 1 + 0) / 4)
  assert metrics.example_f1(targets, pred) == pytest.approx(
      skm.f1_score(targets, pred, average='samples', zero_division=1.0))
  forced = metrics.threshold_predictions(scores, 0.5, at_least_one=True)
  assert forced[2].tolist() == [False, False, True]
  # hit rates: best true label ranks 0, 0, (no label: skipped), 1 -> top-1 2/3, top-2 1
  assert metrics.hit_rate(targets, scores, 1) == pytest.approx(2 / 3)
  assert metrics.hit_rate(targets, scores, 2) == 1.0
  # with one label per example a hit rate is top-k accuracy
  rng = np.random.default_rng(4)
  y = rng.integers(0, 6, 50)
  s = rng.random((50, 6))
  assert metrics.hit_rate(np.eye(6, dtype=bool)[y], s, 3) == metrics.top_k_accuracy(y, s, 3)
  threshold, f1 = metrics.choose_threshold(targets, scores)
  # best by brute force over the same grid
  grid = np.round(np.arange(1, 100) / 100, 2)
  best = max(metrics.example_f1(targets, scores >= t) for t in grid)
  assert f1 == pytest.approx(best)
  assert metrics.example_f1(targets, scores >= threshold) == pytest.approx(best)
  assert metrics.example_f1(targets, scores >= 0.5) < best  # 0.5 is not optimal here


def test_multilabel_report():
  rng = np.random.default_rng(5)
  targets = rng.random((80, 4)) < 0.35
  scores = np.clip(rng.random((80, 4)) * 0.6 + 0.4 * targets, 0, 1)
  report = metrics.multilabel_report(targets, scores, ['a', 'b', 'c', 'd'], threshold=0.5)
  assert report['map_macro'] == pytest.approx(skm.average_precision_score(targets, scores))
  assert report['roc_auc_macro'] == pytest.approx(skm.roc_auc_score(targets, scores))
  assert 0 < report['top1'] <= report['top5'] == 1.0
  import json
  json.dumps(report)


def test_label_hierarchy():
  names = ['metal', 'death metal', 'melodic death metal', 'rock']
  anc = labels.ancestor_matrix(names, {'melodic death metal': 'death metal',
                                        'death metal': ['metal']})
  assert anc[2].tolist() == [True, True, False, False]  # transitive
  assert anc[1].tolist() == [True, False, False, False]
  assert not anc[3].any() and not anc[0].any()
  targets = np.array([[0, 0, 1, 0], [0, 0, 0, 1]], bool)
  np.testing.assert_array_equal(labels.apply_hierarchy_to_targets(targets, anc),
                                [[1, 1, 1, 0], [0, 0, 0, 1]])
  scores = np.array([[0.1, 0.2, 0.8, 0.1], [0.6, 0.1, 0.05, 0.9]])
  out = labels.apply_hierarchy_to_scores(scores, anc)
  np.testing.assert_allclose(out, [[0.8, 0.8, 0.8, 0.1], [0.6, 0.1, 0.05, 0.9]])
  with pytest.raises(ValueError, match='cycle'):
    labels.ancestor_matrix(names, {'metal': 'rock', 'rock': 'metal'})
  with pytest.raises(ValueError, match='not a class'):
    labels.ancestor_matrix(names, {'grunge': 'rock'})
