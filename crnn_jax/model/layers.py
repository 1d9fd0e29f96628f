"""The CRNN's building blocks: PyTorch-default initialisers, max pools that are
fast on XLA:CPU (one for training, one for forward-only programs), PyTorch's
GRU (input projections hoisted out of the recurrence) and batch-norm update,
and the conv block.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array
Initializer = Callable[..., Array]


# --------------------------------------------------------------------------
# Initialisers: PyTorch's defaults, so the reference variant starts where the
# reference did (kaiming_uniform(a=sqrt(5)) == U(+-1/sqrt(fan_in))).
# --------------------------------------------------------------------------
def torch_kernel_init() -> Initializer:
  return nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')


def uniform_init(bound: float) -> Initializer:
  """U(-bound, bound), the form of every PyTorch default bias and GRU weight."""

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


# --------------------------------------------------------------------------
# Max pooling
# --------------------------------------------------------------------------
def _pool_windows(x: Array, window: tuple[int, int]) -> tuple[Array, tuple[int, ...]]:
  """Crops x (B, H, W, C) to whole windows (floor mode) -> (B, Ho, ph, Wo, pw, C)."""
  ph, pw = window
  b, h, w, c = x.shape
  ho, wo = h // ph, w // pw
  cropped = x[:, : ho * ph, : wo * pw, :]
  return cropped.reshape(b, ho, ph, wo, pw, c), (b, ho, wo, c)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def max_pool_floor(x: Array, window: tuple[int, int]) -> Array:
  """Max pool with stride == window and floor mode, like torch's MaxPool2d.

  Same values and gradients as ``nn.max_pool(x, window, strides=window)``
  (ties go to the first element of the window), but XLA:CPU differentiates
  ``reduce_window`` into a select-and-scatter with huge index temporaries
  (CPU_PERF_NOTES.md cause 1). A reshape + max forward and a one-hot backward
  keep the memory traffic at one activation-sized buffer.
  """
  windows, _ = _pool_windows(x, window)
  return windows.max(axis=(2, 4))


def _max_pool_fwd(x, window):
  return max_pool_floor(x, window), x


def _max_pool_bwd(window, x, g):
  ph, pw = window
  windows, (b, ho, wo, c) = _pool_windows(x, window)
  # (B, Ho, Wo, C, ph*pw) in row-major window order, as select-and-scatter scans.
  flat = windows.transpose(0, 1, 3, 5, 2, 4).reshape(b, ho, wo, c, ph * pw)
  first_max = jnp.argmax(flat, axis=-1)
  onehot = jax.nn.one_hot(first_max, ph * pw, dtype=g.dtype)
  grad = (onehot * g[..., None]).reshape(b, ho, wo, c, ph, pw)
  grad = grad.transpose(0, 1, 4, 2, 5, 3).reshape(b, ho * ph, wo * pw, c)
  pad = ((0, 0), (0, x.shape[1] - ho * ph), (0, x.shape[2] - wo * pw), (0, 0))
  return (jnp.pad(grad, pad),)


max_pool_floor.defvjp(_max_pool_fwd, _max_pool_bwd)


def max_pool_floor_forward(x: Array, window: tuple[int, int]) -> Array:
  """The values of :func:`max_pool_floor` as a chain of elementwise maxima, one
  array per position in the window, for forward-only programs (eval, prediction).

  XLA:CPU fuses these maxima with the batch norm and ReLU before them into one
  vectorised loop; max_pool_floor's reduce over each window ran that loop at
  about half the speed (the eval step took 1.7-1.8x as long at B = 1 and 32,
  benchmarks/RESULTS.md). In the train step the reduce is as fast or faster, so
  training keeps max_pool_floor and its first-max backward.
  """
  windows, _ = _pool_windows(x, window)
  taps = [windows[:, :, i, :, j, :] for i in range(window[0]) for j in range(window[1])]
  return functools.reduce(jnp.maximum, taps)


# --------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------
class _AffineParams(nn.Module):
  """The ``kernel`` (in, out) and ``bias`` (out) of an ``nn.Dense``, by the same
  names, initialisers and random streams, handed out instead of applied."""

  features: int
  use_bias: bool
  kernel_init: Initializer
  bias_init: Initializer
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, in_features: int) -> tuple[Array, Array | None]:
    kernel = self.param('kernel', self.kernel_init, (in_features, self.features),
                        self.param_dtype)
    bias = (self.param('bias', self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    return kernel, bias


class GRUWeights(nn.Module):
  """One GRU layer's parameters, named as PyTorch's split gates: ``ir, iz, in``
  (input side) and ``hr, hz, hn`` (hidden side), each ``{kernel, bias}``.

  Returns them fused for the fast recurrence in :class:`GRU`: input kernels
  (in, 3H) and biases (3H), hidden kernels (H, 3H) and biases (3H), gates in
  the order r, z, n. With ``hidden_bias_rz`` the biases map one to one onto
  torch's ``bias_hh`` (the reference's 211,722 parameters); without it ``hr``
  and ``hz`` have none, as in ``nn.GRUCell`` (the sums are the same function).
  The defaults of the initialisers are ``nn.GRUCell``'s.
  """

  features: int
  hidden_bias_rz: bool = True
  param_dtype: Any = jnp.float32
  kernel_init: Initializer = nn.initializers.lecun_normal()
  recurrent_kernel_init: Initializer = nn.initializers.orthogonal()
  bias_init: Initializer = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, in_features: int) -> tuple[Array, Array, Array, Array]:
    h = self.features

    def affine(name, fan_in, kernel_init, use_bias=True):
      return _AffineParams(h, use_bias, kernel_init, self.bias_init, self.param_dtype,
                           name=name)(fan_in)

    inputs = [affine(g, in_features, self.kernel_init) for g in ('ir', 'iz', 'in')]
    hidden = [affine(g, h, self.recurrent_kernel_init, use_bias)
              for g, use_bias in (('hr', self.hidden_bias_rz), ('hz', self.hidden_bias_rz),
                                  ('hn', True))]
    zeros = jnp.zeros((h,), self.param_dtype)
    fused = lambda ps, i: jnp.concatenate([zeros if p[i] is None else p[i] for p in ps], -1)
    return fused(inputs, 0), fused(inputs, 1), fused(hidden, 0), fused(hidden, 1)


class GRU(nn.Module):
  """PyTorch's GRU over a batch-major sequence (B, T, in) -> (B, T, H), zero
  initial state.

  The input side of every time step is one matmul before the recurrence, so
  the scan carries only the hidden-side (B, H) x (H, 3H) matmul and the gates.
  ``unroll`` time steps go into each loop iteration (``jax.lax.scan``; ``True``:
  the whole sequence), which lets XLA fuse across steps; any value computes
  the same function. Computes in ``dtype`` like ``nn.Dense``; the hidden state
  is carried in the parameters' dtype, as ``nn.RNN`` over ``nn.GRUCell`` did.
  """

  weights: GRUWeights
  unroll: int | bool = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, seq: Array) -> Array:
    w_i, b_i, w_h, b_h = (p.astype(self.dtype) for p in self.weights(seq.shape[-1]))
    h = self.weights.features
    # (B, T, in) -> time-major (T, B, 3H): one matmul for every step's input gates.
    x_gates = jnp.einsum('bti,ig->tbg', seq.astype(self.dtype), w_i) + b_i

    def step(carry: Array, x_t: Array) -> tuple[Array, Array]:
      h_gates = carry.astype(self.dtype) @ w_h + b_h
      r = jax.nn.sigmoid(x_t[:, :h] + h_gates[:, :h])
      z = jax.nn.sigmoid(x_t[:, h:2 * h] + h_gates[:, h:2 * h])
      n = jnp.tanh(x_t[:, 2 * h:] + r * h_gates[:, 2 * h:])
      new = (1.0 - z) * n + z * carry
      return new, new

    carry = jnp.zeros((seq.shape[0], h), self.weights.param_dtype)
    _, out = jax.lax.scan(step, carry, x_gates, unroll=self.unroll)
    return out.transpose(1, 0, 2)


class BatchNorm(nn.BatchNorm):
  """``nn.BatchNorm`` that can update its running variance as PyTorch does.

  Both normalise with the biased batch variance, but PyTorch's running
  average takes the unbiased one (x n/(n-1), n = values per channel); Flax's
  the biased. With ``unbiased_running_var`` the update is rescaled, so
  batch statistics trained here match a PyTorch run's (and the reference's).
  """

  unbiased_running_var: bool = False

  @nn.compact
  def __call__(self, x: Array, use_running_average: bool | None = None, **kwargs) -> Array:
    use_ra = nn.merge_param('use_running_average', self.use_running_average,
                            use_running_average)
    if not self.unbiased_running_var or use_ra or self.is_initializing():
      return super().__call__(x, use_running_average, **kwargs)
    old = self.get_variable('batch_stats', 'var')
    y = super().__call__(x, use_running_average, **kwargs)
    # new = m*old + (1-m)*biased  ->  m*old + (1-m)*biased * n/(n-1)
    n = math.prod(x.shape[:-1])
    m = self.momentum
    new = self.get_variable('batch_stats', 'var')
    self.put_variable('batch_stats', 'var', m * old + (new - m * old) * (n / max(n - 1, 1)))
    return y


def shifted_sum_conv(lhs: Array, rhs: Array, window_strides: Any, padding: Any,
                     lhs_dilation: Any = None, rhs_dilation: Any = None,
                     dimension_numbers: Any = None, feature_group_count: int = 1,
                     precision: Any = None) -> Array:
  """``lax.conv_general_dilated`` of a one-channel NHWC input with an HWIO
  kernel (stride 1, no dilation), as a sum of the kernel's shifted taps.

  The first conv block reads a one-channel spectrogram: as a convolution it is
  a GEMM with K = 9, which XLA:CPU runs far below its speed on the other blocks
  (the 1-channel conv took as long as the 64-channel one at B = 1); as nine
  broadcast multiply-adds it is one elementwise loop that fuses with batch
  norm, ReLU and the pool. Same sums in another order (differences ~1e-7).
  Used for inference only: its gradient is slower than the convolution's.
  """
  del precision  # float32 multiply-adds, as the convolution accumulates
  nhwc = lax.conv_dimension_numbers(lhs.shape, rhs.shape, ('NHWC', 'HWIO', 'NHWC'))
  if (lhs.shape[-1] != 1 or feature_group_count != 1 or isinstance(padding, str)
      or lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers or nhwc) != nhwc
      or any(s != 1 for s in window_strides)
      or any(d != 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))):
    raise ValueError('shifted_sum_conv: one input channel, NHWC/HWIO, explicit padding, '
                     'stride 1 and no dilation only')
  kh, kw = rhs.shape[:2]
  padded = jnp.pad(lhs.astype(jnp.float32), ((0, 0), *padding, (0, 0)))
  kernel = rhs.astype(jnp.float32)
  out_h, out_w = padded.shape[1] - kh + 1, padded.shape[2] - kw + 1
  out = None
  for i in range(kh):
    for j in range(kw):
      tap = padded[:, i:i + out_h, j:j + out_w, :] * kernel[i, j, 0]
      out = tap if out is None else out + tap
  return out.astype(jnp.result_type(lhs.dtype, rhs.dtype))


class ConvBlock(nn.Module):
  """3x3 conv (padding 1, bias) -> batch norm -> ReLU -> max pool."""

  features: int
  pool_window: tuple[int, int]
  torch_init: bool = True
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  bn_unbiased_running_var: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool, frozen_batch_norm: bool = False) -> Array:
    """``train``: the ops of a differentiated program; batch norm on the batch's
    statistics unless ``frozen_batch_norm`` (or not ``train``)."""
    fan_in = x.shape[-1] * 9
    inits = {}
    if self.torch_init:
      inits = {'kernel_init': torch_kernel_init(),
                   'bias_init': uniform_init(1.0 / math.sqrt(fan_in))}
    # Shifted sums for the one-channel first block at inference; a symbolic
    # shape (a shape-polymorphic export) keeps the convolution, which every
    # exporter lowers (jax2onnx cannot pad an array of symbolic batch size).
    one_channel_inference = (x.shape[-1] == 1 and not train
                             and all(isinstance(d, int) for d in x.shape))
    x = nn.Conv(self.features, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype,
                conv_general_dilated=shifted_sum_conv if one_channel_inference else None,
                name='conv', **inits)(x)
    x = BatchNorm(use_running_average=not train or frozen_batch_norm, momentum=self.bn_momentum,
                  epsilon=self.bn_epsilon, dtype=self.dtype,
                  unbiased_running_var=self.bn_unbiased_running_var, name='bn')(x)
    x = nn.relu(x)
    pool = max_pool_floor if train else max_pool_floor_forward
    return pool(x, tuple(self.pool_window))
