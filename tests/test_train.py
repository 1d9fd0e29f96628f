"""Training: schedule, steps, data parallelism, resumption, guards and errors."""

import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import ROOT, tiny_config

from crnn_jax.core import tabular
from crnn_jax.core.errors import UserError
from crnn_jax.data import pipeline, source
from crnn_jax.train import setup, steps
from crnn_jax.train import state as train_state
from crnn_jax.train import trainer as train
from crnn_jax.workdir import checkpoints, files


def _fastai_one_cycle(step, n, max_lr, pct=0.3, div=25.0, final_div=1e4, beta1=(0.95, 0.85)):
  """SPEC.md section 5 written out: cosine warm-up over a1 steps, cosine down."""
  a1 = int(n * pct)
  cos = lambda start, end, p: end + (start - end) / 2 * (math.cos(math.pi * p) + 1)
  high, low = beta1
  if step <= a1:
    return cos(max_lr / div, max_lr, step / a1), cos(high, low, step / a1)
  down = (step - a1) / (n - a1)
  return cos(max_lr, max_lr / div / final_div, down), cos(low, high, down)


def test_schedules_match_spec_at_key_steps():
  config = tiny_config('')
  config.train.max_lr = 1.738e-3
  n = 1000
  lr, beta1 = train_state.schedules(config, n)
  a1 = int(0.3 * n)
  for step in (0, 1, a1 // 2, a1, a1 + 1, 700, n - 1):
    want_lr, want_b1 = _fastai_one_cycle(step, n, 1.738e-3)
    np.testing.assert_allclose(float(lr(step)), want_lr, rtol=1e-5, atol=1e-6 * 1.738e-3)
    np.testing.assert_allclose(float(beta1(step)), want_b1, rtol=1e-6)
  np.testing.assert_allclose(float(lr(0)), 1.738e-3 / 25, rtol=1e-6)
  np.testing.assert_allclose(float(lr(a1)), 1.738e-3, rtol=1e-6)


def test_schedules_follow_every_one_cycle_field():
  """Other values of the recipe's fields than the reference's move the curves as
  fastai's one-cycle says (warm-up share, start and end divisors, beta1's range)."""
  config = tiny_config('')
  t = config.train
  t.max_lr, t.pct_start, t.div_factor, t.final_div_factor = 0.01, 0.5, 10.0, 100.0
  t.beta1_max, t.beta1_min = 0.9, 0.6
  lr, beta1 = train_state.schedules(config, 200)
  for step in (0, 37, 100, 101, 150, 199):
    want_lr, want_b1 = _fastai_one_cycle(step, 200, 0.01, 0.5, 10.0, 100.0, (0.9, 0.6))
    np.testing.assert_allclose(float(lr(step)), want_lr, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(float(beta1(step)), want_b1, rtol=1e-6)


def test_adamw_fields_by_hand():
  """Two updates of make_optimizer against AdamW written out with the config's beta2,
  eps and weight decay (not the reference's) and beta1 from its schedule."""
  config = tiny_config('')
  t = config.train
  t.beta2, t.eps, t.weight_decay, t.max_lr = 0.5, 1e-2, 0.3, 0.1
  tx = train_state.make_optimizer(config, 10)
  params = {'w': jnp.asarray([0.5, -1.0, 2.0])}
  grads = [np.array([0.1, -0.02, 0.3]), np.array([-0.2, 0.05, 0.1])]
  lr, beta1 = train_state.schedules(config, 10)
  state, p, m, v = tx.init(params), np.array([0.5, -1.0, 2.0]), 0.0, 0.0
  for step, g in enumerate(grads):
    updates, state = tx.update({'w': jnp.asarray(g)}, state, params)
    params = optax.apply_updates(params, updates)
    b1 = float(beta1(step))
    m, v = b1 * m + (1 - b1) * g, 0.5 * v + 0.5 * g ** 2
    m_hat, v_hat = m / (1 - b1 ** (step + 1)), v / (1 - 0.5 ** (step + 1))
    p = p - float(lr(step)) * (m_hat / (np.sqrt(v_hat) + 1e-2) + 0.3 * p)
    np.testing.assert_allclose(params['w'], p, rtol=1e-5)


def test_seed_drives_initialisation(tiny_data_dir, tmp_path):
  """config.seed picks the initial weights: the same seed gives the same kernels, another
  seed other kernels (batch norm's scales and biases start at 1 and 0 whatever the seed)."""
  kernels = []
  for seed in (0, 0, 1):
    config = tiny_config(tiny_data_dir)
    config.seed = seed
    run = setup.build_run(config, str(tmp_path / str(seed)))
    params = jax.device_get(run.fresh_state(optax.sgd(0.1)).params)
    kernels.append([x for path, x in jax.tree_util.tree_leaves_with_path(params)
                    if path[-1].key == 'kernel'])
  assert len(kernels[0]) > 5
  assert all(np.array_equal(a, b) for a, b in zip(kernels[0], kernels[1], strict=True))
  assert not any(np.array_equal(a, b) for a, b in zip(kernels[0], kernels[2], strict=True))


def _state_and_batch(data_dir, num_tabular=0, name='tiny'):
  config = tiny_config(data_dir, name)
  info = source.load_info(config)
  sources = source.open_sources(config)
  state = train_state.create_train_state(
      config, info, jax.random.key(0),
      train_state.make_optimizer(config, 10 * config.train.num_epochs))
  order = np.arange(len(sources['train']))
  batch = next(pipeline.train_batches(pipeline.Reader(sources['train'], info, config), order, 16))
  return config, info, state, batch


def test_train_step_lowers_loss_on_a_fixed_batch(tiny_data_dir):
  _config, _info, state, batch = _state_and_batch(tiny_data_dir)
  step = jax.jit(lambda s, b: steps.train_step(s, b, jnp.ones(2), False))
  losses = []
  for _ in range(6):
    state, m = step(state, batch)
    losses.append(float(m['loss']))
  assert losses[-1] < losses[0] * 0.8, losses
  assert int(state.step) == 6


def test_eval_step_is_deterministic_and_uses_running_stats(tiny_data_dir):
  _config, _info, state, batch = _state_and_batch(tiny_data_dir)
  batch = dict(batch, mask=np.ones(16, np.float32))
  ev = jax.jit(lambda s, b: steps.eval_step(s, b, False))
  a, b = ev(state, batch), ev(state, batch)
  np.testing.assert_array_equal(a['logits'], b['logits'])
  # Eval of one example alone equals its row in the batch (no batch statistics).
  single = {k: v[:1] for k, v in batch.items()}
  np.testing.assert_allclose(ev(state, single)['logits'][0], a['logits'][0], rtol=1e-5, atol=1e-5)


def test_tabular_branch_trains(tiny_tabular_data_dir):
  _config, info, state, batch = _state_and_batch(tiny_tabular_data_dir, name='tiny_tab')
  assert info.num_tabular == 4 and batch['tabular'].shape == (16, 4)
  state, m = jax.jit(lambda s, b: steps.train_step(s, b, jnp.ones(2), False))(state, batch)
  assert np.isfinite(float(m['loss']))


def test_tabular_encoding_raw_and_onehot():
  meta = {'tabular_names': ['explicit', 'key', 'tempo'],
          'tabular_categorical': {'explicit': 2, 'key': 12},
          'tabular_mean': [0, 0, 120.0], 'tabular_std': [1, 1, 20.0]}
  raw = np.array([[2, 5, 140.0]])
  np.testing.assert_allclose(tabular.encode(raw, meta, 'raw'), [[2, 5, 20 / (20 + 1e-7)]])
  onehot = tabular.encode(raw, meta, 'onehot')
  assert onehot.shape == (1, 2 + 12 + 1) == (1, tabular.encoded_size(meta, 'onehot'))
  assert onehot[0, 1] == 1 and onehot[0, 2 + 4] == 1 and onehot.sum() == pytest.approx(3.0, 1e-5)


def test_epoch_order_is_seeded_and_balanced_sampling_balances():
  labels = np.array([0] * 90 + [1] * 10)
  a = pipeline.epoch_order(labels, 42, 3)
  np.testing.assert_array_equal(a, pipeline.epoch_order(labels, 42, 3))
  assert not np.array_equal(a, pipeline.epoch_order(labels, 42, 4))
  assert sorted(a) == list(range(100))
  balanced = pipeline.epoch_order(np.tile(labels, 20), 0, 0, 'balanced')
  frac = (np.tile(labels, 20)[balanced] == 1).mean()
  assert 0.45 < frac < 0.55


def test_loader_workers_default_to_none_on_cpu_and_explicit_counts_stay(monkeypatch):
  config = tiny_config('')
  config.data.num_workers = -1
  assert pipeline.num_workers(config) == 0  # this host runs JAX on CPU
  monkeypatch.setattr(pipeline.jax, 'default_backend', lambda: 'gpu')
  monkeypatch.setattr(pipeline.os, 'sched_getaffinity', lambda _: set(range(32)))
  assert pipeline.num_workers(config) == 16
  monkeypatch.setattr(pipeline.os, 'sched_getaffinity', lambda _: {0, 1})
  assert pipeline.num_workers(config) == 1
  config.data.num_workers = 3
  assert pipeline.num_workers(config) == 3


def test_worker_processes_read_the_same_batches_in_the_same_order(tiny_data_dir):
  config = tiny_config(tiny_data_dir)
  config.data.num_workers = 0
  info = source.load_info(config)
  train_source = source.open_sources(config)['train']
  order = pipeline.epoch_order(np.zeros(len(train_source), np.int64), 0, 0)
  reader = pipeline.Reader(train_source, info, config)
  in_process = list(pipeline.train_batches(reader, order, 4, 1))
  config.data.num_workers = 1  # absl flags not parsed here, as in a notebook
  in_worker = list(pipeline.train_batches(reader, order, 4, 1))
  assert len(in_worker) == len(in_process) > 1
  for a, b in zip(in_process, in_worker):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_inverse_frequency_class_weights():
  config = tiny_config('')
  config.train.class_weighting = 'inverse_frequency'
  w = train.class_weights_for(config, np.array([0, 0, 0, 1]), 2)
  np.testing.assert_allclose(w, [4 / 6, 2.0])


MULTI_DEVICE_SCRIPT = r'''
import json, sys
sys.path.insert(0, {tests!r}); sys.path.insert(0, {root!r})
import jax, numpy as np
from conftest import tiny_config
from crnn_jax.data import pipeline, source
from crnn_jax.train import parallel
from crnn_jax.train import state as state_lib
config = tiny_config({data_dir!r})
info = source.load_info(config)
src = source.open_sources(config)
par = parallel.Parallel(config)
state = par.replicate(state_lib.create_train_state(
    config, info, jax.random.key(0), state_lib.make_optimizer(config, 4 * config.train.num_epochs)))
step = par.jit_train_step(False)
w = par.replicate(jax.numpy.ones(2))
losses = []
order = pipeline.epoch_order(source.read_labels(src['train']), 0, 0)
for batch in pipeline.train_batches(pipeline.Reader(src['train'], info, config), order, 16):
  state, m = step(state, par.shard_batch(batch), w)
  losses.append(float(m['loss']))  # block on each step
print(json.dumps({{'devices': jax.device_count(), 'losses': losses}}))
'''


def _run_devices(data_dir, n):
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={n}',
             JAX_PLATFORMS='cpu')
  script = MULTI_DEVICE_SCRIPT.format(tests=os.path.join(ROOT, 'tests'), root=ROOT,
                                      data_dir=data_dir)
  out = subprocess.run([sys.executable, '-c', script], env=env, capture_output=True, text=True,
                       timeout=300, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_one_device_and_four_devices_give_the_same_losses(tiny_data_dir):
  one, four = _run_devices(tiny_data_dir, 1), _run_devices(tiny_data_dir, 4)
  assert one['devices'] == 1 and four['devices'] == 4
  assert len(one['losses']) == 4
  # The first steps agree to ~1e-7; later ones drift slightly because the
  # cross-device sums (batch norm statistics, gradients) add in another order
  # and Adam's normalised update magnifies rounding in near-zero gradients.
  np.testing.assert_allclose(four['losses'][:2], one['losses'][:2], rtol=1e-5)
  np.testing.assert_allclose(four['losses'], one['losses'], rtol=2e-3)


@contextlib.contextmanager
def _sigint_at_batch(n: int, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
  """Raises a real SIGINT as the n-th training batch (counted over the run) is read."""
  real = pipeline.train_batches
  calls = {'n': 0}

  def interrupted_batches(*args, **kwargs):
    for batch in real(*args, **kwargs):
      calls['n'] += 1
      if calls['n'] == n:
        signal.raise_signal(signal.SIGINT)
      yield batch

  monkeypatch.setattr(pipeline, 'train_batches', interrupted_batches)
  try:
    yield
  finally:
    monkeypatch.setattr(pipeline, 'train_batches', real)


def test_interrupted_run_resumes_exactly(tiny_data_dir, tmp_path, monkeypatch):
  config = tiny_config(tiny_data_dir)
  config.train.num_epochs = 2
  straight = train.train_and_evaluate(config, str(tmp_path / 'straight'))
  workdir = str(tmp_path / 'resumed')
  # A real Ctrl-C while epoch 2's second batch is read.
  with _sigint_at_batch(6, monkeypatch), pytest.raises(
      train.Interrupted, match='SIGINT: saved step 6.*rerun the same command'):
    train.train_and_evaluate(config, workdir)
  mgr = checkpoints.manager(workdir)
  assert mgr.latest_step() == 6  # the step in flight finishes, then the stop
  mgr.close()
  resumed = train.train_and_evaluate(config, workdir)
  assert resumed == straight
  straight_rows = (tmp_path / 'straight' / 'metrics.jsonl').read_text()
  assert (tmp_path / 'resumed' / 'metrics.jsonl').read_text() == straight_rows


def test_interrupted_run_with_augmentation_and_best_checkpoint_resumes_exactly(
    tiny_data_dir, tmp_path, monkeypatch):
  config = tiny_config(tiny_data_dir)
  config.train.num_epochs = 3
  config.train.best_metric = 'val_loss'
  config.train.early_stopping_patience = 2
  config.eval.recompute_bn = True
  config.eval.recompute_bn_batches = 2
  config.augment.time_shift = 0.3
  config.augment.freq_masks = 1
  config.augment.time_masks = 1
  config.augment.time_mask_frames = 8
  config.augment.mixup_alpha = 0.4
  straight = train.train_and_evaluate(config, str(tmp_path / 'straight'))
  workdir = str(tmp_path / 'resumed')
  # In epoch 2 (the batches that recompute statistics count too).
  with _sigint_at_batch(7, monkeypatch), pytest.raises(train.Interrupted,
                                                        match='SIGINT: saved step'):
    train.train_and_evaluate(config, workdir)
  assert train.train_and_evaluate(config, workdir) == straight
  for name in ('metrics.jsonl',):
    assert (tmp_path / 'resumed' / name).read_text() == (tmp_path / 'straight' / name).read_text()
  for which in ('best', 'latest'):
    a = checkpoints.restore_variables(str(tmp_path / 'straight'), which)
    b = checkpoints.restore_variables(workdir, which)
    jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)


def test_sigterm_during_validation_saves_the_epoch_and_resumes_exactly(tiny_data_dir, tmp_path,
                                                                      monkeypatch):
  config = tiny_config(tiny_data_dir)
  straight = train.train_and_evaluate(config, str(tmp_path / 'straight'))
  real = train.predict_split
  calls = {'n': 0}

  def terminated_validation(*args, **kwargs):
    calls['n'] += 1
    if calls['n'] == 1:  # the scheduler's SIGTERM during epoch 1's validation
      signal.raise_signal(signal.SIGTERM)
    return real(*args, **kwargs)

  monkeypatch.setattr(train, 'predict_split', terminated_validation)
  workdir = str(tmp_path / 'resumed')
  with pytest.raises(train.Interrupted, match='SIGTERM: saved step 4 .end of epoch 1'):
    train.train_and_evaluate(config, workdir)
  monkeypatch.setattr(train, 'predict_split', real)
  assert train.train_and_evaluate(config, workdir) == straight


def test_nan_loss_stops_with_a_clear_message(tiny_data_dir, tmp_path, monkeypatch):
  config = tiny_config(tiny_data_dir)
  real = steps.train_step

  def poisoned(state, batch, weights, multilabel, **options):
    state, m = real(state, batch, weights, multilabel, **options)
    return state, dict(m, loss=m['loss'] * jnp.nan)

  monkeypatch.setattr(steps, 'train_step', poisoned)
  with pytest.raises(train.TrainingDiverged, match='loss became nan at step 1'):
    train.train_and_evaluate(config, str(tmp_path / 'w'))


def test_losses_are_read_back_every_log_every_steps(tiny_data_dir, tmp_path, monkeypatch):
  """The host waits for the losses only when it logs (issue 28.4): one transfer
  for config.log_every_steps steps, after which the NaN guard still names the
  first step whose loss was not finite."""
  config = tiny_config(tiny_data_dir)
  config.log_every_steps = 3
  real_step, real_get = steps.train_step, jax.device_get

  def poisoned_from_step_2(state, batch, weights, multilabel, **options):
    state, m = real_step(state, batch, weights, multilabel, **options)
    return state, dict(m, loss=jnp.where(state.step >= 2, jnp.nan, m['loss']))

  reads = []

  def counted_get(tree):
    if isinstance(tree, list) and tree and 'correct' in tree[0]:
      reads.append(len(tree))  # the trainer's read of its steps' metrics
    return real_get(tree)

  monkeypatch.setattr(steps, 'train_step', poisoned_from_step_2)
  monkeypatch.setattr(jax, 'device_get', counted_get)
  with pytest.raises(train.TrainingDiverged, match='loss became nan at step 2 '):
    train.train_and_evaluate(config, str(tmp_path / 'w'))
  assert reads == [3]  # steps 1-3 in one read, none before


def test_bad_inputs_give_user_errors(tiny_data_dir, tmp_path):
  config = tiny_config(str(tmp_path / 'nowhere'))
  with pytest.raises(UserError, match='does not exist'):
    source.load_info(config)
  config = tiny_config(tiny_data_dir, name='absent')
  with pytest.raises(UserError, match="no data set 'absent'.*found: tiny"):
    source.load_info(config)
  config = tiny_config(tiny_data_dir)
  config.data.class_names = ('high', 'low')
  with pytest.raises(UserError, match='do not match'):
    source.load_info(config)
  blocker = tmp_path / 'file'
  blocker.write_text('x')
  with pytest.raises(UserError, match='not writable'):
    files.ensure_workdir(str(blocker / 'sub'))


def test_checkpoint_of_another_model_is_refused(tiny_data_dir, tmp_path):
  config = tiny_config(tiny_data_dir)
  config.train.num_epochs = 1
  train.train_and_evaluate(config, str(tmp_path / 'w'))
  config.model.gru_features = 32
  with pytest.raises(UserError, match='does not fit this model'):
    train.train_and_evaluate(config, str(tmp_path / 'w'))
  # Refused before anything was written: the workdir still describes its model.
  assert json.loads((tmp_path / 'w' / 'config.json').read_text())['model']['gru_features'] == 64
  checkpoints.load_for_use(str(tmp_path / 'w'))


def test_main_prints_one_line_errors(tmp_path):
  out = subprocess.run(
      [sys.executable, 'main.py', '--config=configs/default.py', f'--workdir={tmp_path}/w',
       '--config.data.name=x', f'--config.data.data_dir={tmp_path}/missing'],
      cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
  assert out.returncode == 2
  assert out.stderr.strip().startswith('error: data directory') and 'Traceback' not in out.stderr
  assert len(out.stderr.strip().splitlines()) == 1


def test_main_summary_prints_total_params():
  out = subprocess.run([sys.executable, 'main.py', '--config=configs/metal.py', '--mode=summary'],
                       cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
  lines = out.stdout.strip().splitlines()
  assert lines[-1] == 'total params: 284436'
  assert any(l.startswith('conv5') and '1x1x20x64' in l for l in lines)


def test_main_help_says_eval_uses_the_best_checkpoint():
  out = subprocess.run([sys.executable, 'main.py', '--help'], cwd=ROOT, capture_output=True,
                       text=True, timeout=120, check=False)  # absl's --help exits with 1
  mode_help = ' '.join(out.stdout.split()).split('--mode:')[1].split('--')[0]
  assert 'eval (the best checkpoint where the run kept one, else the latest' in mode_help


def test_metal_config_takes_the_data_sets_tabular_columns(tiny_data_dir, tiny_tabular_data_dir):
  from configs import metal
  config = metal.get_config()
  config.data.class_names = ()  # the tiny sets' own two classes
  for data_dir, name, columns in ((tiny_tabular_data_dir, 'tiny_tab', 4),
                                  (tiny_data_dir, 'tiny', 0)):
    config.data.data_dir, config.data.name = data_dir, name
    assert source.load_info(config).num_tabular == columns
    assert f'{columns} tabular inputs' in setup.summary_table(config)
  config.data.num_tabular = 16  # insisting on the reference's 16 is one clear error
  with pytest.raises(UserError, match='has 0 tabular columns .* --config.data.num_tabular=-1'):
    source.load_info(config)


def test_bfloat16_compute_learns_like_float32(tiny_data_dir, tmp_path):
  accuracy = {}
  for dtype in ('float32', 'bfloat16'):
    config = tiny_config(tiny_data_dir)
    config.train.dtype = dtype
    config.train.batch_size = 8
    config.train.num_epochs = 4
    state_results = train.train_and_evaluate(config, str(tmp_path / dtype))
    accuracy[dtype] = state_results['test']['top1']
  assert accuracy['float32'] >= 0.9
  assert abs(accuracy['bfloat16'] - accuracy['float32']) <= 0.1, accuracy
  # Parameters and batch statistics stay float32 under bf16 compute.
  variables = checkpoints.load_for_use(str(tmp_path / 'bfloat16')).variables
  assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(variables))


def test_gradient_accumulation_counts_updates_not_micro_batches(tiny_data_dir, tmp_path):
  plain = tiny_config(tiny_data_dir)
  plain.train.num_epochs = 1
  accum = tiny_config(tiny_data_dir)
  accum.train.num_epochs = 1
  accum.train.grad_accum_steps = 4  # global batch 16 as 4 passes of 4
  train.train_and_evaluate(plain, str(tmp_path / 'plain'))
  train.train_and_evaluate(accum, str(tmp_path / 'accum'))
  rows = {k: json.loads((tmp_path / k / 'metrics.jsonl').read_text()) for k in ('plain', 'accum')}
  # Same number of optimiser updates, hence the same point of the one-cycle schedule.
  assert rows['accum']['step'] == rows['plain']['step'] == 4
  assert rows['accum']['learning_rate'] == rows['plain']['learning_rate']
  mgr = checkpoints.manager(str(tmp_path / 'accum'))
  assert mgr.latest_step() == 16  # micro-batches seen
  mgr.close()
  assert np.isfinite(rows['accum']['train_loss'])
  with pytest.raises(UserError, match='grad_accum_steps'):
    bad = tiny_config(tiny_data_dir)
    bad.train.grad_accum_steps = 3
    train.train_and_evaluate(bad, str(tmp_path / 'bad'))


def test_class_weights_weight_the_loss_like_torch_cross_entropy(tiny_data_dir):
  config, _, state, batch = _state_and_batch(tiny_data_dir)
  weights = jnp.asarray([0.25, 3.0])
  _, m = jax.jit(lambda s, b: steps.train_step(s, b, weights, False))(state, batch)
  spec, tab = steps.model_inputs(batch)
  logits, _ = state.apply_fn({'params': state.params, 'batch_stats': state.batch_stats}, spec,
                             tab, train=True, mutable=['batch_stats'])
  nll = -jax.nn.log_softmax(logits)[jnp.arange(16), batch['label']]
  w = weights[batch['label']]
  np.testing.assert_allclose(float(m['loss']), float((w * nll).sum() / w.sum()), rtol=1e-5)
  assert abs(float(m['loss']) - float(nll.mean())) > 1e-4  # the weights matter here
  config.multilabel = True
  config.train.class_weighting = 'inverse_frequency'
  with pytest.raises(UserError, match='single-label'):
    train.class_weights_for(config, np.array([0, 1]), 2)


def _batches(data_dir, config, count):
  info = source.load_info(config)
  train_source = source.open_sources(config)['train']
  order = np.arange(len(train_source))
  batches = pipeline.train_batches(pipeline.Reader(train_source, info, config), order, 16)
  return info, [next(batches) for _ in range(count)]


def _near_sgd(config):
  """Adam with eps = 1 and a flat learning rate of 1: an update is g / (|g| + 1) per
  weight, nearly the gradient itself, and big enough to read off float32 weights."""
  config.train.eps, config.train.max_lr, config.train.div_factor = 1.0, 1.0, 1.0
  return config


def _moved(new, old) -> dict:
  return jax.tree_util.tree_map(lambda a, b: np.asarray(a, np.float64) - b,
                                jax.device_get(new), jax.device_get(old))


def _micro(batch, i, size):
  return {k: v[i * size:(i + 1) * size] for k, v in batch.items()}


def test_gradient_accumulation_makes_the_update_of_the_whole_batch(tiny_data_dir):
  """K micro-batches of B/K move the parameters as one step on all B clips (batch
  norm on its running statistics, so every clip's loss is independent of the others)."""
  options = steps.TrainOptions(frozen_batch_norm=True)
  configs = {k: _near_sgd(tiny_config(tiny_data_dir)) for k in (1, 4)}
  configs[4].train.grad_accum_steps = 4
  info, batches = _batches(tiny_data_dir, configs[1], 2)
  step = jax.jit(lambda s, b: steps.train_step(s, b, jnp.ones(2), False, options))
  states = {k: train_state.create_train_state(c, info, jax.random.key(0),
                                              train_state.make_optimizer(c, 10))
            for k, c in configs.items()}
  start = states[1].params
  for batch in batches:  # two updates: Adam's moments carry over from the first
    states[1], _ = step(states[1], batch)
    for i in range(4):
      states[4], _ = step(states[4], _micro(batch, i, 4))
      if i < 3 and batch is batches[0]:  # no update before the 4th micro-batch
        jax.tree_util.tree_map(np.testing.assert_array_equal, states[4].params, start)
  whole, accumulated = _moved(states[1].params, start), _moved(states[4].params, start)
  assert np.abs(whole['linear']['kernel']).max() > 1e-3

  def same_move(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3 * np.abs(b).max() + 1e-7)
  jax.tree_util.tree_map(same_move, accumulated, whole)


def _convolutions_and_matmuls(program: str) -> list[str]:
  """The program's convolutions and matrix products (of operands of rank 2 or more:
  the loss's dot products of class weights stay float32, as they should)."""
  return [line for line in program.splitlines()
          if ('stablehlo.convolution' in line or 'stablehlo.dot_general' in line)
          and re.search(r': \(tensor<\d+x\d+', line)]


def test_bfloat16_train_step_computes_in_bfloat16(tiny_data_dir):
  """The train step's program: with train.dtype='bfloat16' every convolution and
  matmul (forward and backward) takes and gives bfloat16; parameters stay float32."""
  programs = {}
  for dtype in ('float32', 'bfloat16'):
    config = tiny_config(tiny_data_dir)
    config.train.dtype = dtype
    info, (batch,) = _batches(tiny_data_dir, config, 1)
    state = jax.eval_shape(lambda c=config, i=info: train_state.create_train_state(
        c, i, jax.random.key(0), train_state.make_optimizer(c, 10)))
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(state.params))
    step = jax.jit(lambda s, b: steps.train_step(s, b, jnp.ones(2), False))
    programs[dtype] = _convolutions_and_matmuls(step.lower(state, batch).as_text())
  assert len(programs['bfloat16']) == len(programs['float32']) >= 20
  assert not any('bf16' in line for line in programs['float32'])
  for line in programs['bfloat16']:
    signature = line.rsplit(' : ', 1)[1]
    assert 'f32' not in signature and 'bf16' in signature, line


def test_grad_clip_norm_bounds_the_update(tiny_data_dir):
  """Gradients clipped to norm c move the weights by between c / (1 + c) and c in
  norm (an update is g / (|g| + 1) per weight here); unclipped ones by far more."""
  moved = {}
  for clip in (0.0, 1e-2):
    config = _near_sgd(tiny_config(tiny_data_dir))
    config.train.weight_decay, config.train.grad_clip_norm = 0.0, clip
    info, (batch,) = _batches(tiny_data_dir, config, 1)
    state = train_state.create_train_state(config, info, jax.random.key(0),
                                           train_state.make_optimizer(config, 10))
    new, _ = jax.jit(lambda s, b: steps.train_step(s, b, jnp.ones(2), False))(state, batch)
    deltas = jax.tree_util.tree_leaves(_moved(new.params, state.params))
    moved[clip] = np.sqrt(sum((d ** 2).sum() for d in deltas))
  assert 1e-2 / (1 + 1e-2) * 0.999 <= moved[1e-2] <= 1e-2 * 1.001, moved
  assert moved[0.0] > 10 * 1e-2, moved


def test_multilabel_loss_is_binary_cross_entropy_by_hand(tiny_data_dir):
  """Sigmoid outputs: the loss is the mean over clips and classes of
  -(y log s(z) + (1 - y) log(1 - s(z))), for label sets of two, one or no class;
  a clip counts as right when its top class is in its set."""
  _config, _info, state, batch = _state_and_batch(tiny_data_dir)
  label_set = np.array(batch['label_set'])
  label_set[:3], label_set[3:5] = 1, 0
  batch = dict(batch, label_set=label_set)
  _, m = jax.jit(lambda s, b: steps.train_step(s, b, jnp.ones(2), True))(state, batch)
  spec, tab = steps.model_inputs(batch)
  logits, _ = state.apply_fn({'params': state.params, 'batch_stats': state.batch_stats}, spec,
                             tab, train=True, mutable=['batch_stats'])
  z, y = np.asarray(logits, np.float64), label_set.astype(np.float64)
  log_sigmoid = lambda v: -np.logaddexp(0.0, -v)
  bce = -(y * log_sigmoid(z) + (1 - y) * log_sigmoid(-z))
  np.testing.assert_allclose(float(m['loss']), bce.mean(), rtol=1e-5)
  assert int(m['correct']) == int(label_set[np.arange(16), z.argmax(-1)].sum())
