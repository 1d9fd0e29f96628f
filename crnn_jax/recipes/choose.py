"""The recipe a small data set gets, chosen by cross-validation on its training split.

``config.recipe='auto'`` (the folder command's default when it starts from a
pretrained model): each of ``config.recipe_candidates`` (probe, finetune and
their average; head where named) is scored on ``config.recipe_folds`` folds
(K, default 3) of the training split (crnn_jax/data/folds.py: whole artists,
or tracks, per fold, stratified, seeded), so every training track is held out
once. Probe and fine-tune run K times each; the average of their held-out
probabilities costs nothing more. The held-out probabilities, averaged per
track, give each candidate's cross-validated track top-1 with its 95% Wilson
interval and its log-loss (``choose``). The most tracks right wins; a tie
goes to the lower log-loss (a proper score: it tells apart candidates that
name as many tracks, where top-1 on a few dozen tracks often ties), then to
the simpler (probe, head, finetune, average). The winner is retrained on the
whole training split in the workdir (the average: both members, in
WORKDIR/members/) and evaluated once on the test split, which the choice
never reads; results.json gets 'recipe'.

Cost: the probe is an embedding pass and seconds of scikit-learn; head and
finetune are K trainings each on (K-1)/K of the training split (a fine-tune of
~150 one-window 30-s tracks takes ~5 minutes on 2 CPU cores), then the winner
once more. The fold runs live in ``WORKDIR/cv/`` (their output in each one's
log.txt); a rerun reuses the finished ones and resumes the others.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from scipy.special import softmax

from crnn_jax.core import storage
from crnn_jax.core.errors import UserError
from crnn_jax.data import folds, source
from crnn_jax.evaluate import metrics, report
from crnn_jax.recipes import probe
from crnn_jax.recipes import recipe as recipe_lib
from crnn_jax.train import trainer
from crnn_jax.workdir import files as workdir_files

AVERAGE = recipe_lib.AVERAGE  # the probe's and the fine-tune's probabilities, averaged
CV_DIR = 'cv'
CHOICE_FILE = 'choice.json'


@dataclasses.dataclass
class OutOfFold:
  """A candidate's held-out probabilities: one row per clip of the training
  split, each predicted by the run that did not train on it."""
  track_ids: np.ndarray  # (clips,)
  labels: np.ndarray  # (clips,)
  probabilities: np.ndarray  # (clips, classes)

  def tracks(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(track ids sorted, their labels, the mean of their clips' probabilities)."""
    ids, first, index = np.unique(np.asarray(self.track_ids, str), return_index=True,
                                  return_inverse=True)
    sums = np.zeros((len(ids), self.probabilities.shape[1]))
    np.add.at(sums, index.reshape(-1), self.probabilities)
    return ids, np.asarray(self.labels)[first], sums / np.bincount(index.reshape(-1))[:, None]


@dataclasses.dataclass(frozen=True)
class Score:
  """A candidate's cross-validated track top-1 (``right`` of ``tracks``) and
  mean log-loss of the tracks' probabilities."""
  right: int
  tracks: int
  log_loss: float
  kept: bool  # whether it can be the chosen recipe

  @classmethod
  def of(cls, labels: np.ndarray, probabilities: np.ndarray, kept: bool) -> Score:
    true = probabilities[np.arange(len(labels)), labels]
    return cls(int(np.sum(probabilities.argmax(axis=1) == labels)), len(labels),
               float(-np.mean(np.log(np.clip(true, 1e-12, 1.0)))), kept)

  @property
  def top1(self) -> float:
    return self.right / max(self.tracks, 1)

  @property
  def interval(self) -> tuple[float, float]:
    return metrics.wilson_interval(self.right, self.tracks)

  def to_json(self) -> dict[str, Any]:
    return {'track_top1': self.top1, 'track_top1_interval': list(self.interval),
            'right': self.right, 'tracks': self.tracks, 'log_loss': self.log_loss,
            'can_be_chosen': self.kept}


@dataclasses.dataclass(frozen=True)
class Choice:
  winner: str
  scores: dict[str, Score]
  tie_broken_by: str = ''  # '' (no tie), 'log_loss' or 'order' (the simpler recipe)

  def to_json(self) -> dict[str, Any]:
    return {'chosen': self.winner, 'tie_broken_by': self.tie_broken_by,
            'cross_validated': {k: s.to_json() for k, s in self.scores.items()}}


def choose(candidates: Mapping[str, OutOfFold], order: Sequence[str] = recipe_lib.KEPT
           ) -> Choice:
  """The candidate in ``order`` with the most held-out tracks right; ties: the
  lower log-loss, then the one first in ``order`` (the simplest). Every
  candidate must cover the same tracks. With 'probe' and 'finetune' their
  average is scored too (kept where ``order`` names it)."""
  tracks = {name: oof.tracks() for name, oof in candidates.items()}
  ids = {name: tuple(t[0]) for name, t in tracks.items()}
  if len(set(ids.values())) > 1:
    raise ValueError(f'candidates cover different tracks: {sorted(ids)}')
  if 'probe' in tracks and 'finetune' in tracks:
    tracks[AVERAGE] = (*tracks['probe'][:2], (tracks['probe'][2] + tracks['finetune'][2]) / 2)
  scores = {name: Score.of(labels, probs, name in order)
            for name, (_, labels, probs) in tracks.items()}
  ranked = [n for n in order if n in scores]
  key = {n: (-scores[n].right, round(scores[n].log_loss, 9)) for n in ranked}
  winner = min(ranked, key=lambda n: (*key[n], ranked.index(n)))
  rivals = [key[n] for n in ranked if n != winner]
  tie = ('order' if key[winner] in rivals else
         'log_loss' if any(k[0] == key[winner][0] for k in rivals) else '')
  return Choice(winner, scores, tie)


def candidates_of(config: ml_collections.ConfigDict) -> list[str]:
  """config.recipe_candidates, simplest first; the average needs both its members."""
  names = [n.strip() for n in str(config.recipe_candidates).split(',') if n.strip()]
  unknown = [n for n in names if n not in recipe_lib.KEPT]
  if unknown or not names:
    raise UserError(f'config.recipe_candidates {config.recipe_candidates!r}: a comma-separated '
                    f'list of {", ".join(recipe_lib.KEPT)}')
  if AVERAGE in names and not set(recipe_lib.AVERAGE_MEMBERS) <= set(names):
    raise UserError(f'config.recipe_candidates {config.recipe_candidates!r}: {AVERAGE} is the '
                    f'mean of {" and ".join(recipe_lib.AVERAGE_MEMBERS)}: name both')
  return [n for n in recipe_lib.KEPT if n in names]


# --------------------------------------------------------------------------
# The out-of-fold probabilities of each candidate
# --------------------------------------------------------------------------
def fold_config(config: ml_collections.ConfigDict, fold: int) -> ml_collections.ConfigDict:
  """The config of a run on fold ``fold``'s view; the candidate list is no
  part of it (another list reuses the same runs)."""
  out = config.copy_and_resolve_references()
  out.data.cv_folds, out.data.cv_fold = int(config.recipe_folds), fold
  out.recipe_candidates = ''
  return out


def probe_out_of_fold(config: ml_collections.ConfigDict) -> OutOfFold:
  """The probe fitted K times, each time on the other folds' tracks; one
  embedding pass of the training split serves them all."""
  info = source.load_info(config)
  _, model = probe.backbone(config, info)
  embedded = probe.embed_split(model, config, info, 'train')
  fold_of = source.train_folds(fold_config(config, 0))
  first = np.unique(embedded.track, return_index=True)[1]
  track_fold = fold_of[first]  # a track's windows share its group, hence its fold
  probs = np.zeros((len(embedded.windows), len(info.class_names)))
  for k in range(int(config.recipe_folds)):
    fitted = probe.fit(embedded.tracks(track_fold != k), config)
    held = track_fold[embedded.track] == k
    probs[held] = fitted.window_probabilities(embedded.windows[held], len(info.class_names))
  return OutOfFold(embedded.track_ids[embedded.track], embedded.labels[embedded.track], probs)


def trained_out_of_fold(config: ml_collections.ConfigDict, workdir: str, recipe: str,
                        clock: Clock) -> OutOfFold:
  """The recipe trained K times in WORKDIR/cv/RECIPE_foldK; each run's test
  split is its held-out fold (predictions_test.npz). A finished run is reused."""
  parts = []
  for k in range(int(config.recipe_folds)):
    run_config = fold_config(recipe_lib.with_recipe(config, recipe), k)
    run_dir = os.path.join(workdir, CV_DIR, f'{recipe}_fold{k}')
    if not recipe_lib.finished(run_dir, run_config):
      clock.start(f'{recipe}, fold {k + 1}/{config.recipe_folds}')
      os.makedirs(run_dir, exist_ok=True)
      with open(os.path.join(run_dir, 'log.txt'), 'a') as log, contextlib.redirect_stdout(log):
        trainer.train_and_evaluate(run_config, run_dir)
      clock.done(recipe)
    parts.append(report.read_predictions(run_dir, 'test'))
  return OutOfFold(np.concatenate([p['track_id'] for p in parts]),
                   np.concatenate([p['label'] for p in parts]),
                   softmax(np.concatenate([p['logits'] for p in parts]).astype(np.float64), axis=-1))


class Clock:
  """Progress lines for the fold runs, with the time they took and an
  estimate of what is left (the mean of the recipe's finished runs)."""

  def __init__(self, runs: dict[str, int]):
    self.left = dict(runs)
    self.took: dict[str, list[float]] = {name: [] for name in runs}
    self._tic, self._what = 0.0, ''

  def start(self, what: str) -> None:
    self._tic, self._what = time.perf_counter(), what
    print(f'cross-validation: training {what} ...', flush=True)

  def done(self, recipe: str) -> None:
    self.took[recipe].append(time.perf_counter() - self._tic)
    self.left[recipe] -= 1
    known = [t for ts in self.took.values() for t in ts]
    left = sum(n * np.mean(self.took[r] or known) for r, n in self.left.items())
    print(f'cross-validation: {self._what} took {self.took[recipe][-1] / 60:.1f} min; about '
          f'{left / 60:.0f} min of fold runs left', flush=True)


# --------------------------------------------------------------------------
# The automatic recipe
# --------------------------------------------------------------------------
def cross_validate(config: ml_collections.ConfigDict, workdir: str) -> Choice:
  """Every candidate's out-of-fold probabilities on the training split, and the choice."""
  names = candidates_of(config)
  if config.multilabel:
    raise UserError('the recipe choice scores single-label top-1: for a multi-label data set '
                    'pick --config.recipe=finetune or head')
  info = source.load_info(config)
  source.train_folds(fold_config(config, 0))  # too few groups per class: say so before any work
  trained = [n for n in names if n in recipe_lib.TRAINABLE]
  groups = len(set(folds.groups_of(source.read_text(config, 'train', 'artist_id'))))
  print(f'choosing the recipe by {config.recipe_folds}-fold cross-validation on the '
        f'{info.split_sizes["train"]} training clips (folds grouped by artist, a track without '
        f'one alone: {groups} groups) among '
        f'{", ".join(names)}: {len(trained) * int(config.recipe_folds)} training runs, then the '
        'winner once more on all of them', flush=True)
  out_of_fold = {}
  if 'probe' in names:
    out_of_fold['probe'] = probe_out_of_fold(config)
  clock = Clock({n: int(config.recipe_folds) for n in trained})
  for name in trained:
    out_of_fold[name] = trained_out_of_fold(config, workdir, name, clock)
  choice = choose(out_of_fold, order=names)
  if jax.process_index() == 0:
    storage.write_json(os.path.join(workdir, CV_DIR, CHOICE_FILE), choice.to_json())
  return choice


def describe(record: Mapping[str, Any]) -> str:
  """results.json's 'recipe' in a line: the choice and every candidate's figure."""
  figures = []
  for name, s in record['cross_validated'].items():
    low, high = s['track_top1_interval']
    figures.append(f'{name} {s["track_top1"]:.3f} ({low:.2f}-{high:.2f}, {s["right"]}/'
                   f'{s["tracks"]}; log-loss {s["log_loss"]:.3f})' + (
                       '' if s['can_be_chosen'] else ' (scored only: not a candidate)'))
  chosen = record['chosen']
  tie = {'order': ' (a tie: the simpler recipe)', 'log_loss': ' (a tie in top-1: the lower '
         'log-loss)'}.get(record.get('tie_broken_by', ''), '')
  return (f'recipe: {chosen}{tie}, chosen by {record["folds"]}-fold cross-validation on the '
          f'training split (held-out track top-1, 95% interval; log-loss): {"; ".join(figures)}')


def train_auto(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """The choice, then the winner retrained on the whole training split and
  evaluated on test; results.json gets 'recipe' (the choice, every figure)."""
  workdir = workdir_files.ensure_workdir(workdir)
  choice = cross_validate(config, workdir)
  record = {**choice.to_json(), 'folds': int(config.recipe_folds),
            'candidates': candidates_of(config)}
  print(describe(record), flush=True)
  print(f'training {choice.winner} on the whole training split', flush=True)
  results = recipe_lib.train_recipe(config, workdir, choice.winner)
  results['recipe'] = record
  if jax.process_index() == 0:
    storage.write_json(os.path.join(workdir, workdir_files.RESULTS_FILE), results)
  return results
