"""crnn_jax against the PyTorch port of the reference (crnn_jax/reference/torch_model.py).

Same weights must give the same function (eval and train mode), the same
batch-norm statistics (with ``bn_unbiased_running_var``), the same gradients,
the same optimiser steps and the same lr / beta1 schedules. Inputs use 128
frames instead of 1,292 (the pools leave 2 time steps, so the time-major
flatten is still exercised) to keep the file fast. Skipped without torch.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip('torch')

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `pytest` run without `python -m`
  sys.path.insert(0, str(ROOT))

import jax
import jax.numpy as jnp
import optax

from configs import default
from crnn_jax import model as models
from crnn_jax.reference import torch_model as tr
from crnn_jax.reference import weights as rw
from crnn_jax.train import state as train_state
from crnn_jax.train import steps as train_steps

FRAMES = 128
HEADS = {'genre': (10, 0), 'metal': (20, 16)}  # classes, tabular inputs


def torch_model(head: str, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
  """The torch port with default init, plus non-trivial batch-norm affine
  parameters and running statistics (defaults 1/0/0/1 would hide mix-ups).
  Weights are drawn in float32, so a float64 copy has exactly the same values."""
  torch.manual_seed(seed)
  model = tr.GenreCRNN(frames=FRAMES) if head == 'genre' else tr.MetalCRNN(frames=FRAMES)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        module.weight.uniform_(0.5, 1.5)
        module.bias.normal_(0.0, 0.1)
        module.running_mean.normal_(0.0, 0.1)
        module.running_var.uniform_(0.5, 2.0)
  return model.to(dtype)


def flax_model(head: str, **overrides) -> models.CRNN:
  config = default.get_config()
  for key, value in overrides.items():
    config.model[key] = value
  classes, tabular = HEADS[head]
  return models.create_model(config.model, classes, tabular)


def state_dict_np(model: torch.nn.Module) -> dict[str, np.ndarray]:
  """float32 numpy copies (a float64 model's values are float32-exact here)."""
  return {k: v.detach().numpy().astype(np.float32 if v.is_floating_point() else v.numpy().dtype)
          for k, v in model.state_dict().items()}


def inputs(head: str, batch: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray | None]:
  rng = np.random.default_rng(seed)
  spec = rng.random((batch, 128, FRAMES, 1), dtype=np.float32)
  tab = rng.normal(size=(batch, 16)).astype(np.float32) if head == 'metal' else None
  return spec, tab


def torch_forward(model: torch.nn.Module, spec: np.ndarray, tab: np.ndarray | None
                  ) -> torch.Tensor:
  """NHWC numpy -> the port's (B, 1, 128, frames) input."""
  dtype = next(model.parameters()).dtype
  x = torch.from_numpy(np.ascontiguousarray(spec.transpose(0, 3, 1, 2))).to(dtype)
  return model(x, None if tab is None else torch.from_numpy(tab).to(dtype))


# --------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------
@pytest.mark.parametrize('head', list(HEADS))
def test_round_trip_torch_to_flax_to_torch(head):
  sd = state_dict_np(torch_model(head))
  variables = rw.to_flax(sd)
  assert variables['params']['conv2']['conv']['kernel'].shape == (3, 3, 64, 64)
  # conv OIHW -> HWIO, element by element
  np.testing.assert_array_equal(variables['params']['conv1']['conv']['kernel'][2, 0, 0, 5],
                                sd['cnn.conv1.0.weight'][5, 0, 2, 0])
  # GRU gates r, z, n stacked on torch's first axis; kernels are weight.T
  np.testing.assert_array_equal(variables['params']['gru_l1']['iz']['kernel'],
                                sd['rnn.gru.weight_ih_l1'][64:128].T)
  np.testing.assert_array_equal(variables['params']['gru_l0']['hn']['bias'],
                                sd['rnn.gru.bias_hh_l0'][128:])
  np.testing.assert_array_equal(variables['batch_stats']['conv3']['bn']['var'],
                                sd['cnn.conv3.1.running_var'])
  back = rw.to_torch(variables)
  assert set(back) == set(sd)
  for name, value in sd.items():
    np.testing.assert_array_equal(back[name], value, err_msg=name)


@pytest.mark.parametrize('head', list(HEADS))
def test_round_trip_flax_to_torch_to_flax(head):
  model = flax_model(head)
  spec, tab = inputs(head, 1)
  shapes = jax.eval_shape(model.init, jax.random.key(3), spec, tab)
  rng = np.random.default_rng(3)  # random values in flax's own tree
  variables = jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32), shapes)
  sd = rw.to_torch(variables)
  port = tr.GenreCRNN(frames=FRAMES) if head == 'genre' else tr.MetalCRNN(frames=FRAMES)
  port.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
  again = rw.convert_for(sd, variables)
  assert jax.tree.structure(again) == jax.tree.structure(variables)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(variables),
                          jax.tree.leaves(again)):
    np.testing.assert_array_equal(np.asarray(a), b, err_msg=jax.tree_util.keystr(path))


def test_folded_gru_biases_are_the_same_function():
  """gru_hidden_bias_rz=False (flax's own GRUCell) gets b_hr, b_hz folded in."""
  port = torch_model('genre').eval()
  sd = state_dict_np(port)
  model = flax_model('genre', gru_hidden_bias_rz=False)
  spec, _ = inputs('genre', 2)
  variables = rw.convert_for(sd, jax.eval_shape(model.init, jax.random.key(0), spec))
  assert 'bias' not in variables['params']['gru_l0']['hr']
  np.testing.assert_allclose(variables['params']['gru_l0']['ir']['bias'],
                             sd['rnn.gru.bias_ih_l0'][:64] + sd['rnn.gru.bias_hh_l0'][:64])
  with torch.no_grad():
    ref = torch_forward(port, spec, None).numpy()
  out = jax.nn.log_softmax(jax.jit(model.apply)(variables, spec))
  np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)
  # and back: zero hidden r/z biases in torch, same function again
  port.load_state_dict({k: torch.from_numpy(v) for k, v in rw.to_torch(variables).items()})
  with torch.no_grad():
    np.testing.assert_allclose(torch_forward(port, spec, None).numpy(), ref, atol=1e-5, rtol=0)


def test_mismatching_state_dicts_get_one_line_errors_naming_the_tensor():
  sd = state_dict_np(torch_model('genre'))
  template = jax.eval_shape(flax_model('genre').init, jax.random.key(0), inputs('genre', 1)[0])
  cases = {
      'cnn.conv3.0.weight': lambda d: d.update({'cnn.conv3.0.weight': np.zeros((32, 64, 3, 3))}),
      'rnn.gru.bias_hh_l1': lambda d: d.pop('rnn.gru.bias_hh_l1'),
      'cnn.conv6.0.weight': lambda d: d.update({'cnn.conv6.0.weight': np.zeros((64, 64, 3, 3))}),
  }
  for name, corrupt in cases.items():
    bad = dict(sd)
    corrupt(bad)
    with pytest.raises(rw.ReferenceWeightsError) as err:
      rw.convert_for(bad, template)
    assert name in str(err.value) and '\n' not in str(err.value)
  # a metal checkpoint given the genre config says which is which
  metal = state_dict_np(torch_model('metal'))
  with pytest.raises(rw.ReferenceWeightsError, match='metal model .* genre model'):
    rw.convert_for(metal, template)
  # the 1,292-frame reference head does not fit a 128-frame model
  sd['rnn.linear.weight'] = np.zeros((10, 1280), np.float32)
  with pytest.raises(rw.ReferenceWeightsError, match=r"'rnn.linear.weight' has shape \(10, 1280\)"):
    rw.convert_for(sd, template)


# --------------------------------------------------------------------------
# Forward passes
# --------------------------------------------------------------------------
@pytest.mark.parametrize('head', list(HEADS))
@pytest.mark.parametrize('batch', [1, 8])
def test_eval_log_probs_match(head, batch):
  port = torch_model(head).eval()
  variables = rw.to_flax(state_dict_np(port))
  spec, tab = inputs(head, batch)
  with torch.no_grad():
    ref = torch_forward(port, spec, tab).numpy()
  apply = jax.jit(flax_model(head).apply)
  out = np.asarray(jax.nn.log_softmax(apply(variables, spec, tab)))
  assert out.shape == ref.shape == (batch, HEADS[head][0])
  np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)
  # the comparison must be able to fail: other weights give other outputs
  other = rw.to_flax(state_dict_np(torch_model(head, seed=7)))
  assert np.abs(jax.nn.log_softmax(apply(other, spec, tab)) - ref).max() > 1e-3


def test_train_mode_outputs_and_running_stats():
  """Train mode: batch statistics normalise; running stats update like torch's
  only with bn_unbiased_running_var (torch averages in the unbiased variance).
  The conv blocks are the same in both heads, so the genre model suffices."""
  head = 'genre'
  port = torch_model(head)
  sd = state_dict_np(port)
  variables = rw.to_flax(sd)
  port.train()
  batches = [inputs(head, 4, seed=s) for s in (1, 2)]
  with torch.no_grad():
    ref_out = [torch_forward(port, spec, tab).numpy() for spec, tab in batches]
  ref_stats = state_dict_np(port)

  for unbiased in (True, False):
    model = flax_model(head, bn_unbiased_running_var=unbiased)
    apply = jax.jit(functools.partial(model.apply, train=True, mutable=['batch_stats']))
    state = dict(variables)
    for (spec, tab), ref in zip(batches, ref_out):
      out, updates = apply(state, spec, tab)
      np.testing.assert_allclose(jax.nn.log_softmax(out), ref, atol=1e-4, rtol=0)
      state = {'params': state['params'], 'batch_stats': updates['batch_stats']}
    got = rw.to_torch(state)
    # The statistics are float32 sums over up to 4 x 128 x 1292 values, in another order
    # than torch's: inside the full suite (never alone) three of 64 means came out 7.7e-5
    # relative apart. n / (n - 1) below is 0.8%, far outside this tolerance.
    tol = {'rtol': 1e-4, 'atol': 1e-5}
    for i in range(1, 6):
      np.testing.assert_allclose(got[f'cnn.conv{i}.1.running_mean'],
                                 ref_stats[f'cnn.conv{i}.1.running_mean'], **tol)
    var_name = 'cnn.conv5.1.running_var'  # n = 4 x 4 x 8 values: n/(n-1) is visible
    if unbiased:
      for i in range(1, 6):
        np.testing.assert_allclose(got[f'cnn.conv{i}.1.running_var'],
                                   ref_stats[f'cnn.conv{i}.1.running_var'], **tol)
    else:
      assert not np.allclose(got[var_name], ref_stats[var_name], **tol)


# --------------------------------------------------------------------------
# Gradients, optimiser, schedules
# --------------------------------------------------------------------------

def _torch_grads(port: torch.nn.Module) -> dict[str, np.ndarray]:
  return {name: p.grad.numpy().copy() for name, p in port.named_parameters()}


def _flax_grads_as_torch(grads: dict, batch_stats: dict) -> dict[str, np.ndarray]:
  sd = rw.to_torch({'params': grads, 'batch_stats': batch_stats})
  return {k: v for k, v in sd.items() if 'running_' not in k and 'num_batches' not in k}


def _torch_step_grads(port: torch.nn.Module, spec: np.ndarray, tab: np.ndarray | None,
                      labels: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
  loss = torch.nn.functional.nll_loss(torch_forward(port, spec, tab), torch.from_numpy(labels))
  port.zero_grad()
  loss.backward()
  return float(loss.detach()), {n: p.grad.double().numpy().copy() for n, p in port.named_parameters()}


def _conv_bias(name: str) -> bool:
  return name.startswith('cnn.') and name.endswith('.0.bias')


@pytest.mark.parametrize('head', list(HEADS))
def test_gradients_match(head):
  """Yardstick: the torch port in float64. (Its own float32 gradients of the
  first conv blocks can be ~1e-3 off float64 here: batch-norm backward over
  65k values per channel; crnn_jax's float32 ones stay within ~1e-5.)"""
  port = torch_model(head, dtype=torch.float64).train()
  variables = rw.to_flax(state_dict_np(port))
  spec, tab = inputs(head, 4)
  labels = np.arange(4) % HEADS[head][0]
  _, ref = _torch_step_grads(port, spec, tab, labels)
  model = flax_model(head, bn_unbiased_running_var=True)

  def loss_fn(params):
    logits, _ = model.apply({'params': params, 'batch_stats': variables['batch_stats']},
                            spec, tab, train=True, mutable=['batch_stats'])
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  grads = jax.jit(jax.grad(loss_fn))(variables['params'])
  got = _flax_grads_as_torch(jax.device_get(grads), variables['batch_stats'])
  assert set(got) == set(ref)
  overall = max(np.abs(v).max() for v in ref.values())
  for name, value in ref.items():
    if _conv_bias(name):
      # Batch norm cancels a conv bias: its exact gradient is 0 (float64:
      # ~1e-15); float32 leaves rounding noise only.
      assert np.abs(got[name]).max() < 1e-4 * overall, name
      continue
    scale = np.abs(value).max()
    np.testing.assert_allclose(got[name] / scale, value / scale, atol=1e-4, rtol=0, err_msg=name)


def test_schedules_match_fastai_step_by_step():
  config = default.get_config()
  for total in (10, 97, 2000):
    lr_fn, beta1_fn = train_state.schedules(config, total)
    want_lr, want_beta1 = tr.one_cycle_values(total, config.train.max_lr)
    steps = jnp.arange(total)
    got_lr, got_beta1 = jax.jit(jax.vmap(lambda i, f=lr_fn, g=beta1_fn: (f(i), g(i))))(steps)
    # float32 optax vs float64 fastai: equal to float32 precision of the peak
    np.testing.assert_allclose(np.asarray(got_lr), want_lr, rtol=2e-5,
                               atol=1e-6 * config.train.max_lr)
    np.testing.assert_allclose(np.asarray(got_beta1), want_beta1, rtol=1e-6, atol=0)


def test_fastai_one_cycle_port():
  """The port itself, against values worked out from fastai v1's formulas."""
  max_lr, total = 1e-3, 10  # a1 = 3 warm-up steps, a2 = 7
  lrs, moms = tr.one_cycle_values(total, max_lr)
  assert lrs[0] == pytest.approx(max_lr / 25) and moms[0] == pytest.approx(0.95)
  assert lrs[3] == pytest.approx(max_lr) and moms[3] == pytest.approx(0.85)
  # step 1 trains with the value fastai computes after the first batch: n=1 of 3
  assert lrs[1] == pytest.approx(max_lr + (max_lr / 25 - max_lr) / 2 * (np.cos(np.pi / 3) + 1))
  # step 9 is n=6 of 7 in the annealing phase, towards max_lr / 250,000
  final = max_lr / 250_000
  assert lrs[9] == pytest.approx(final + (max_lr - final) / 2 * (np.cos(np.pi * 6 / 7) + 1))
  assert moms[9] == pytest.approx(0.95 + (0.85 - 0.95) / 2 * (np.cos(np.pi * 6 / 7) + 1))
  sched = tr.OneCycle(total, max_lr)
  for _ in range(total):
    assert sched.on_batch_end()
  assert sched.lr == pytest.approx(final) and not sched.on_batch_end()


def test_optimizer_matches_fastai_adamw_over_a_cycle():
  """crnn_jax.train's optimiser vs fastai's AdamW (decoupled wd, then Adam with
  the scheduled beta1), fed the same gradients for a whole one-cycle."""
  config = default.get_config()
  total = 8
  port = torch_model('genre')
  sd = state_dict_np(port)
  params = rw.to_flax(sd)['params']
  tx = train_state.make_optimizer(config, total)
  opt_state = tx.init(params)
  sched = tr.OneCycle(total, config.train.max_lr)
  opt = tr.FastaiAdamW(port.parameters(), lr=sched.lr, beta1=sched.beta1,
                       beta2=config.train.beta2, eps=config.train.eps,
                       weight_decay=config.train.weight_decay)
  rng = np.random.default_rng(0)
  named = dict(port.named_parameters())
  update = jax.jit(tx.update)
  for _ in range(total):
    grads_sd = {k: rng.normal(scale=1e-2, size=v.shape).astype(np.float32) for k, v in sd.items()}
    for name, p in named.items():
      p.grad = torch.from_numpy(grads_sd[name])
    opt.step(sched.lr, sched.beta1)
    sched.on_batch_end()
    grads = rw.to_flax(grads_sd)['params']
    updates, opt_state = update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
  got = rw.to_torch({'params': jax.device_get(params), 'batch_stats': rw.to_flax(sd)['batch_stats']})
  for name, p in named.items():
    np.testing.assert_allclose(got[name], p.detach().numpy(), atol=1e-6, rtol=1e-5, err_msg=name)
    # each parameter moved: the comparison is not between two untouched copies
    assert np.abs(p.detach().numpy() - sd[name]).max() > 1e-5, name


def test_one_train_step_matches():
  """crnn_jax.train.steps.train_step vs a fastai-style step of the torch port (in
  float64, the exact yardstick) from identical states.

  Adam's first step moves each weight by lr * g / (|g| + eps), i.e. ~lr *
  sign(g), so weights whose gradient is within float32 rounding of zero (all
  conv biases: batch norm cancels them) may move either way; every other
  weight must land on the same value.
  """
  head = 'metal'
  config = default.get_config()
  config.model.bn_unbiased_running_var = True
  port = torch_model(head, dtype=torch.float64).train()
  sd = state_dict_np(port)
  variables = rw.to_flax(sd)
  model = flax_model(head, bn_unbiased_running_var=True)
  total = 20
  state = train_state.TrainState.create(
      apply_fn=model.apply, params=variables['params'], batch_stats=variables['batch_stats'],
      tx=train_state.make_optimizer(config, total))
  rng = np.random.default_rng(5)
  images = rng.integers(0, 256, size=(4, 128, FRAMES), dtype=np.uint8)
  labels = (np.arange(4) * 3) % HEADS[head][0]
  _, tab = inputs(head, 4)
  batch = {'spectrogram': images, 'label': labels.astype(np.int32), 'tabular': tab}
  state, metrics = jax.jit(train_steps.train_step, static_argnames='multilabel')(
      state, batch, jnp.ones(HEADS[head][0]), multilabel=False)

  sched = tr.OneCycle(total, config.train.max_lr)
  opt = tr.FastaiAdamW(port.parameters(), lr=sched.lr, beta1=sched.beta1)
  spec = (images.astype(np.float32) / 255.0)[..., None]
  loss, grads = _torch_step_grads(port, spec, tab, labels)
  opt.step(sched.lr, sched.beta1)
  assert float(metrics['loss']) == pytest.approx(loss, abs=1e-5)

  got = rw.to_torch({'params': jax.device_get(state.params),
                     'batch_stats': jax.device_get(state.batch_stats)})
  ref = state_dict_np(port)
  lr0 = config.train.max_lr / config.train.div_factor
  noisy = 0
  for name, value in ref.items():
    if 'num_batches' in name:
      continue
    np.testing.assert_allclose(got[name], value, atol=2.001 * lr0, rtol=0, err_msg=name)
    if name in grads:
      clear = np.abs(grads[name]) > 1e-4 * np.abs(grads[name]).max()
      if _conv_bias(name):
        clear[:] = False
      noisy += int((~clear).sum()) if not _conv_bias(name) else 0
      np.testing.assert_allclose(got[name][clear], value[clear], atol=1e-6, rtol=0,
                                 err_msg=name)
    else:  # running statistics
      np.testing.assert_allclose(got[name], value, atol=1e-6, rtol=1e-5, err_msg=name)
  assert noisy < 0.01 * sum(g.size for g in grads.values())
  moved = max(np.abs(ref[n] - sd[n]).max() for n in grads)
  assert moved > 0.5 * lr0
