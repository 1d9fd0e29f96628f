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
Median of --repeats windows of --steps calls each, the variants taking turns
window by window; compile time per variant in brackets.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterator
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


def jax_variant(model: nn.Module, seq: np.ndarray) -> tuple[Callable[[], Any], float]:
  """(one forward + backward, compile seconds)."""
  x = jax.device_put(seq)
  variables = model.init(jax.random.key(0), x)
  grad = jax.jit(jax.grad(lambda v, x: (model.apply(v, x) ** 2).sum(), argnums=(0, 1)))
  tic = time.perf_counter()
  compiled = grad.lower(variables, x).compile()
  compile_s = time.perf_counter() - tic
  return lambda: compiled(variables, x), compile_s


def torch_variant(seq: np.ndarray) -> Callable[[], Any] | None:
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

  return step


def _wait(out: Any) -> None:
  if hasattr(out, 'device') and str(out.device).startswith('cuda'):
    import torch  # pylint: disable=import-outside-toplevel
    torch.cuda.synchronize()
  else:
    jax.block_until_ready(out)


def interleaved_seconds(fns: list[Callable[[], Any]], steps: int, repeats: int) -> list[float]:
  """Median seconds per call of each function; windows of ``steps`` calls taken in
  turns, so load drifts hit all alike."""
  for fn in fns:
    _wait(fn())
  times: list[list[float]] = [[] for _ in fns]
  for _ in range(repeats):
    for fn, out in zip(fns, times):
      tic = time.perf_counter()
      for _ in range(steps):
        result = fn()
      _wait(result)
      out.append((time.perf_counter() - tic) / steps)
  return [statistics.median(t) for t in times]


def measure(batch_sizes: list[int], unrolls: list[Any], steps: int, repeats: int
            ) -> Iterator[dict[str, Any]]:
  """A row per batch size: ms per forward + backward of each variant, compile seconds."""
  for batch in batch_sizes:
    seq = np.random.default_rng(batch).standard_normal((batch, TIME_STEPS, FEATURES),
                                                       np.float32)
    variants = [jax_variant(PerStep(), seq)] + [jax_variant(Hoisted(u), seq) for u in unrolls]
    torch_fn = torch_variant(seq)
    fns = [fn for fn, _ in variants] + ([torch_fn] if torch_fn else [])
    seconds = interleaved_seconds(fns, steps, repeats)
    names = ['per-step'] + [f'hoisted u{"all" if u is True else u}' for u in unrolls]
    yield {'batch': batch, 'device': jax.devices()[0].device_kind,
           'ms': {n: 1e3 * t for n, t in zip(names, seconds)},
           'compile_s': {n: c for n, (_, c) in zip(names, variants)},
           'torch_ms': 1e3 * seconds[-1] if torch_fn else None}


def table(rows: list[dict[str, Any]]) -> str:
  """Markdown: ms (compile s) per variant and batch size."""
  names = list(rows[0]['ms']) if rows else []
  lines = ['| B | ' + ' | '.join(names) + ' | torch | per-step / best hoisted |',
           '|---|' + '---|' * (len(names) + 2)]
  for r in rows:
    cells = [f'{r["ms"][n]:.3f} ({r["compile_s"][n]:.1f})' for n in names]
    torch_ms = '-' if r['torch_ms'] is None else f'{r["torch_ms"]:.3f}'
    best = min(r['ms'][n] for n in names[1:])
    lines.append(f'| {r["batch"]} | ' + ' | '.join(cells) +
                 f' | {torch_ms} | {r["ms"]["per-step"] / best:.2f}x |')
  return '\n'.join(lines)


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
  rows = []
  for row in measure([int(b) for b in args.batch_sizes.split(',')], unrolls, args.steps,
                     args.repeats):
    rows.append(row)
    print(table(rows).splitlines()[-1], flush=True)
  print(table(rows))


if __name__ == '__main__':
  main()
