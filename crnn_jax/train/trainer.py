"""Training and evaluation of a workdir, read top to bottom in sections.

``train_and_evaluate(config, workdir)`` trains the CRNN with the reference's
recipe (AdamW, one-cycle lr and beta1, last batch dropped), data parallel over
every device, checkpoints every epoch and on Ctrl-C / SIGTERM, resumes exactly
from the latest checkpoint, then evaluates on validation and test. A fresh run
may start from another workdir's model (config.init_from), keep its best epoch
beside the latest and stop early (config.train.best_metric).
``evaluate_only`` is ``--mode=eval``: the best (else latest) checkpoint, evaluated.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from tqdm import tqdm

from crnn_jax import model as model_lib
from crnn_jax.core.errors import UserError
from crnn_jax.data import pipeline
from crnn_jax.evaluate import report
from crnn_jax.train import bn_stats, selection, setup
from crnn_jax.train import state as state_lib
from crnn_jax.train.setup import Run, StepPlan
from crnn_jax.train.state import TrainState
from crnn_jax.train.steps import TrainOptions
from crnn_jax.train.stopping import Interrupted, StopRequest, TrainingDiverged
from crnn_jax.train.writers import MetricWriters, log
from crnn_jax.workdir import checkpoints, files
from crnn_jax.workdir.checkpoints import Progress
from crnn_jax.workdir.run_lock import holds_workdir


@dataclasses.dataclass
class EpochSums:
  """Running training loss and accuracy of one epoch."""
  loss_sum: float = 0.0
  correct: float = 0.0
  seen: int = 0

  def add(self, loss: float, correct: float, clips: int) -> None:
    self.loss_sum += loss * clips
    self.correct += correct
    self.seen += clips

  @property
  def loss(self) -> float:
    return self.loss_sum / max(self.seen, 1)

  @property
  def accuracy(self) -> float:
    return self.correct / max(self.seen, 1)


def class_weights_for(config: ml_collections.ConfigDict, train_labels: np.ndarray,
                      num_classes: int) -> np.ndarray:
  """'none' (reference) or 'inverse_frequency': w_c = n / (C * n_c), mean 1."""
  mode = config.train.class_weighting
  if mode == 'none':
    return np.ones(num_classes, np.float32)
  if config.multilabel:
    raise UserError('config.train.class_weighting applies to single-label training; in '
                    "multi-label mode use --config.train.sampling=balanced or 'none'")
  if mode == 'inverse_frequency':
    counts = np.bincount(train_labels, minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, len(train_labels) / (num_classes * np.maximum(counts, 1)), 0.0)
    return weights.astype(np.float32)
  raise UserError(f"config.train.class_weighting {mode!r}: use 'none' or 'inverse_frequency'")


def predict_split(run: Run, state: TrainState, split: str, eval_fn: Callable
                  ) -> dict[str, np.ndarray]:
  """Logits, losses, labels, label sets and track ids of every example of a split."""
  outs: dict[str, list[np.ndarray]] = {'logits': [], 'loss': [], 'label': [], 'label_set': [],
                                       'mask': []}
  for batch in pipeline.eval_batches(run.reader(split), run.config.train.eval_batch_size):
    out = jax.device_get(eval_fn(state, run.parallel.shard_batch(batch)))
    for k, v in outs.items():
      v.append(np.asarray(out[k]))
  joined = {k: np.concatenate(v) for k, v in outs.items()}
  keep = joined.pop('mask') > 0
  return {**{k: v[keep] for k, v in joined.items()}, 'track_id': run.track_ids(split)}


def lr_per_step(config: ml_collections.ConfigDict, history: list[dict[str, Any]]
                ) -> tuple[list[float], int]:
  """(the learning rate of every step of the run, steps per epoch), for the curves."""
  steps_per_epoch = int(history[0]['step'] // history[0]['epoch'])
  total = steps_per_epoch * int(config.train.num_epochs)
  lr_fn, _ = state_lib.schedules(config, total)
  return [float(lr_fn(s)) for s in range(total)], steps_per_epoch


def _evaluate(run: Run, state: TrainState, eval_fn: Callable,
              history: list[dict[str, Any]], checkpoint: dict[str, Any]) -> dict[str, Any]:
  """Validation and test reports through crnn_jax.evaluate (which never sees the trainer)."""
  schedule, steps_per_epoch = lr_per_step(run.config, history) if history else (None, None)
  return report.evaluate_and_report(
      lambda split: predict_split(run, state, split, eval_fn), run.info, run.config, run.workdir,
      num_params=model_lib.count_params(jax.device_get(state.params)), step=int(state.step),
      history=history, lr_schedule=schedule, steps_per_epoch=steps_per_epoch,
      ancestors=run.label_ancestors, checkpoint=checkpoint)


def _state_to_evaluate(run: Run, state: TrainState) -> tuple[TrainState, dict[str, Any]]:
  """``state`` with the step and weights of the checkpoint config.eval.checkpoint
  chooses (checkpoints.load_for_use), and which one it is, for results.json."""
  saved = checkpoints.load_for_use(run.workdir, run.config.eval.get('checkpoint', 'best'))
  checkpoints.check_shapes({'params': state.params, 'batch_stats': state.batch_stats},
                           saved.variables, f'the {saved.description["checkpoint"]} checkpoint '
                           f'in {run.workdir}', run.config, run.workdir)
  weights = run.parallel.replicate({**saved.variables, 'step': np.int32(saved.step)})
  return state.replace(**weights), saved.description


# --------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------
@holds_workdir('training')
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains (resuming if the workdir has a checkpoint), then evaluates on test."""
  # ---------------------------------------------------------------- set-up
  run = setup.build_run(config, workdir)
  plan = setup.plan_steps(config, run.info)
  options = TrainOptions.from_config(config)  # bad settings fail before any work
  selection.check(config)
  warning = setup.short_schedule_warning(config, plan, run.info.split_sizes['train'])
  if warning:
    log(warning)
  state = run.fresh_state(state_lib.make_optimizer(config, plan.total_steps))
  mgr = checkpoints.manager(run.workdir)
  try:  # closed on every exit: a pending async save finishes first
    # ------------------------------------------------------- load checkpoint
    state, progress = _resume(run, mgr, state)
    # ----------------------------------------------------------------- train
    eval_fn = run.parallel.jit_eval_step(config.multilabel)
    state, progress = _train(run, plan, mgr, state, progress, eval_fn, options)
    # -------------------------------------------------------------- evaluate
    state, chosen = _state_to_evaluate(run, state)
    return _evaluate(run, state, eval_fn, progress.history, chosen)
  finally:
    mgr.close()


def _resume(run: Run, mgr: ocp.CheckpointManager, state: TrainState
            ) -> tuple[TrainState, Progress]:
  """The latest checkpoint, else the fresh state (with config.init_from's
  weights); then the run's config is recorded."""
  progress = Progress()
  restored = checkpoints.restore(mgr, state, run.config)
  if restored is not None:
    state, meta = restored
    state, progress = run.parallel.replicate(state), Progress.from_meta(meta)
    log(f'Resuming from {mgr.directory}/{int(state.step)}: epoch {progress.epoch + 1}, '
        f'batch {progress.batch_in_epoch}')
  elif run.config.get('init_from'):
    state, notes = run.from_pretrained(state)
    for note in notes:
      log(f'init_from: {note}')
  if jax.process_index() == 0:  # only now: a refused resume leaves the workdir as it was
    files.save_config(run.workdir, run.config)
    files.save_data_info(run.workdir, run.info.to_json())
  return state, progress


def _train(run: Run, plan: StepPlan, mgr: ocp.CheckpointManager, state: TrainState,
           progress: Progress, eval_fn: Callable, options: TrainOptions
           ) -> tuple[TrainState, Progress]:
  """The epochs left to train: train, validate, checkpoint, log; stops early
  when config.train.early_stopping_patience says so."""
  config = run.config
  train_labels = run.train_labels()
  weights = run.parallel.replicate(jnp.asarray(
      class_weights_for(config, train_labels, len(run.info.class_names))))
  train_fn = run.parallel.jit_train_step(config.multilabel, options)
  writers = MetricWriters(run.workdir)
  writers.rewrite_jsonl(progress.history)
  first = progress.epoch
  epochs = range(0) if progress.stopped_early else range(first, plan.num_epochs)
  try:
    with StopRequest() as stop:
      for epoch in epochs:
        resumed = progress if epoch == first and progress.batch_in_epoch else None
        state, sums = _train_epoch(run, plan, mgr, state, epoch, resumed, train_fn, weights,
                                   train_labels, stop, progress)
        state, progress = _end_epoch(run, plan, mgr, state, progress, epoch, sums, eval_fn)
        writers.epoch(progress.history)
        if stop.should_stop():  # asked during validation or the save
          raise Interrupted(f'{stop.signal_name or "stopped"}: saved step {int(state.step)} (end '
                            f'of epoch {epoch + 1}) in {mgr.directory}; rerun the same command '
                            'to resume')
        if progress.stopped_early:
          break
  finally:
    writers.close()
  return state, progress


def _end_epoch(run: Run, plan: StepPlan, mgr: ocp.CheckpointManager, state: TrainState,
               progress: Progress, epoch: int, sums: EpochSums, eval_fn: Callable
               ) -> tuple[TrainState, Progress]:
  """Validation, the epoch's row, the best and latest checkpoints, the log line."""
  config = run.config
  if config.eval.get('recompute_bn'):
    state = bn_stats.recompute(run, plan, state)
  val = report.split_metrics(predict_split(run, state, 'validation', eval_fn), run.info,
                             config, ancestors=run.label_ancestors)
  lr_fn, beta1_fn = state_lib.schedules(config, plan.total_steps)
  updates = int(state.step) // plan.accum
  row = {'epoch': epoch + 1, 'step': updates, 'train_loss': sums.loss,
         'train_accuracy': sums.accuracy, 'val_loss': val['loss'], 'val_accuracy': val['top1'],
         'learning_rate': float(lr_fn(updates - 1)), 'beta1': float(beta1_fn(updates - 1))}
  history = [*progress.history, row]
  metric, patience = selection.check(config)
  best, note = progress.best, ''
  if metric and selection.improves(row, best, metric):
    best, note = selection.summary(row), f' | new best {metric}'
    # Saved before the latest: a kill in between redoes this epoch, and saves the same best.
    _save_best(run, state, Progress(epoch + 1, 0, history, {}, best))
  stopped = metric != '' and selection.patience_exhausted(epoch + 1, best, patience)
  progress = Progress(epoch + 1, 0, history, {}, best, stopped)
  checkpoints.save(mgr, int(state.step), state, progress.to_meta())
  log(f'epoch {epoch + 1}: train loss {sums.loss:.4f} acc {sums.accuracy:.4f} | '
      f'val loss {val["loss"]:.4f} acc {val["top1"]:.4f}{note}')
  if stopped:
    log(f'early stop: no better {metric} for {patience} epochs; the best is epoch '
        f'{best["epoch"]} ({metric} {best[metric]:.4f})')
  return state, progress


def _save_best(run: Run, state: TrainState, progress: Progress) -> None:
  mgr = checkpoints.best_manager(run.workdir)
  try:
    checkpoints.save(mgr, int(state.step), state, progress.to_meta())
  finally:
    mgr.close()


def _train_epoch(run: Run, plan: StepPlan, mgr: ocp.CheckpointManager, state: TrainState,
                 epoch: int, resumed: Progress | None, train_fn: Callable, weights: jax.Array,
                 train_labels: np.ndarray, stop: StopRequest, progress: Progress
                 ) -> tuple[TrainState, EpochSums]:
  """One epoch's batches, from where a resumed run stopped; saves and raises
  Interrupted at a step boundary when asked to stop."""
  config = run.config
  start_batch = resumed.batch_in_epoch if resumed else 0
  sums = EpochSums(**resumed.partial) if resumed else EpochSums()
  order = pipeline.epoch_order(train_labels, config.seed, epoch, config.train.sampling)
  batches = pipeline.train_batches(run.reader('train'),
                                   order[:plan.steps_per_epoch * plan.global_batch],
                                   plan.micro_batch, start_batch)
  bar = tqdm(total=plan.micro_steps_per_epoch, initial=start_batch,
             desc=f'epoch {epoch + 1}/{plan.num_epochs}', disable=jax.process_index() != 0,
             dynamic_ncols=True, mininterval=1.0)
  tic = time.perf_counter()
  for batch_index, batch in enumerate(batches, start=start_batch + 1):
    state, m = train_fn(state, run.parallel.shard_batch(batch), weights)
    # Blocking on every step: the NaN guard, and forced-CPU-device
    # all-reduces deadlock when many small steps are left in flight.
    loss = float(m['loss'])
    if not math.isfinite(loss):
      raise TrainingDiverged(
          f'loss became {loss} at step {int(state.step)} (epoch {epoch + 1}); lower '
          '--config.train.max_lr or set --config.train.grad_clip_norm=1.0; the last good '
          f'checkpoint is in {mgr.directory}')
    sums.add(loss, float(m['correct']), plan.micro_batch)
    bar.update(1)
    rate = (batch_index - start_batch) * plan.micro_batch / (time.perf_counter() - tic)
    bar.set_postfix(loss=f'{sums.loss:.4f}', clips_s=f'{rate:.1f}', refresh=False)
    if stop.should_stop():
      bar.close()
      checkpoints.save(mgr, int(state.step), state, dataclasses.replace(
          progress, epoch=epoch, batch_in_epoch=batch_index,
          partial=dataclasses.asdict(sums)).to_meta())
      raise Interrupted(f'{stop.signal_name or "stopped"}: saved step {int(state.step)} in '
                        f'{mgr.directory}; rerun the same command to resume')
  bar.close()
  return state, sums


# --------------------------------------------------------------------------
# Evaluation of a finished workdir
# --------------------------------------------------------------------------
def evaluate_only(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """--mode=eval: the best (else latest; config.eval.checkpoint) checkpoint on
  validation and test, with reports; batch-norm statistics recomputed first
  with config.eval.recompute_bn."""
  run = setup.build_run(config, workdir)
  state = run.fresh_state(state_lib.make_optimizer(config, 1))
  state, chosen = _state_to_evaluate(run, state)
  if config.eval.get('recompute_bn'):
    state = bn_stats.recompute(run, setup.plan_steps(config, run.info), state)
    chosen['recomputed_bn'] = True
  history = checkpoints.read_progress(run.workdir).history  # the whole run's, for the curves
  return _evaluate(run, state, run.parallel.jit_eval_step(config.multilabel), history, chosen)
