"""Evaluation reports: metrics of a split, results.json and pictures."""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping

import jax
import ml_collections
import numpy as np

from crnn_jax import checkpoints, models
from crnn_jax.input_pipeline import DataInfo


def top_k_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
  k = min(k, logits.shape[-1])
  top = np.argsort(-logits, axis=-1, kind='stable')[:, :k]
  return float((top == labels[:, None]).any(axis=-1).mean())


def split_metrics(pred: Mapping[str, np.ndarray], info: DataInfo,
                  config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Headline numbers of one split: loss, top-1, top-k."""
  logits, labels = pred['logits'], pred['label']
  if len(labels) == 0:
    return {'loss': float('nan'), 'top1': float('nan'), 'top5': float('nan'), 'count': 0}
  return {
      'loss': float(np.mean(pred['loss'])),
      'top1': top_k_accuracy(logits, labels, 1),
      'top5': top_k_accuracy(logits, labels, config.eval.top_k),
      'count': int(len(labels)),
  }


def evaluate_and_report(state: Any, sources: Mapping[str, Any], info: DataInfo, parallel: Any,
                        eval_fn: Callable, config: ml_collections.ConfigDict, workdir: str,
                        history: list[dict[str, Any]]) -> dict[str, Any]:
  """Evaluates validation and test, writes results.json; returns the results."""
  from crnn_jax import train  # pylint: disable=import-outside-toplevel
  results: dict[str, Any] = {
      'classes': list(info.class_names),
      'num_params': models.count_params(jax.device_get(state.params)),
      'model_variant': config.model.variant,
      'data_set': info.name,
      'step': int(state.step),
  }
  for split in ('validation', 'test'):
    pred = train.predict_split(state, sources[split], info, parallel, eval_fn, config)
    results[split] = split_metrics(pred, info, config)
  if jax.process_index() == 0:
    checkpoints.write_json(os.path.join(workdir, 'results.json'), results)
  return results
