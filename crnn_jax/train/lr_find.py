"""The learning-rate range test as the reference ran it (fastai v1's lr_find).

``lr_range_test(config, workdir)`` is ``--mode=lr_find``; it drives the
pure bookkeeping below (``LRFinderState``: the sweep, smoothing, stop rule,
suggestion) with the training step:

  finder = LRFinderState.from_config(config.lr_find)  # its defaults: configs/default.py
  while not finder.done:
    loss = train_one_batch(lr=finder.next_lr())
    finder.record(loss)
  best = suggest_lr(finder.lrs, finder.smoothed)

fastai v1 semantics, reproduced here:
- lr of batch i (0-based) = start_lr * (end_lr / start_lr) ** (i / num_it):
  an exponential sweep; the first batch uses start_lr and, as in fastai's
  Scheduler, the last of num_it batches stays just below end_lr.
- the loss is smoothed by an exponential moving average, beta 0.98, with
  bias correction: avg = beta * avg + (1 - beta) * loss; smooth = avg / (1 -
  beta ** n).
- the best smoothed loss is tracked from the first batch; the test stops after
  num_it batches, or as soon as the smoothed loss exceeds 4 x the best or is
  not finite (divergence).
- suggestion: fastai v1's "min numerical gradient": the lr where
  ``np.gradient`` of the smoothed loss (over batch index, i.e. over log lr,
  as the sweep is exponential) is most negative, i.e. the steepest descent,
  after skipping the first 10 and last 5 points as fastai's plot did. This is
  how the reference's max_lr values (1.445e-3, 1.738e-3) were read off. The
  other fastai v1 hint, lr at the minimum loss / 10, is ``min_loss_lr``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from crnn_jax.core import storage
from crnn_jax.core.errors import UserError
from crnn_jax.data import pipeline
from crnn_jax.evaluate import plots
from crnn_jax.train import setup, steps
from crnn_jax.train.state import TrainState
from crnn_jax.train.writers import log
from crnn_jax.workdir.run_lock import holds_workdir

SMOOTHING_BETA = 0.98
DIVERGENCE_FACTOR = 4.0
SKIP_START = 10
SKIP_END = 5


def lr_schedule_for_range_test(start_lr: float, end_lr: float, num_it: int
                               ) -> Callable[[Any], Any]:
  """step -> lr of the exponential sweep; an optax-style schedule.

  Uses only arithmetic, so it accepts a Python int, a numpy array or a traced
  jax array (``optax.inject_hyperparams`` / a jitted step) alike.
  """
  _check_range(start_lr, end_lr, num_it)
  ratio = end_lr / start_lr

  def schedule(step):
    return start_lr * ratio ** (step / num_it)
  return schedule


def range_test_lrs(start_lr: float, end_lr: float, num_it: int) -> np.ndarray:
  """The num_it learning rates of a full sweep (batches 0..num_it-1)."""
  return np.asarray(lr_schedule_for_range_test(start_lr, end_lr, num_it)(
      np.arange(num_it, dtype=np.float64)))


def _check_range(start_lr: float, end_lr: float, num_it: int) -> None:
  if not (start_lr > 0 and end_lr > start_lr):
    raise ValueError(f'need 0 < start_lr < end_lr, got {start_lr:g}, {end_lr:g}')
  if num_it < 2:
    raise ValueError(f'num_it must be >= 2, got {num_it}')


def smooth_update(avg: float, count: int, loss: float,
                  beta: float = SMOOTHING_BETA) -> tuple[float, int, float]:
  """One step of the bias-corrected moving average.

  Returns (new avg, new count, smoothed value); start from avg 0, count 0.
  """
  avg = beta * avg + (1.0 - beta) * float(loss)
  count += 1
  return avg, count, avg / (1.0 - beta ** count)


def smooth_losses(losses: Sequence[float], beta: float = SMOOTHING_BETA) -> np.ndarray:
  """The smoothed curve of a whole list of per-batch losses."""
  avg, count, out = 0.0, 0, []
  for loss in losses:
    avg, count, smoothed = smooth_update(avg, count, loss, beta)
    out.append(smoothed)
  return np.asarray(out, dtype=np.float64)


def diverged(smoothed: float, best: float, factor: float = DIVERGENCE_FACTOR) -> bool:
  """fastai's stop test: smoothed loss above factor x the best, or not finite."""
  return (not math.isfinite(smoothed)) or smoothed > factor * best


@dataclasses.dataclass
class LRFinderState:
  """Progress of one range test; ``record`` each batch's loss in order."""
  start_lr: float
  end_lr: float
  num_it: int
  beta: float = SMOOTHING_BETA
  stop_div: bool = True
  div_factor: float = DIVERGENCE_FACTOR
  lrs: list[float] = dataclasses.field(default_factory=list)
  losses: list[float] = dataclasses.field(default_factory=list)  # raw, per batch
  smoothed: list[float] = dataclasses.field(default_factory=list)
  best_loss: float = math.inf
  avg: float = 0.0
  count: int = 0
  done: bool = False
  stop_reason: str = ''

  def __post_init__(self) -> None:
    _check_range(self.start_lr, self.end_lr, self.num_it)
    self._schedule = lr_schedule_for_range_test(self.start_lr, self.end_lr, self.num_it)

  @classmethod
  def from_config(cls, lr_find: ml_collections.ConfigDict) -> LRFinderState:
    """The sweep config.lr_find describes (fastai v1's defaults in configs/default.py)."""
    return cls(start_lr=float(lr_find.start_lr), end_lr=float(lr_find.end_lr),
               num_it=int(lr_find.num_it))

  def next_lr(self) -> float:
    """The learning rate for the next batch."""
    return float(self._schedule(len(self.lrs)))

  def record(self, loss: float, lr: float | None = None) -> bool:
    """Adds the loss of the batch trained at ``next_lr()`` (or ``lr``);
    returns True when the test should stop (then ``done`` and
    ``stop_reason`` say why)."""
    if self.done:
      raise RuntimeError('the range test has already stopped')
    lr = self.next_lr() if lr is None else float(lr)
    loss = float(loss)
    self.avg, self.count, smooth = smooth_update(self.avg, self.count, loss, self.beta)
    self.lrs.append(lr)
    self.losses.append(loss)
    self.smoothed.append(smooth)
    if len(self.smoothed) == 1 or smooth < self.best_loss:
      self.best_loss = smooth
    if len(self.lrs) >= self.num_it:
      self.done, self.stop_reason = True, f'swept all {self.num_it} learning rates'
    elif self.stop_div and diverged(smooth, self.best_loss, self.div_factor):
      self.done = True
      self.stop_reason = (f'loss diverged at lr {lr:.3g} (smoothed {smooth:.4g} > '
                          f'{self.div_factor:g} x best {self.best_loss:.4g})')
    return self.done


def _finite_window(lrs: Sequence[float], losses: Sequence[float], skip_start: int,
                   skip_end: int) -> tuple[np.ndarray, np.ndarray]:
  lrs = np.asarray(lrs, dtype=np.float64)
  losses = np.asarray(losses, dtype=np.float64)
  if lrs.shape != losses.shape or lrs.ndim != 1:
    raise ValueError(f'lrs {lrs.shape} and losses {losses.shape} must be equal 1-D shapes')
  finite = np.isfinite(losses)
  # a non-finite loss ends the usable curve (it can only be the divergence)
  n = int(np.argmin(finite)) if not finite.all() else len(losses)
  lrs, losses = lrs[:n], losses[:n]
  end = len(lrs) - skip_end if skip_end else len(lrs)
  lrs, losses = lrs[skip_start:end], losses[skip_start:end]
  return lrs, losses


def suggest_lr(lrs: Sequence[float], losses: Sequence[float], skip_start: int = SKIP_START,
               skip_end: int = SKIP_END) -> float:
  """fastai v1's suggested max_lr: the lr of steepest descent of the
  smoothed loss (min of ``np.gradient``), first ``skip_start`` and last
  ``skip_end`` points left out. Raises ValueError with fewer than 3 points
  left (the test stopped too early: widen the range or lower start_lr)."""
  lrs, losses = _finite_window(lrs, losses, skip_start, skip_end)
  if len(losses) < 3:
    raise ValueError(f'only {len(losses)} usable points after skipping {skip_start} + '
                     f'{skip_end}: the range test stopped too early to suggest a learning rate')
  return float(lrs[int(np.argmin(np.gradient(losses)))])


def min_loss_lr(lrs: Sequence[float], losses: Sequence[float], skip_start: int = SKIP_START,
                skip_end: int = SKIP_END) -> float:
  """fastai v1's other hint: the lr of the lowest smoothed loss, divided by 10."""
  lrs, losses = _finite_window(lrs, losses, skip_start, skip_end)
  if len(losses) == 0:
    raise ValueError('no usable points to find a minimum')
  return float(lrs[int(np.argmin(losses))] / 10.0)


# --------------------------------------------------------------------------
# The test on a run
# --------------------------------------------------------------------------
@holds_workdir('the learning-rate range test')
def lr_range_test(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """--mode=lr_find: fastai's learning-rate range test on the train split.

  A fresh model (config.init_from's weights where it names a workdir) trains
  one batch per learning rate on an exponential sweep (Adam, beta1 0.9 as
  fastai's default optimiser), stopping when the smoothed loss diverges.
  Writes lr_find.png and lr_find.json; no checkpoint of the workdir is read
  or written, so it is safe in a training workdir.
  """
  run = setup.build_run(config, workdir)
  t = config.train
  finder = LRFinderState.from_config(config.lr_find)
  state = run.fresh_state(optax.inject_hyperparams(optax.adamw)(
      learning_rate=finder.start_lr, b1=0.9, b2=t.beta2, eps=t.eps, weight_decay=t.weight_decay))
  if config.get('init_from'):
    state, _ = run.from_pretrained(state)
  _sweep(run, state, finder)
  try:
    suggestion = suggest_lr(finder.lrs, finder.smoothed)
  except ValueError as e:
    raise UserError(f'LR range test: {e}; raise --config.lr_find.num_it or the data set size'
                    ) from None
  result = {'suggested_max_lr': suggestion,
            'min_loss_lr_div10': min_loss_lr(finder.lrs, finder.smoothed),
            'stop_reason': finder.stop_reason, 'lrs': finder.lrs,
            'smoothed_losses': finder.smoothed, 'losses': finder.losses}
  if jax.process_index() == 0:
    storage.write_json(os.path.join(run.workdir, 'lr_find.json'), result)
    plots.plot_lr_finder(finder.lrs, finder.smoothed, os.path.join(run.workdir, 'lr_find.png'),
                         suggested_lr=suggestion, raw_losses=finder.losses,
                         title=f'{run.info.name}: learning-rate range test')
  log(f'LR range test ({len(finder.lrs)} batches, {finder.stop_reason}): suggested max_lr '
      f'{suggestion:.3g} (set --config.train.max_lr); plot in {run.workdir}/lr_find.png')
  return result


def _sweep(run: setup.Run, state: TrainState, finder: LRFinderState) -> None:
  """One batch per learning rate of the sweep, epochs repeating until it ends."""
  config = run.config

  def step_at(state, batch, weights, lr):
    opt_state = state.opt_state
    opt_state = opt_state._replace(hyperparams={**opt_state.hyperparams, 'learning_rate': lr})
    return steps.train_step(state.replace(opt_state=opt_state), batch, weights,
                            config.multilabel)

  step = jax.jit(step_at, donate_argnums=0)
  weights = run.parallel.replicate(jnp.ones(len(run.info.class_names)))
  labels = run.train_labels()
  epoch = 0
  while not finder.done:
    order = pipeline.epoch_order(labels, config.seed, epoch)
    for batch in pipeline.train_batches(run.reader('train'), order, config.train.batch_size):
      state, m = step(state, run.parallel.shard_batch(batch), weights,
                      jnp.float32(finder.next_lr()))
      if finder.record(float(m['loss'])):
        break
    epoch += 1
