"""Training and evaluation of a workdir.

``train_and_evaluate(config, workdir)`` is one loop, read top to bottom in
sections like the Flax examples' and big_vision's: set up, load the
checkpoint, then for each epoch its batches, validation and checkpoints; then
evaluation on validation and test. It trains the CRNN with the reference's
recipe (AdamW, one-cycle lr and beta1, last batch dropped), data parallel
over every device; saves every epoch and on Ctrl-C / SIGTERM (at a step
boundary, with the epoch's partial sums) and resumes exactly from the latest
checkpoint. A fresh run may start from another workdir's model
(config.init_from), keep its best epoch beside the latest and stop early
(config.train.best_metric). ``evaluate_only`` is ``--mode=eval``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from typing import Any, Self

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


# --------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------
@holds_workdir('training')
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains (resuming if the workdir has a checkpoint), then evaluates on test."""
  # -------------------------------------------------------------------- set-up
  run = setup.build_run(config, workdir)
  plan = setup.plan_steps(config, run.info)
  options = TrainOptions.from_config(config)  # bad settings fail before any work
  best_metric, patience = selection.check(config)
  warning = setup.short_schedule_warning(config, plan, run.info.split_sizes['train'])
  if warning:
    log(warning)
  state = run.fresh_state(state_lib.make_optimizer(config, plan.total_steps))
  mgr = checkpoints.manager(run.workdir)
  try:  # closed on every exit: a pending save finishes first
    # ------------------------------------------------------- load checkpoint
    state, progress = _resume(run, mgr, state)
    # ------------------------------------------------------------ the steps
    train_step = run.parallel.jit_train_step(config.multilabel, options)
    eval_step = run.parallel.jit_eval_step(config.multilabel)
    train_labels = run.train_labels()
    weights = run.parallel.replicate(jnp.asarray(
        class_weights_for(config, train_labels, len(run.info.class_names))))
    # ------------------------------------------------------------------ loop
    with StopRequest() as stop, MetricWriters(run.workdir) as writers:
      writers.rewrite_jsonl(progress.history)
      for epoch in range(progress.epoch, plan.num_epochs):
        if progress.stopped_early:
          break
        # Batches, from where a resumed run stopped.
        order = pipeline.epoch_order(train_labels, config.seed, epoch, config.train.sampling)
        batches = pipeline.train_batches(run.reader('train'), order[:plan.epoch_clips],
                                         plan.micro_batch, progress.batch_in_epoch)
        with EpochMeter(config, plan, epoch, progress, mgr.directory) as meter:
          for batch in batches:
            state, metrics = train_step(state, run.parallel.shard_batch(batch), weights)
            read = meter.add(metrics)  # read back every config.log_every_steps
            if stop.should_stop(collective=read):  # once the step in flight is done
              meter.read()
              checkpoints.save(mgr, int(state.step), state, dataclasses.replace(
                  progress, batch_in_epoch=meter.batch, partial=dataclasses.asdict(meter.sums)).to_meta())
              raise Interrupted(f'{stop.signal_name or "stopped"}: saved step {int(state.step)} '
                                f'in {mgr.directory}; rerun the same command to resume')
          sums = meter.read()
        # Validation.
        if config.eval.get('recompute_bn'):
          state = bn_stats.recompute(run, plan, state)
        val = report.split_metrics(predict_split(run, state, 'validation', eval_step), run.info,
                                   config, ancestors=run.label_ancestors)
        row = _epoch_row(config, plan, state, epoch, sums, val)
        # Checkpoints: the best where it improved, then the latest.
        history, best, note = [*progress.history, row], progress.best, ''
        if best_metric and selection.improves(row, best, best_metric):
          best, note = selection.summary(row), f' | new best {best_metric}'
          # Saved before the latest: a kill in between redoes this epoch, and saves the same best.
          _save_best(run.workdir, state, Progress(epoch + 1, 0, history, {}, best))
        stopped = bool(best_metric) and selection.patience_exhausted(epoch + 1, best, patience)
        progress = Progress(epoch + 1, 0, history, {}, best, stopped)
        checkpoints.save(mgr, int(state.step), state, progress.to_meta())
        writers.epoch(progress.history)
        log(f'epoch {epoch + 1}: train loss {sums.loss:.4f} acc {sums.accuracy:.4f} | '
            f'val loss {val["loss"]:.4f} acc {val["top1"]:.4f}{note}')
        if stopped:
          log(f'early stop: no better {best_metric} for {patience} epochs; the best is epoch '
              f'{best["epoch"]} ({best_metric} {best[best_metric]:.4f})')
        if stop.should_stop():  # asked during validation or the saves
          raise Interrupted(f'{stop.signal_name or "stopped"}: saved step {int(state.step)} (end '
                            f'of epoch {epoch + 1}) in {mgr.directory}; rerun the same command '
                            'to resume')
    # -------------------------------------------------------------- evaluate
    state, chosen = _state_to_evaluate(run, state)
    return _evaluate(run, state, eval_step, progress.history, chosen)
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


class EpochMeter:
  """An epoch's loss and accuracy read back from the device, its progress bar
  and the NaN guard.

  Each step's metrics stay on the device until ``read``: every
  config.log_every_steps steps, at the epoch's end and before a save. One
  transfer serves many steps, so the host does not wait for the step it just
  dispatched and a GPU's steps queue up (JAX's asynchronous dispatch). The NaN
  guard checks what is read, so a diverged run stops at most that many steps
  late, naming the step whose loss first was not finite.
  """

  def __init__(self, config: ml_collections.ConfigDict, plan: StepPlan, epoch: int,
               progress: Progress, checkpoint_dir: Any):
    self.batch = progress.batch_in_epoch  # batches of this epoch done
    self.sums = EpochSums(**progress.partial)
    self._epoch, self._clips, self._checkpoint_dir = epoch, plan.micro_batch, checkpoint_dir
    self._first_step = epoch * plan.micro_steps_per_epoch  # state.step when the epoch began
    self._every = max(int(config.log_every_steps), 1)
    self._pending: list[Mapping[str, jax.Array]] = []
    self._on_cpu = jax.default_backend() == 'cpu'  # asked once, not every step
    self._start, self._tic = self.batch, time.perf_counter()
    self._bar = tqdm(total=plan.micro_steps_per_epoch, initial=self.batch,
                     desc=f'epoch {epoch + 1}/{plan.num_epochs}',
                     disable=jax.process_index() != 0, dynamic_ncols=True, mininterval=1.0)

  def __enter__(self) -> Self:
    return self

  def __exit__(self, *exc: object) -> None:
    self._bar.close()

  def add(self, metrics: Mapping[str, jax.Array]) -> bool:
    """One step's metrics (on the device); reads them back, and returns True,
    every config.log_every_steps steps of the epoch."""
    _bound_steps_in_flight(self._pending, self._on_cpu)
    self._pending.append(metrics)
    self.batch += 1
    self._bar.update(1)
    if self.batch % self._every:
      return False
    self.read()
    return True

  def read(self) -> EpochSums:
    """The sums with every step so far: one transfer from the device, then the NaN guard."""
    first = self._first_step + self.batch - len(self._pending)
    for i, m in enumerate(jax.device_get(self._pending)):
      loss = float(m['loss'])
      if not math.isfinite(loss):
        raise TrainingDiverged(
            f'loss became {loss} at step {first + i + 1} (epoch {self._epoch + 1}); lower '
            '--config.train.max_lr or set --config.train.grad_clip_norm=1.0; the last good '
            f'checkpoint is in {self._checkpoint_dir}')
      self.sums.add(loss, float(m['correct']), self._clips)
    self._pending.clear()
    rate = (self.batch - self._start) * self._clips / (time.perf_counter() - self._tic)
    self._bar.set_postfix(loss=f'{self.sums.loss:.4f}', clips_s=f'{rate:.1f}', refresh=False)
    return self.sums


def _bound_steps_in_flight(pending: list[Mapping[str, jax.Array]], on_cpu: bool) -> None:
  """On a CPU backend (``on_cpu``), waits for the step before the one just dispatched: at
  most two steps in flight there.

  A CPU's steps and the loader share the cores: unbounded, the host runs up to
  log_every_steps steps ahead, each holding its batch (a 64-clip batch of 30-s
  spectrograms is 10.6 MB), and loading competes with the steps it feeds.
  Forced CPU devices (--xla_force_host_platform_device_count) may also deadlock
  in their all-reduces with many steps in flight. The device still never waits
  for the host: while one step runs, the host reads, shards and dispatches the
  next. On a GPU or TPU nothing waits between reads (asynchronous dispatch).
  """
  if on_cpu and pending:
    jax.block_until_ready(pending[-1])


def _epoch_row(config: ml_collections.ConfigDict, plan: StepPlan, state: TrainState,
               epoch: int, sums: EpochSums, val: Mapping[str, Any]) -> dict[str, Any]:
  """The epoch's line of the history (metrics.jsonl, the checkpoints' meta)."""
  lr_fn, beta1_fn = state_lib.schedules(config, plan.total_steps)
  updates = int(state.step) // plan.accum
  return {'epoch': epoch + 1, 'step': updates, 'train_loss': sums.loss,
          'train_accuracy': sums.accuracy, 'val_loss': val['loss'], 'val_accuracy': val['top1'],
          'learning_rate': float(lr_fn(updates - 1)), 'beta1': float(beta1_fn(updates - 1))}


def _save_best(workdir: str, state: TrainState, progress: Progress) -> None:
  mgr = checkpoints.best_manager(workdir)
  try:
    checkpoints.save(mgr, int(state.step), state, progress.to_meta())
  finally:
    mgr.close()


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


# --------------------------------------------------------------------------
# Evaluation
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


def _state_to_evaluate(run: Run, state: TrainState) -> tuple[TrainState, dict[str, Any]]:
  """``state`` with the step and weights of the checkpoint config.eval.checkpoint
  chooses (checkpoints.load_for_use), and which one it is, for results.json."""
  saved = checkpoints.load_for_use(run.workdir, run.config.eval.get('checkpoint', 'best'))
  checkpoints.check_shapes({'params': state.params, 'batch_stats': state.batch_stats},
                           saved.variables, f'the {saved.description["checkpoint"]} checkpoint '
                           f'in {run.workdir}', run.config, run.workdir)
  weights = run.parallel.replicate({**saved.variables, 'step': np.int32(saved.step)})
  return state.replace(**weights), saved.description


def _evaluate(run: Run, state: TrainState, eval_step: Callable,
              history: list[dict[str, Any]], checkpoint: dict[str, Any]) -> dict[str, Any]:
  """Validation and test reports through crnn_jax.evaluate (which never sees the trainer)."""
  schedule, steps_per_epoch = lr_per_step(run.config, history) if history else (None, None)
  return report.evaluate_and_report(
      lambda split: predict_split(run, state, split, eval_step), run.info, run.config,
      run.workdir, num_params=model_lib.count_params(jax.device_get(state.params)),
      step=int(state.step), history=history, lr_schedule=schedule,
      steps_per_epoch=steps_per_epoch, ancestors=run.label_ancestors, checkpoint=checkpoint)


def predict_split(run: Run, state: TrainState, split: str, eval_step: Callable
                  ) -> dict[str, np.ndarray]:
  """Logits, losses, labels, label sets and track ids of every example of a split."""
  outs: dict[str, list[np.ndarray]] = {'logits': [], 'loss': [], 'label': [], 'label_set': [],
                                       'mask': []}
  for batch in pipeline.eval_batches(run.reader(split), run.config.train.eval_batch_size):
    out = jax.device_get(eval_step(state, run.parallel.shard_batch(batch)))
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
