"""The study's tables, one line per run: on one split, clip and track top-1 with
a 95% interval, macro F1 and wall time; over the folds of a cross-validation,
each fold's clip top-1, their mean and spread, and track top-1 pooled over every
tested track. Results are merged into a JSON file, so reruns of some runs replace
only theirs."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from crnn_jax.evaluate import metrics


def table(results: Sequence[dict], chance: float) -> str:
  head = ('| row | clip top-1 | track top-1 (95% interval) | clip macro F1 | track macro F1 | '
          'checkpoint | wall s |')
  lines = [head, '|' + '---|' * 7]
  for r in results:
    clip, track = r['test'], r['test']['track']
    chosen = r['checkpoint']
    which = f"{chosen.get('checkpoint', '')} (epoch {chosen.get('epoch', '?')})"
    low, high = track_interval(track)
    lines.append(f"| {r['row']} | {clip['top1']:.3f} | "
                 f"{track['top1']:.3f} ({low:.3f}-{high:.3f}) | {clip['macro']['f1']:.3f} | "
                 f"{track['macro']['f1']:.3f} | {which} | {r['seconds']:.0f} |")
  first = results[0]['test']
  lines.append(f"\ntest split: {first['count']} clips of {first['track']['count']} tracks, "
               f'{len(first["class_names"])} styles; chance (uniform) {chance:.3f}, majority '
               f'class {_majority(first):.3f} of the clips. Intervals: Wilson, each track an '
               'independent draw; tracks of one album are not, so they are too narrow')
  return '\n'.join(lines)


def track_interval(track: dict) -> tuple[float, float]:
  """95% Wilson score interval of track top-1: how far the figure could move
  with another draw of as many test tracks."""
  return metrics.wilson_interval(tracks_right(track), int(track['count']))


def tracks_right(track: dict) -> int:
  """Tracks named right, from a track-level result's top-1 and count."""
  return round(track['top1'] * int(track['count']))


def _majority(test: dict) -> float:
  supports = [v['support'] for v in test['per_class'].values()]
  return max(supports) / max(sum(supports), 1)


def cv_table(results: Sequence[dict], chance: float) -> str:
  """One line per row over its folds: each fold's clip top-1, their mean and
  standard deviation, track top-1 pooled over every tested track (each is
  tested once) with its Wilson interval, mean macro F1s, total wall time."""
  head = ('| row | clip top-1 per fold | clip top-1 mean (sd) | track top-1, all tracks '
          '(95% interval) | clip macro F1 mean | track macro F1 mean | wall s |')
  lines = [head, '|' + '---|' * 7]
  names = list(dict.fromkeys(r['row'] for r in results))
  for name in names:
    runs = [r for r in results if r['row'] == name]
    clip = np.array([r['test']['top1'] for r in runs])
    right = sum(tracks_right(r['test']['track']) for r in runs)
    tracks = sum(int(r['test']['track']['count']) for r in runs)
    low, high = metrics.wilson_interval(right, tracks)
    folds = ' '.join(f"{c:.3f}" for c in clip)
    lines.append(
        f'| {name} | {folds} | {clip.mean():.3f} ({clip.std(ddof=1) if len(clip) > 1 else 0:.3f})'
        f' | {right / tracks:.3f} ({low:.3f}-{high:.3f}) | '
        f"{np.mean([r['test']['macro']['f1'] for r in runs]):.3f} | "
        f"{np.mean([r['test']['track']['macro']['f1'] for r in runs]):.3f} | "
        f"{sum(r['seconds'] for r in runs):.0f} |")
  counts = [f"{r['test']['count']}/{r['test']['track']['count']}" for r in results
            if r['row'] == names[0]]
  lines.append(f"\nfolds' test clips/tracks: {' '.join(counts)}; chance (uniform) "
               f'{chance:.3f}. Intervals: Wilson over all tested tracks, each an independent '
               'draw; tracks of one album are not, so they are too narrow')
  return '\n'.join(lines)


def merge_results(path: str, fresh: Sequence[dict], order: Sequence[str],
                  key: Sequence[str] = ('row',)) -> list[dict]:
  """Writes ``fresh`` rows into the results file over any earlier run of the
  same rows (``--rows`` reruns some; with folds, the same row and fold), in the
  table's order; returns them all."""
  def ident(r: dict) -> tuple:
    return tuple(r.get(k) for k in key)
  try:
    with open(path) as f:
      kept = {ident(r): r for r in json.load(f)}
  except (OSError, ValueError):
    kept = {}
  kept.update({ident(r): r for r in fresh})
  rank = {name: i for i, name in enumerate(order)}
  results = sorted((r for r in kept.values() if r['row'] in rank),
                   key=lambda r: (rank[r['row']], r.get('fold', 0)))
  with open(path, 'w') as f:
    json.dump(results, f, indent=2)
  return results
