"""The CRNN: shapes and parameter counts of SPEC.md section 4, pooling, variants."""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from crnn_jax import model as models
from crnn_jax.model import layers

SPEC_SHAPES = [(64, 646, 64), (32, 323, 64), (16, 161, 64), (4, 80, 64), (1, 20, 64)]


def _init(model, batch=1, frames=1292, num_tabular=0):
  spec = jnp.zeros((batch, 128, frames, 1))
  tab = jnp.ones((batch, num_tabular)) if num_tabular else None
  return model.init(jax.random.key(0), spec, tab), spec, tab


@pytest.mark.parametrize('num_classes,num_tabular,expected', [(10, 0, 211_722), (20, 16, 284_436)])
def test_reference_parameter_counts_and_batch_of_one(num_classes, num_tabular, expected):
  model = models.create_model(default.get_config().model, num_classes, num_tabular)
  variables, spec, tab = _init(model, batch=1, num_tabular=num_tabular)
  assert models.count_params(variables['params']) == expected
  out = model.apply(variables, spec, tab)
  assert out.shape == (1, num_classes)
  log_probs = jax.nn.log_softmax(out)
  np.testing.assert_allclose(np.exp(log_probs).sum(-1), 1.0, rtol=1e-5)


def test_shapes_after_every_block():
  model = models.CRNN(num_classes=10)
  variables, spec, _ = _init(model, batch=2)
  _, state = model.apply(variables, spec, capture_intermediates=True, mutable=['intermediates'])
  inter = state['intermediates']
  for i, shape in enumerate(SPEC_SHAPES):
    assert inter[f'conv{i + 1}']['__call__'][0].shape == (2, *shape)
  assert inter['rnn_l1']['__call__'][0].shape == (2, 20, 64)


def test_flatten_readout_is_time_major():
  """Index t*64 + c: the dense layer sees GRU output (t, c) at row t*64+c."""
  model = models.CRNN(num_classes=3)
  variables, spec, _ = _init(model, frames=1292)
  rng = np.random.default_rng(0)
  spec = jnp.asarray(rng.random((1, 128, 1292, 1), dtype=np.float32))
  _, state = model.apply(variables, spec, capture_intermediates=True, mutable=['intermediates'])
  seq = state['intermediates']['rnn_l1']['__call__'][0][0]  # (20, 64)
  dense = variables['params']['linear']
  manual = seq.reshape(-1) @ dense['kernel'] + dense['bias']
  np.testing.assert_allclose(model.apply(variables, spec)[0], manual, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('readout', ['last', 'mean'])
def test_readout_variants_accept_any_length(readout):
  model = models.CRNN(num_classes=4, readout=readout, audio_activation='relu')
  variables, _, _ = _init(model, frames=700)
  for frames in (700, 1500):
    out = model.apply(variables, jnp.zeros((2, 128, frames, 1)))
    assert out.shape == (2, 4)


def test_metal_head_needs_tabular_input():
  model = models.CRNN(num_classes=20, num_tabular=16)
  variables, spec, _tab = _init(model, num_tabular=16)
  with pytest.raises(ValueError, match='tabular'):
    model.apply(variables, spec, None)


def test_plain_flax_gru_cell_variant_has_folded_biases():
  config = default.get_config()
  config.model.gru_hidden_bias_rz = False
  model = models.create_model(config.model, 10, 0)
  variables, _, _ = _init(model)
  assert models.count_params(variables['params']) == 211_722 - 2 * 2 * 64
  assert 'bias' not in variables['params']['gru_l0']['hr']


def test_torch_init_bounds():
  model = models.CRNN(num_classes=10)
  variables, _, _ = _init(model)
  p = variables['params']
  bound = 1 / np.sqrt(9 * 64)
  assert np.abs(p['conv2']['conv']['kernel']).max() <= bound + 1e-7
  assert np.abs(p['conv2']['conv']['bias']).max() <= bound + 1e-7
  assert np.abs(p['gru_l0']['hr']['kernel']).max() <= 1 / 8 + 1e-7
  assert np.abs(p['linear']['kernel']).max() <= 1 / np.sqrt(1280) + 1e-7
  np.testing.assert_array_equal(p['conv1']['bn']['scale'], 1.0)


def test_flax_init_gives_flaxs_default_initialisers():
  """config.model.init='flax': zero biases, lecun-normal kernels (variance 1 / fan-in,
  unbounded where torch's are uniform within 1 / sqrt(fan-in)), orthogonal recurrent
  kernels; 'torch' (the reference) draws every bias."""
  config = default.get_config()
  config.model.readout = 'mean'  # any clip length: a short one initialises faster
  params = {}
  for init in ('torch', 'flax'):
    config.model.init = init
    variables, _, _ = _init(models.create_model(config.model, 10, 0), frames=128)
    params[init] = jax.device_get(variables['params'])
  flax_params, torch_params = params['flax'], params['torch']
  biases = lambda p: {name: v for name, v in ((jax.tree_util.keystr(k), v) for k, v in
                                              jax.tree_util.tree_leaves_with_path(p))
                      if 'bias' in name and "['bn']" not in name}  # batch norm's start at 0
  assert len(biases(flax_params)) == len(biases(torch_params)) >= 15
  assert all(not np.any(v) for v in biases(flax_params).values())
  assert all(np.all(v != 0) for v in biases(torch_params).values())
  kernel = flax_params['conv2']['conv']['kernel']  # fan-in 9 x 64
  assert np.std(kernel) == pytest.approx(1 / np.sqrt(9 * 64), rel=0.05)
  assert np.abs(kernel).max() > 1.5 / np.sqrt(9 * 64)  # normal tails, not uniform
  for layer in ('gru_l0', 'gru_l1'):
    recurrent = np.concatenate([flax_params[layer][g]['kernel'] for g in ('hr', 'hz', 'hn')], 1)
    for gate in np.split(recurrent, 3, axis=1):
      np.testing.assert_allclose(gate.T @ gate, np.eye(64), atol=1e-5)


@pytest.mark.parametrize('shape,window', [((2, 9, 13, 3), (2, 2)), ((1, 16, 161, 2), (4, 2)),
                                          ((2, 4, 80, 2), (4, 4))])
def test_max_pool_matches_flax_values_and_gradients_with_ties(shape, window):
  rng = np.random.default_rng(1)
  # Few distinct values: many ties inside windows.
  x = jnp.asarray(rng.integers(0, 3, size=shape).astype(np.float32))
  w = jnp.asarray(rng.normal(size=(shape[0], shape[1] // window[0], shape[2] // window[1],
                                   shape[3])).astype(np.float32))
  ours = lambda x: (layers.max_pool_floor(x, window) * w).sum()
  ref = lambda x: (nn.max_pool(x, window, strides=window, padding='VALID') * w).sum()
  np.testing.assert_array_equal(layers.max_pool_floor(x, window),
                                nn.max_pool(x, window, strides=window, padding='VALID'))
  np.testing.assert_array_equal(jax.grad(ours)(x), jax.grad(ref)(x))
  np.testing.assert_array_equal(layers.max_pool_floor_forward(x, window),
                                layers.max_pool_floor(x, window))


@pytest.mark.parametrize('hidden_bias_rz', [True, False])
def test_gru_unrolling_computes_the_same_function(hidden_bias_rz):
  """Hoisted input projections + any unroll: same outputs and gradients."""
  seq = jnp.asarray(np.random.default_rng(0).standard_normal((3, 7, 5), np.float32))

  def run(unroll):
    weights = layers.GRUWeights(4, hidden_bias_rz=hidden_bias_rz, name='gru')
    gru = layers.GRU(weights, unroll=unroll)
    variables = gru.init(jax.random.key(0), seq)
    loss = lambda p, x: (gru.apply(p, x) ** 2).sum()
    return gru.apply(variables, seq), jax.grad(loss, argnums=(0, 1))(variables, seq)

  (out1, grads1), (out3, grads3), (out_all, grads_all) = run(1), run(3), run(True)
  assert out1.shape == (3, 7, 4)
  for out, grads in ((out3, grads3), (out_all, grads_all)):
    np.testing.assert_allclose(out, out1, rtol=1e-6, atol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(grads1)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_gru_without_hidden_rz_biases_is_flax_gru_cell():
  """Same parameters (names, shapes) and outputs as nn.RNN over Flax's nn.GRUCell."""
  seq = jnp.asarray(np.random.default_rng(1).standard_normal((2, 6, 5), np.float32))
  ours = layers.GRU(layers.GRUWeights(4, hidden_bias_rz=False))
  flax_rnn = nn.RNN(nn.GRUCell(4))
  params = ours.init(jax.random.key(0), seq)['params']['weights']
  flax_params = flax_rnn.init(jax.random.key(0), seq)['params']['cell']
  assert jax.tree_util.tree_map(jnp.shape, params) == jax.tree_util.tree_map(jnp.shape,
                                                                            flax_params)
  np.testing.assert_allclose(ours.apply({'params': {'weights': params}}, seq),
                             flax_rnn.apply({'params': {'cell': params}}, seq),
                             rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('shape,padding', [((2, 9, 7, 1), ((1, 1), (1, 1))),
                                           ((1, 6, 5, 1), ((0, 0), (2, 1)))])
def test_shifted_sum_conv_is_the_one_channel_convolution(shape, padding):
  x = jax.random.normal(jax.random.key(1), shape)
  kernel = jax.random.normal(jax.random.key(2), (3, 3, 1, 5))
  args = (x, kernel, (1, 1), padding)
  expected = jax.lax.conv_general_dilated(*args, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  np.testing.assert_allclose(layers.shifted_sum_conv(*args), expected, atol=1e-5)
  half = layers.shifted_sum_conv(x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16),
                                 *args[2:])  # summed in float32, stored in bfloat16
  assert half.dtype == jnp.bfloat16
  np.testing.assert_allclose(half.astype(jnp.float32), expected, atol=0.1, rtol=0.02)
  with pytest.raises(ValueError, match='one input channel'):
    layers.shifted_sum_conv(jnp.concatenate([x, x], -1), jnp.concatenate([kernel] * 2, 2),
                            (1, 1), padding)
  with pytest.raises(ValueError, match='stride 1'):
    layers.shifted_sum_conv(*args[:2], (2, 1), padding)


def test_frozen_batch_norm_trains_with_the_running_statistics():
  """train=True with frozen_batch_norm: the training program's ops (every block a
  convolution, the pool with its first-max backward), the logits of eval mode,
  and nothing to update."""
  model = models.CRNN(num_classes=10)
  variables, _, _ = _init(model, frames=101)
  stats = jax.tree_util.tree_map(lambda x: x + 0.5, variables['batch_stats'])
  variables = {**variables, 'batch_stats': stats}
  spec = jax.random.uniform(jax.random.key(3), (2, 128, 101, 1))
  frozen = lambda s: model.apply(variables, s, train=True, frozen_batch_norm=True)
  assert str(jax.make_jaxpr(frozen)(spec)).count('conv_general_dilated') == 5
  np.testing.assert_allclose(frozen(spec), model.apply(variables, spec), atol=1e-5)
  batch_mode = model.apply(variables, spec, train=True, mutable=['batch_stats'])[0]
  assert not np.allclose(frozen(spec), batch_mode, atol=1e-3)


def test_first_block_in_eval_mode_equals_the_convolution(monkeypatch):
  """Eval mode computes block 1 as shifted sums; as a convolution it is the same."""
  model = models.CRNN(num_classes=10)
  variables, _, _ = _init(model, frames=101)
  spec = jax.random.uniform(jax.random.key(3), (2, 128, 101, 1))
  def convolutions(train):
    jaxpr = jax.make_jaxpr(lambda s: model.apply(variables, s, train=train,
                                                 mutable=['batch_stats'] if train else False,
                                                 rngs={'dropout': jax.random.key(0)}))(spec)
    return str(jaxpr).count('conv_general_dilated')
  assert (convolutions(train=False), convolutions(train=True)) == (4, 5)
  shifted = model.apply(variables, spec)
  monkeypatch.setattr(layers, 'shifted_sum_conv', jax.lax.conv_general_dilated)
  np.testing.assert_allclose(shifted, model.apply(variables, spec), atol=1e-5)


def test_config_shapes_the_layers():
  """config.model's sizes build the model they name: conv widths and pools, GRU width
  and depth, the metal head's audio_fc and tabular widths."""
  config = default.get_config()
  m = config.model
  m.conv_features, m.pool_windows = (8, 16, 8, 16, 4), ((2, 2), (4, 2), (2, 2), (2, 4), (2, 2))
  m.gru_features, m.gru_layers, m.readout = 12, 3, 'mean'
  m.audio_fc_features, m.tabular_features = 10, (6, 5)
  model = models.create_model(m, 7, 3)
  spec, tab = jnp.zeros((2, 128, 64, 1)), jnp.zeros((2, 3))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), spec, tab))
  p = variables['params']
  channels = (1, 8, 16, 8, 16, 4)
  for i in range(5):
    assert p[f'conv{i + 1}']['conv']['kernel'].shape == (3, 3, channels[i], channels[i + 1])
  assert sorted(k for k in p if k.startswith('gru_l')) == ['gru_l0', 'gru_l1', 'gru_l2']
  assert p['gru_l0']['ir']['kernel'].shape == (4 * 128 // 64, 12)  # 4 channels x 2 mel rows
  assert p['gru_l2']['hr']['kernel'].shape == (12, 12)
  assert p['audio_fc']['kernel'].shape == (12, 10)
  assert (p['tab_fc1']['kernel'].shape, p['tab_fc2']['kernel'].shape) == ((3, 6), (6, 5))
  assert p['final_layer']['kernel'].shape == (10 + 5, 7)
  assert jax.eval_shape(model.apply, variables, spec, tab).shape == (2, 7)


def test_audio_activation_relu_rectifies_the_audio_half_of_the_metal_embedding():
  config = default.get_config()
  config.model.readout = 'mean'
  spec = jax.random.uniform(jax.random.key(1), (4, 128, 64, 1))
  tab = jax.random.normal(jax.random.key(2), (4, 3))
  audio, variables = {}, None
  for activation in ('none', 'relu'):  # the same parameters
    config.model.audio_activation = activation
    model = models.create_model(config.model, 5, 3)
    variables = variables or jax.jit(model.init)(jax.random.key(0), spec, tab)
    _, embedding = jax.jit(functools.partial(model.apply, return_embedding=True))(
        variables, spec, tab)
    audio[activation] = np.asarray(embedding[:, :64])  # audio_fc's 64, then the tabular 32
  assert audio['none'].min() < 0
  np.testing.assert_allclose(audio['relu'], np.maximum(audio['none'], 0), rtol=1e-6, atol=1e-7)


def test_bn_momentum_sets_how_fast_the_running_statistics_move():
  """One training step from the initial statistics (mean 0, variance 1): the running
  mean moves by (1 - momentum) of the batch's, for any config.model.bn_momentum."""
  config = default.get_config()
  config.model.readout = 'mean'
  spec = jax.random.uniform(jax.random.key(1), (4, 128, 64, 1))
  stats, variables = {}, None
  for momentum in (0.9, 0.5):  # the same parameters
    config.model.bn_momentum = momentum
    model = models.create_model(config.model, 5, 0)
    variables = variables or jax.jit(model.init)(jax.random.key(0), spec)
    _, updates = jax.jit(functools.partial(model.apply, train=True, mutable=['batch_stats']))(
        variables, spec)
    stats[momentum] = jax.device_get(updates['batch_stats']['conv1']['bn'])
  np.testing.assert_allclose(stats[0.5]['mean'], 5 * stats[0.9]['mean'], rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose((stats[0.5]['var'] - 0.5) / 0.5, (stats[0.9]['var'] - 0.9) / 0.1,
                             rtol=1e-3, atol=1e-6)
  assert np.abs(stats[0.9]['mean']).max() > 1e-3


def test_bn_epsilon_is_added_to_the_variance_it_normalises_with():
  """At initialisation (running mean 0, variance 1) an evaluating batch norm divides by
  sqrt(1 + config.model.bn_epsilon): epsilon 3 halves what epsilon 1e-5 gives."""
  config = default.get_config()
  config.model.readout = 'mean'
  spec = jax.random.uniform(jax.random.key(1), (2, 128, 64, 1))
  normalised, variables = {}, None
  for epsilon in (1e-5, 3.0):  # the same parameters
    config.model.bn_epsilon = epsilon
    model = models.create_model(config.model, 5, 0)
    variables = variables or jax.jit(model.init)(jax.random.key(0), spec)
    _, state = model.apply(variables, spec, capture_intermediates=lambda m, _: isinstance(
        m, layers.BatchNorm))
    normalised[epsilon] = np.asarray(state['intermediates']['conv1']['bn']['__call__'][0])
  assert np.abs(normalised[1e-5]).max() > 1e-2
  np.testing.assert_allclose(normalised[3.0], normalised[1e-5] * math.sqrt(1 + 1e-5) / 2,
                             rtol=1e-5, atol=1e-7)
