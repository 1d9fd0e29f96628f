"""Training and evaluation: one readable loop, config-driven.

``train_and_evaluate(config, workdir)`` trains the CRNN with the reference's
recipe (AdamW, one-cycle lr and beta1, batch 64, last batch dropped), data
parallel over every device (a ``Mesh`` with the batch sharded on 'data' and
parameters replicated), checkpoints every epoch and on Ctrl-C / SIGTERM,
resumes exactly from the latest checkpoint, and evaluates on the test split.
"""

from __future__ import annotations

import functools
import math
import os
import signal
import time
from collections.abc import Callable, Mapping
from typing import Any, Self

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from crnn_jax import checkpoints, input_pipeline, models
from crnn_jax.errors import UserError
from crnn_jax.input_pipeline import DataInfo

Batch = Mapping[str, Any]


class TrainState(train_state.TrainState):
  batch_stats: Any


class TrainingDiverged(UserError):
  """The loss became NaN or infinite."""


class Interrupted(Exception):
  """Ctrl-C or SIGTERM: the state was saved; rerunning resumes."""


# --------------------------------------------------------------------------
# Model, schedules, optimiser, state
# --------------------------------------------------------------------------
def compute_dtype(config: ml_collections.ConfigDict) -> Any:
  try:
    return {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}[config.train.dtype]
  except KeyError:
    raise UserError(f"config.train.dtype {config.train.dtype!r}: use 'float32' or 'bfloat16'"
                    ) from None


def create_model(config: ml_collections.ConfigDict, info: DataInfo) -> models.CRNN:
  return models.create_model(config.model, len(info.class_names), info.num_tabular,
                             dtype=compute_dtype(config))


def schedules(config: ml_collections.ConfigDict, total_steps: int
              ) -> tuple[optax.Schedule, optax.Schedule]:
  """fastai v1's one-cycle: lr max/25 -> max (cosine, first 30%) -> max/250,000,
  and beta1 0.95 -> 0.85 -> 0.95 on the same shape (SPEC.md section 5)."""
  t = config.train
  total_steps = max(int(total_steps), 1)
  lr = optax.cosine_onecycle_schedule(
      transition_steps=total_steps, peak_value=t.max_lr, pct_start=t.pct_start,
      div_factor=t.div_factor, final_div_factor=t.final_div_factor)
  warmup_end = int(t.pct_start * total_steps)
  beta1 = optax.piecewise_interpolate_schedule(
      'cosine', init_value=t.beta1_max,
      boundaries_and_scales={warmup_end: t.beta1_min / t.beta1_max,
                             total_steps: t.beta1_max / t.beta1_min})
  return lr, beta1


def make_optimizer(config: ml_collections.ConfigDict, total_steps: int
                   ) -> optax.GradientTransformation:
  """AdamW with decoupled weight decay on every parameter, as fastai applied it."""
  t = config.train
  lr, beta1 = schedules(config, total_steps)
  adamw = optax.inject_hyperparams(optax.adamw)(
      learning_rate=lr, b1=beta1, b2=t.beta2, eps=t.eps, weight_decay=t.weight_decay)
  tx = adamw
  if t.grad_clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(t.grad_clip_norm), adamw)
  accum = int(t.get('grad_accum_steps', 1))
  if accum > 1:  # total_steps counts optimiser updates, not micro-batches
    tx = optax.MultiSteps(tx, every_k_schedule=accum)
  return tx


def dummy_inputs(info: DataInfo, batch: int = 1) -> tuple[jax.Array, jax.Array | None]:
  frames = info.frames or 1292
  spec = jnp.zeros((batch, 128, frames, 1), jnp.float32)
  tab = jnp.zeros((batch, info.num_tabular), jnp.float32) if info.num_tabular else None
  return spec, tab


def create_train_state(config: ml_collections.ConfigDict, info: DataInfo, rng: jax.Array,
                       steps_per_epoch: int) -> TrainState:
  """A fresh state; steps_per_epoch counts optimiser updates (global batches)."""
  model = create_model(config, info)
  spec, tab = dummy_inputs(info)
  variables = jax.jit(functools.partial(model.init, train=False))(rng, spec, tab)
  tx = make_optimizer(config, steps_per_epoch * config.train.num_epochs)
  return TrainState.create(apply_fn=model.apply, params=variables['params'],
                           batch_stats=variables.get('batch_stats', {}), tx=tx)


def abstract_train_state(config: ml_collections.ConfigDict, info: DataInfo,
                         steps_per_epoch: int = 1) -> TrainState:
  """Shapes and dtypes of a fresh state, on the default device, without
  compiling the model's init: a restore target for loading finished weights."""
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  shapes = jax.eval_shape(lambda: create_train_state(config, info, jax.random.key(config.seed),
                                                     steps_per_epoch))
  return jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), shapes)


def state_from_variables(config: ml_collections.ConfigDict, info: DataInfo,
                         variables: Mapping[str, Any], steps_per_epoch: int = 1) -> TrainState:
  """A train state around given weights, with a fresh optimiser."""
  tx = make_optimizer(config, steps_per_epoch * config.train.num_epochs)
  return TrainState.create(apply_fn=create_model(config, info).apply,
                           params=variables['params'], batch_stats=variables['batch_stats'], tx=tx)


# --------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------
def model_inputs(batch: Batch) -> tuple[jax.Array, jax.Array | None]:
  """uint8 spectrogram images -> [0, 1] floats on the device (4x less to copy)."""
  spec = batch['spectrogram'].astype(jnp.float32)[..., None] / 255.0
  tab = batch['tabular'] if batch['tabular'].shape[-1] else None
  return spec, tab


def per_example_loss(logits: jax.Array, batch: Batch, multilabel: bool) -> jax.Array:
  if multilabel:
    return optax.sigmoid_binary_cross_entropy(logits, batch['label_set']).mean(axis=-1)
  return optax.softmax_cross_entropy_with_integer_labels(logits, batch['label'])


def train_step(state: TrainState, batch: Batch, class_weights: jax.Array, multilabel: bool
               ) -> tuple[TrainState, dict[str, jax.Array]]:
  spec, tab = model_inputs(batch)

  def loss_fn(params):
    logits, updates = state.apply_fn({'params': params, 'batch_stats': state.batch_stats},
                                     spec, tab, train=True, mutable=['batch_stats'])
    losses = per_example_loss(logits, batch, multilabel)
    if multilabel:
      loss = losses.mean()
    else:  # torch's weighted cross entropy: sum(w_y * l) / sum(w_y)
      w = class_weights[batch['label']]
      loss = (w * losses).sum() / w.sum()
    return loss, (logits, updates['batch_stats'])

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  if multilabel:
    correct = batch['label_set'][jnp.arange(logits.shape[0]), logits.argmax(-1)].sum()
  else:
    correct = (logits.argmax(-1) == batch['label']).sum()
  return state, {'loss': loss, 'correct': correct}


def eval_step(state: TrainState, batch: Batch, multilabel: bool) -> dict[str, jax.Array]:
  spec, tab = model_inputs(batch)
  logits = state.apply_fn({'params': state.params, 'batch_stats': state.batch_stats},
                          spec, tab, train=False)
  # Labels and mask come back with the logits: with several processes each
  # host fed only its slice, and the replicated outputs are the whole batch.
  return {'logits': logits, 'loss': per_example_loss(logits, batch, multilabel),
          'label': batch['label'], 'label_set': batch['label_set'], 'mask': batch['mask']}


# --------------------------------------------------------------------------
# Devices
# --------------------------------------------------------------------------
class Parallel:
  """Data parallelism with jax.sharding: batch split on 'data', state replicated."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.mesh = Mesh(np.asarray(jax.devices()), ('data',))
    self.replicated = NamedSharding(self.mesh, P())
    self.data = NamedSharding(self.mesh, P('data'))
    n = jax.device_count()
    accum = int(config.train.get('grad_accum_steps', 1))
    sizes = {'batch_size / grad_accum_steps': config.train.batch_size // max(accum, 1),
             'eval_batch_size': config.train.eval_batch_size}
    for field, size in sizes.items():
      if size % n:
        raise UserError(f'config.train.{field} = {size} is not divisible by the {n} devices; '
                        f'choose a multiple of {n}')

  def shard_batch(self, local_batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
    return {k: jax.make_array_from_process_local_data(self.data, np.asarray(v))
            for k, v in local_batch.items()}

  def replicate(self, tree: Any) -> Any:
    return jax.device_put(tree, self.replicated)

  def jit_train_step(self, multilabel: bool) -> Callable:
    return jax.jit(functools.partial(train_step, multilabel=multilabel),
                   in_shardings=(self.replicated, self.data, self.replicated),
                   out_shardings=(self.replicated, self.replicated), donate_argnums=0)

  def jit_eval_step(self, multilabel: bool) -> Callable:
    return jax.jit(functools.partial(eval_step, multilabel=multilabel),
                   in_shardings=(self.replicated, self.data), out_shardings=self.replicated)


# --------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------
def predict_split(state: TrainState, source: Any, info: DataInfo, parallel: Parallel,
                  eval_fn: Callable, config: ml_collections.ConfigDict
                  ) -> dict[str, np.ndarray]:
  """Logits, losses, labels and label sets of every example of a split."""
  from crnn_jax import evaluate  # pylint: disable=import-outside-toplevel
  outs: dict[str, list[np.ndarray]] = {'logits': [], 'loss': [], 'label': [], 'label_set': [],
                                       'mask': []}
  anc = evaluate.ancestors(config, info) if config.multilabel else None
  for batch in input_pipeline.eval_batches(
      source, info, config.train.eval_batch_size, config, jax.process_index(),
      jax.process_count(), None if anc is None else anc.astype(np.float32)):
    out = jax.device_get(eval_fn(state, parallel.shard_batch(batch)))
    for k, v in outs.items():
      v.append(np.asarray(out[k]))
  joined = {k: np.concatenate(v) for k, v in outs.items()}
  keep = joined.pop('mask') > 0
  return {k: v[keep] for k, v in joined.items()}


def summarize(pred: Mapping[str, np.ndarray], info: DataInfo, config: ml_collections.ConfigDict
              ) -> dict[str, Any]:
  """The headline numbers of a split (full reports: crnn_jax.evaluate)."""
  from crnn_jax import evaluate  # pylint: disable=import-outside-toplevel
  return evaluate.split_metrics(pred, info, config)


# --------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------
def class_weights_for(config: ml_collections.ConfigDict, train_labels: np.ndarray,
                      num_classes: int) -> np.ndarray:
  """'none' (reference) or 'inverse_frequency': w_c = n / (C * n_c), mean 1."""
  mode = config.train.get('class_weighting', 'none')
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


def log(message: str) -> None:
  """Progress for people: printed by process 0 only."""
  if jax.process_index() == 0:
    print(message, flush=True)


class StopRequest:
  """Ctrl-C and SIGTERM ask the loop to stop at the next step boundary.

  A handler that raised would land anywhere: inside a step whose donated
  input is already gone, between a step and its bookkeeping (a resume would
  replay that batch), or in a save. So the handlers only set a flag, and the
  loop saves and stops where state and position agree. A second Ctrl-C stops
  at once, without saving.
  """

  def __init__(self):
    self.signal_name: str | None = None
    self._old: dict[int, Any] = {}

  def __enter__(self) -> Self:
    for sig in (signal.SIGINT, signal.SIGTERM):
      self._old[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._old.items():
      signal.signal(sig, handler)

  def _handle(self, signum, frame) -> None:
    del frame
    if self.signal_name is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.signal_name = signal.Signals(signum).name
    log(f'\n{self.signal_name}: stopping after this step (again to stop without saving)')

  def should_stop(self) -> bool:
    """Whether any process was asked: all of them then save at the same step."""
    asked = self.signal_name is not None
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
      asked = bool(np.any(multihost_utils.process_allgather(np.int32(asked))))
    return asked


class _MetricWriters:
  """TensorBoard event files and metrics.jsonl; only process 0 writes."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.enabled = jax.process_index() == 0
    self._tb = None
    if self.enabled:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))

  def epoch(self, history: list[dict[str, Any]]) -> None:
    if not self.enabled:
      return
    row = history[-1]
    for key, value in row.items():
      if isinstance(value, (int, float)) and key not in ('epoch', 'step'):
        self._tb.add_scalar(key, value, row['step'])
    self._tb.flush()
    self.rewrite_jsonl(history)

  def rewrite_jsonl(self, history: list[dict[str, Any]]) -> None:
    """metrics.jsonl from the checkpointed history: a resumed run never
    duplicates or loses a line, even one lost to a kill after a save."""
    if not self.enabled:
      return
    import json  # pylint: disable=import-outside-toplevel
    tmp = os.path.join(self.workdir, 'metrics.jsonl.tmp')
    with open(tmp, 'w') as f:
      f.writelines(json.dumps(r, sort_keys=True) + '\n' for r in history)
    os.replace(tmp, os.path.join(self.workdir, 'metrics.jsonl'))

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains (resuming if the workdir has a checkpoint), then evaluates on test."""
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel

  from crnn_jax import evaluate  # pylint: disable=import-outside-toplevel

  workdir = checkpoints.ensure_workdir(workdir)
  info = input_pipeline.load_info(config)
  sources = input_pipeline.open_sources(config)
  parallel = Parallel(config)
  t = config.train
  global_batch = t.batch_size
  accum = int(t.get('grad_accum_steps', 1))
  if accum < 1 or global_batch % accum:
    raise UserError(f'config.train.grad_accum_steps={accum} must be >= 1 and divide '
                    f'config.train.batch_size={global_batch}')
  micro_batch = global_batch // accum  # what one forward/backward pass sees
  steps_per_epoch = info.split_sizes['train'] // global_batch  # optimiser updates
  if steps_per_epoch == 0:
    raise UserError(f'the train split has {info.split_sizes["train"]} examples, fewer than one '
                    f'batch of {global_batch}; lower --config.train.batch_size')
  micro_steps = steps_per_epoch * accum
  total_steps = steps_per_epoch * t.num_epochs

  state = create_train_state(config, info, jax.random.key(config.seed), steps_per_epoch)
  state = parallel.replicate(state)
  mgr = checkpoints.manager(workdir)
  try:  # closed on every exit: a pending async save finishes first
    meta: dict[str, Any] = {'epoch': 0, 'batch_in_epoch': 0, 'history': [], 'partial': {}}
    restored = checkpoints.restore(mgr, state)
    if restored is not None:
      state, meta = restored
      state = parallel.replicate(state)
      log(f'Resuming from {mgr.directory}/{int(state.step)}: epoch {meta["epoch"] + 1}, '
          f'batch {meta["batch_in_epoch"]}')
    if jax.process_index() == 0:  # only now: a refused resume leaves the workdir as it was
      checkpoints.save_config(workdir, config)
      checkpoints.save_data_info(workdir, info.to_json())

    train_labels = input_pipeline.train_labels(config)
    anc = evaluate.ancestors(config, info) if config.multilabel else None
    label_ancestors = None if anc is None else anc.astype(np.float32)
    weights = parallel.replicate(jnp.asarray(
        class_weights_for(config, train_labels, len(info.class_names))))
    lr_fn, beta1_fn = schedules(config, total_steps)
    train_fn = parallel.jit_train_step(config.multilabel)
    eval_fn = parallel.jit_eval_step(config.multilabel)
    writers = _MetricWriters(workdir)
    history: list[dict[str, Any]] = list(meta['history'])
    writers.rewrite_jsonl(history)
    sampling = t.get('sampling', 'shuffle')

    try:
      with StopRequest() as stop:
        for epoch in range(int(meta['epoch']), t.num_epochs):
          start_batch = int(meta['batch_in_epoch']) if epoch == meta['epoch'] else 0
          partial = dict(meta.get('partial') or {}) if start_batch else {}
          loss_sum = float(partial.get('loss_sum', 0.0))
          correct = float(partial.get('correct', 0.0))
          seen = int(partial.get('seen', 0))
          order = input_pipeline.epoch_order(train_labels, config.seed, epoch, sampling)
          order = order[:steps_per_epoch * global_batch]  # whole global batches only
          batches = input_pipeline.train_batches(
              sources['train'], order, info, micro_batch, start_batch, config,
              jax.process_index(), jax.process_count(), label_ancestors)
          bar = tqdm(total=micro_steps, initial=start_batch, desc=f'epoch {epoch + 1}/{t.num_epochs}',
                     disable=jax.process_index() != 0, dynamic_ncols=True, mininterval=1.0)
          batch_index = start_batch
          tic = time.perf_counter()
          for batch in batches:
            state, m = train_fn(state, parallel.shard_batch(batch), weights)
            # Blocking on every step: NaN guard, and forced-CPU-device
            # all-reduces deadlock when many small steps are left in flight.
            loss = float(m['loss'])
            if not math.isfinite(loss):
              raise TrainingDiverged(
                  f'loss became {loss} at step {int(state.step)} (epoch {epoch + 1}); lower '
                  '--config.train.max_lr or set --config.train.grad_clip_norm=1.0; the last good '
                  f'checkpoint is in {mgr.directory}')
            loss_sum += loss * micro_batch
            correct += float(m['correct'])
            seen += micro_batch
            batch_index += 1
            bar.update(1)
            rate = (batch_index - start_batch) * micro_batch / (time.perf_counter() - tic)
            bar.set_postfix(loss=f'{loss_sum / seen:.4f}', clips_s=f'{rate:.1f}', refresh=False)
            if stop.should_stop():
              bar.close()
              checkpoints.save(mgr, int(state.step), state, {
                  'epoch': epoch, 'batch_in_epoch': batch_index, 'history': history,
                  'partial': {'loss_sum': loss_sum, 'correct': correct, 'seen': seen}})
              raise Interrupted(f'{stop.signal_name or "stopped"}: saved step {int(state.step)} in '
                                f'{mgr.directory}; rerun the same command to resume')
          bar.close()
          val = evaluate.split_metrics(
              predict_split(state, sources['validation'], info, parallel, eval_fn, config),
              info, config)
          step = int(state.step)
          updates = step // accum
          history.append({
              'epoch': epoch + 1, 'step': updates,
              'train_loss': loss_sum / max(seen, 1), 'train_accuracy': correct / max(seen, 1),
              'val_loss': val['loss'], 'val_accuracy': val['top1'],
              'learning_rate': float(lr_fn(updates - 1)), 'beta1': float(beta1_fn(updates - 1)),
          })
          checkpoints.save(mgr, step, state, {'epoch': epoch + 1, 'batch_in_epoch': 0,
                                              'history': history, 'partial': {}})
          writers.epoch(history)
          log(f'epoch {epoch + 1}: train loss {history[-1]["train_loss"]:.4f} '
              f'acc {history[-1]["train_accuracy"]:.4f} | val loss {val["loss"]:.4f} '
              f'acc {val["top1"]:.4f}')
          if stop.should_stop():  # asked during validation or the save
            raise Interrupted(f'{stop.signal_name or "stopped"}: saved step {step} (end of epoch '
                              f'{epoch + 1}) in {mgr.directory}; rerun the same command to resume')
    finally:
      writers.close()

    results = evaluate.evaluate_and_report(state, sources, info, parallel, eval_fn, config, workdir,
                                           history)
  finally:
    mgr.close()
  return results


def evaluate_only(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """--mode=eval: the latest checkpoint on validation and test, with reports."""
  from crnn_jax import evaluate  # pylint: disable=import-outside-toplevel
  workdir = checkpoints.ensure_workdir(workdir)
  info = input_pipeline.load_info(config)
  sources = input_pipeline.open_sources(config)
  parallel = Parallel(config)
  state = parallel.replicate(create_train_state(config, info, jax.random.key(config.seed), 1))
  mgr = checkpoints.manager(workdir)
  restored = checkpoints.restore(mgr, state)
  mgr.close()
  if restored is None:
    raise UserError(f'no checkpoint in {workdir!r}: train first (main.py without --mode) '
                    'or import a reference model')
  state, meta = restored
  state = parallel.replicate(state)
  return evaluate.evaluate_and_report(state, sources, info, parallel,
                                      parallel.jit_eval_step(config.multilabel), config, workdir,
                                      list(meta.get('history', [])))


def lr_range_test(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """--mode=lr_find: fastai's learning-rate range test on the train split.

  A fresh model trains one batch per learning rate on an exponential sweep
  (Adam, beta1 0.9 as fastai's default optimiser), stopping when the smoothed
  loss diverges. Writes lr_find.png and lr_find.json; no checkpoint is read
  or written, so it is safe in a training workdir.
  """
  from crnn_jax import lr_find, plots  # pylint: disable=import-outside-toplevel
  workdir = checkpoints.ensure_workdir(workdir)
  info = input_pipeline.load_info(config)
  sources = input_pipeline.open_sources(config)
  parallel = Parallel(config)
  lf = config.get('lr_find', ml_collections.ConfigDict())
  start_lr, end_lr = float(lf.get('start_lr', 1e-7)), float(lf.get('end_lr', 10.0))
  num_it = int(lf.get('num_it', 100))
  t = config.train
  tx = optax.inject_hyperparams(optax.adamw)(learning_rate=start_lr, b1=0.9, b2=t.beta2,
                                             eps=t.eps, weight_decay=t.weight_decay)
  model = create_model(config, info)
  spec, tab = dummy_inputs(info)
  variables = jax.jit(functools.partial(model.init, train=False))(jax.random.key(config.seed),
                                                                  spec, tab)
  state = parallel.replicate(TrainState.create(
      apply_fn=model.apply, params=variables['params'],
      batch_stats=variables.get('batch_stats', {}), tx=tx))
  weights = parallel.replicate(jnp.ones(len(info.class_names)))

  def step_at(state, batch, weights, lr):
    opt_state = state.opt_state
    opt_state = opt_state._replace(hyperparams={**opt_state.hyperparams, 'learning_rate': lr})
    return train_step(state.replace(opt_state=opt_state), batch, weights, config.multilabel)

  step = jax.jit(step_at, donate_argnums=0)
  labels = input_pipeline.train_labels(config)
  finder = lr_find.LRFinderState(start_lr=start_lr, end_lr=end_lr, num_it=num_it)
  epoch = 0
  while not finder.done:
    order = input_pipeline.epoch_order(labels, config.seed, epoch)
    for batch in input_pipeline.train_batches(sources['train'], order, info, t.batch_size, 0,
                                              config, jax.process_index(), jax.process_count()):
      state, m = step(state, parallel.shard_batch(batch), weights, jnp.float32(finder.next_lr()))
      if finder.record(float(m['loss'])):
        break
    epoch += 1
  try:
    suggestion = lr_find.suggest_lr(finder.lrs, finder.smoothed)
  except ValueError as e:
    raise UserError(f'LR range test: {e}; raise --config.lr_find.num_it or the data set size'
                    ) from None
  result = {'suggested_max_lr': suggestion, 'min_loss_lr_div10': lr_find.min_loss_lr(
      finder.lrs, finder.smoothed), 'stop_reason': finder.stop_reason, 'lrs': finder.lrs,
            'smoothed_losses': finder.smoothed, 'losses': finder.losses}
  if jax.process_index() == 0:
    checkpoints.write_json(os.path.join(workdir, 'lr_find.json'), result)
    plots.plot_lr_finder(finder.lrs, finder.smoothed, os.path.join(workdir, 'lr_find.png'),
                         suggested_lr=suggestion, raw_losses=finder.losses,
                         title=f'{info.name}: learning-rate range test')
  log(f'LR range test ({len(finder.lrs)} batches, {finder.stop_reason}): suggested max_lr '
      f'{suggestion:.3g} (set --config.train.max_lr); plot in {workdir}/lr_find.png')
  return result
