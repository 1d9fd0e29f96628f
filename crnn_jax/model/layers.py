"""The CRNN's building blocks: PyTorch-default initialisers, a max pool that is
fast on XLA:CPU, PyTorch's GRU cell and batch-norm update, and the conv block.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

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


# --------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------
class TorchGRUCell(nn.GRUCell):
  """``nn.GRUCell`` with PyTorch's hidden-side biases on the r and z gates.

  Flax's cell folds those two biases into the input side (the sums are the
  same function), which is 2 x 64 parameters fewer per layer than the
  reference's 211,722. With ``hidden_bias_rz`` the parameters map one to one
  onto torch's ``bias_hh``; without it the cell is exactly ``nn.GRUCell``.
  """

  hidden_bias_rz: bool = True

  @nn.compact
  def __call__(self, carry: Array, inputs: Array) -> tuple[Array, Array]:
    if not self.hidden_bias_rz:
      return super().__call__(carry, inputs)
    h = carry
    dense = functools.partial(
        nn.Dense, features=h.shape[-1], dtype=self.dtype,
        param_dtype=self.param_dtype, bias_init=self.bias_init)
    dense_i = functools.partial(dense, kernel_init=self.kernel_init)
    dense_h = functools.partial(dense, kernel_init=self.recurrent_kernel_init)
    r = self.gate_fn(dense_i(name='ir')(inputs) + dense_h(name='hr')(h))
    z = self.gate_fn(dense_i(name='iz')(inputs) + dense_h(name='hz')(h))
    n = self.activation_fn(dense_i(name='in')(inputs) + r * dense_h(name='hn')(h))
    new_h = (1.0 - z) * n + z * h
    return new_h, new_h


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
  def __call__(self, x: Array, train: bool) -> Array:
    fan_in = x.shape[-1] * 9
    inits = {}
    if self.torch_init:
      inits = {'kernel_init': torch_kernel_init(),
                   'bias_init': uniform_init(1.0 / math.sqrt(fan_in))}
    x = nn.Conv(self.features, (3, 3), padding=((1, 1), (1, 1)),
                dtype=self.dtype, name='conv', **inits)(x)
    x = BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                  epsilon=self.bn_epsilon, dtype=self.dtype,
                  unbiased_running_var=self.bn_unbiased_running_var, name='bn')(x)
    x = nn.relu(x)
    return max_pool_floor(x, tuple(self.pool_window))
