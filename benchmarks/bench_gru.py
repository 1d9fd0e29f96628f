r"""The CRNN's recurrent part alone: crnn_jax's GRU vs the per-step design and torch.

  python -m benchmarks.bench_gru                  # CPU (or the default JAX device)
  python -m benchmarks.bench_gru --batch_sizes=8,64,256 --unrolls=1,2,4,all

Forward + backward of the two-layer, 64-unit GRU over the reference's 20 time
steps, input (B, 20, 64), summed squares as the loss:
  per-step      ``nn.RNN`` over Flax's ``nn.GRUCell``: all six gate matmuls
                inside the loop (the design crnn_jax's model used before;
                the same function as ``gru_hidden_bias_rz=False``)
  hoisted uN    crnn_jax.model.layers.GRU: the input side of every step in one
                matmul before the loop, ``unroll=N`` steps per loop iteration
  torch         ``torch.nn.GRU`` (cuDNN on a GPU), same shapes
Median of --repeats windows of --steps calls each; compile time per variant.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from crnn_jax.core import xla_defaults

xla_defaults.apply()  # the XLA flags training runs with, before jax is imported

import flax.linen as nn
import jax
import numpy as np

from crnn_jax.model import layers

TIME_STEPS, FEATURES, LAYERS = 20, 64, 2


class PerStep(nn.Module):
  @nn.compact
  def __call__(self, seq: jax.Array) -> jax.Array:
    for _ in range(LAYERS):
      seq = nn.RNN(nn.GRUCell(FEATURES))(seq)
    return seq


class Hoisted(nn.Module):
  unroll: Any = 1

  @nn.compact
  def __call__(self, seq: jax.Array) -> jax.Array:
    for _ in range(LAYERS):
      seq = layers.GRU(layers.GRUWeights(FEATURES), unroll=self.unroll)(seq)
    return seq


def median_seconds(fn: Callable[[], Any], steps: int, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    tic = time.perf_counter()
    for _ in range(steps):
      out = fn()
    jax.block_until_ready(out)
    times.append((time.perf_counter() - tic) / steps)
  return statistics.median(times)


def jax_variant(model: nn.Module, seq: np.ndarray, steps: int, repeats: int
                ) -> tuple[float, float]:
  """(seconds per forward + backward, compile seconds)."""
  x = jax.device_put(seq)
  variables = model.init(jax.random.key(0), x)
  grad = jax.jit(jax.grad(lambda v, x: (model.apply(v, x) ** 2).sum(), argnums=(0, 1)))
  tic = time.perf_counter()
  compiled = grad.lower(variables, x).compile()
  compile_s = time.perf_counter() - tic
  jax.block_until_ready(compiled(variables, x))
  return median_seconds(lambda: compiled(variables, x), steps, repeats), compile_s


def torch_variant(seq: np.ndarray, steps: int, repeats: int) -> float | None:
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  device = 'cuda' if torch.cuda.is_available() and jax.default_backend() == 'gpu' else 'cpu'
  gru = torch.nn.GRU(FEATURES, FEATURES, num_layers=LAYERS, batch_first=True).to(device)
  x = torch.from_numpy(seq).to(device).requires_grad_(True)

  def step() -> Any:
    gru.zero_grad(set_to_none=True)
    (gru(x)[0] ** 2).sum().backward()
    return x.grad

  step()
  times = []
  for _ in range(repeats):
    tic = time.perf_counter()
    for _ in range(steps):
      step()
    if device == 'cuda':
      torch.cuda.synchronize()
    times.append((time.perf_counter() - tic) / steps)
  return statistics.median(times)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--batch_sizes', default='1,8,64')
  parser.add_argument('--unrolls', default='1,4', help="unroll values; 'all' unrolls fully "
                      '(slow to compile on CPU)')
  parser.add_argument('--steps', type=int, default=50)
  parser.add_argument('--repeats', type=int, default=5)
  args = parser.parse_args()
  unrolls = [True if u == 'all' else int(u) for u in args.unrolls.split(',')]
  print(f'jax {jax.__version__} on {jax.devices()[0].device_kind}; input (B, {TIME_STEPS}, '
        f'{FEATURES}), {LAYERS} layers; ms per forward + backward (compile s)')
  names = ['per-step'] + [f'hoisted u{"all" if u is True else u}' for u in unrolls] + ['torch']
  print('| B | ' + ' | '.join(names) + ' | per-step / best hoisted |')
  print('|---|' + '---|' * (len(names) + 1))
  for batch in (int(b) for b in args.batch_sizes.split(',')):
    seq = np.random.default_rng(batch).standard_normal((batch, TIME_STEPS, FEATURES),
                                                       np.float32)
    results = [jax_variant(PerStep(), seq, args.steps, args.repeats)]
    results += [jax_variant(Hoisted(u), seq, args.steps, args.repeats) for u in unrolls]
    torch_s = torch_variant(seq, args.steps, args.repeats)
    cells = [f'{1e3 * t:.3f} ({c:.1f})' for t, c in results]
    cells.append('-' if torch_s is None else f'{1e3 * torch_s:.3f}')
    best = min(t for t, _ in results[1:])
    print(f'| {batch} | ' + ' | '.join(cells) + f' | {results[0][0] / best:.2f}x |', flush=True)


if __name__ == '__main__':
  main()
