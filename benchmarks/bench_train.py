r"""Train / eval throughput of the reference CRNN: crnn_jax vs the PyTorch port.

  python -m benchmarks.bench_train                      # B = 1, 8, 32, 64
  python -m benchmarks.bench_train --batch_sizes=1,8 --steps=3 --json=out.json

Same architecture (the genre model), same inputs, same optimiser recipe, one
process; per batch size the frameworks take turns step by step (JAX, torch
default NCHW, torch channels_last, JAX, ...), so machine load drifts hit all
alike; each figure is the median of ``--steps`` timed steps after
``--warmup`` untimed ones. JAX runs ``crnn_jax.train.steps.train_step`` /
``eval_step`` as training does (jit, donated state, uint8 input converted on
the device); torch runs benchmarks/torch_reference.py with fastai's AdamW.

Peak memory: a sampler thread reads this process's resident set size every
2 ms; a figure is the largest rise above the RSS just before the step, i.e.
that step's working set (parameters and allocator caches excluded). With
glibc malloc (large buffers are mmapped per allocation and returned on free)
this is close to the step's peak temporaries; a caching allocator (jemalloc)
hides later steps' allocations. The allocator in use is printed.

FLOP/s use XLA's cost analysis of the compiled JAX step for both frameworks
(same model, same arithmetic). See CPU_PERF_NOTES.md for the known levers
(allocator via LD_PRELOAD, XLA_FLAGS).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any, Self

import numpy as np

from crnn_jax.core.xla_defaults import EIGEN_CONVOLUTIONS as EIGEN_CONV_FLAG

PAGE = os.sysconf('SC_PAGE_SIZE')


def rss_bytes() -> int:
  with open('/proc/self/statm') as f:
    return int(f.read().split()[1]) * PAGE


class PeakRss:
  """Largest RSS rise above the level at entry, sampled every 2 ms."""

  def __init__(self):
    self.peak = 0
    self._stop = threading.Event()

  def __enter__(self) -> Self:
    self.base = rss_bytes()
    self._thread = threading.Thread(target=self._run, daemon=True)
    self._thread.start()
    return self

  def _run(self) -> None:
    while not self._stop.is_set():
      self.peak = max(self.peak, rss_bytes() - self.base)
      time.sleep(0.002)

  def __exit__(self, *exc) -> None:
    self._stop.set()
    self._thread.join()
    self.peak = max(self.peak, rss_bytes() - self.base)


def allocator() -> str:
  with open('/proc/self/maps') as f:
    maps = f.read()
  for name in ('jemalloc', 'tcmalloc', 'mimalloc'):
    if name in maps:
      return f'{name} (MALLOC_CONF={os.environ.get("MALLOC_CONF", "")!r})'
  return 'glibc malloc'


# --------------------------------------------------------------------------
# The contestants: each returns (train_step, eval_step), callables of no args
# that run one step and block until it is done.
# --------------------------------------------------------------------------
def jax_contestant(batch: int, frames: int, images: np.ndarray, labels: np.ndarray,
                   stats: dict[str, Any]) -> tuple[Callable[[], None], Callable[[], None]]:
  import jax  # pylint: disable=import-outside-toplevel

  from configs import genres  # pylint: disable=import-outside-toplevel
  from crnn_jax.core import labels  # pylint: disable=import-outside-toplevel
  from crnn_jax.data.info import DataInfo  # pylint: disable=import-outside-toplevel
  from crnn_jax.train import state as state_lib  # pylint: disable=import-outside-toplevel
  from crnn_jax.train import steps  # pylint: disable=import-outside-toplevel

  config = genres.get_config()
  info = DataInfo(name='bench', class_names=tuple(labels.GENRES), num_tabular=0,
                  categorical_encoding='raw', split_sizes={}, frames=frames, metadata={})
  state = state_lib.create_train_state(config, info, jax.random.key(0),
                                       state_lib.make_optimizer(config, 1000 * 10))
  data = jax.device_put({
      'spectrogram': images, 'label': labels, 'tabular': np.zeros((batch, 0), np.float32),
      'label_set': np.eye(len(info.class_names), dtype=np.uint8)[labels],
      'mask': np.ones(batch, np.float32)})
  weights = jax.device_put(np.ones(len(info.class_names), np.float32))

  train_jit = jax.jit(functools.partial(steps.train_step, multilabel=False), donate_argnums=0)
  eval_jit = jax.jit(functools.partial(steps.eval_step, multilabel=False))
  tic = time.perf_counter()
  train_compiled = train_jit.lower(state, data, weights).compile()
  stats['compile_train_s'] = time.perf_counter() - tic
  tic = time.perf_counter()
  eval_compiled = eval_jit.lower(state, data).compile()
  stats['compile_eval_s'] = time.perf_counter() - tic
  for key, compiled in (('train_flops', train_compiled), ('eval_flops', eval_compiled)):
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    stats[key] = float(cost.get('flops', 0.0)) if cost else 0.0
  holder = {'state': state}

  def train_step() -> None:
    holder['state'], metrics = train_compiled(holder['state'], data, weights)
    jax.block_until_ready(metrics['loss'])

  def eval_step() -> None:
    jax.block_until_ready(eval_compiled(holder['state'], data)['logits'])

  return train_step, eval_step


def torch_contestant(batch: int, frames: int, images: np.ndarray, labels: np.ndarray,
                     channels_last: bool) -> tuple[Callable[[], None], Callable[[], None]]:
  import torch  # pylint: disable=import-outside-toplevel
  import torch.nn.functional as F  # pylint: disable=import-outside-toplevel

  from benchmarks import torch_reference as tr  # pylint: disable=import-outside-toplevel

  torch.manual_seed(0)
  model = tr.GenreCRNN(frames=frames)
  x = torch.from_numpy(images.astype(np.float32) / 255.0)[:, None]
  y = torch.from_numpy(labels.astype(np.int64))
  if channels_last:
    model = model.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
  sched = tr.OneCycle(1000 * 10, 1.445e-3)
  opt = tr.FastaiAdamW(model.parameters(), lr=sched.lr, beta1=sched.beta1)

  def train_step() -> None:
    model.train()
    loss = F.nll_loss(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step(sched.lr, sched.beta1)
    sched.on_batch_end()
    float(loss.detach())

  def eval_step() -> None:
    model.eval()
    with torch.no_grad():
      model(x).numpy()

  return train_step, eval_step


# --------------------------------------------------------------------------
def run(batch_sizes: list[int], frames: int, steps: int, warmup: int, torch_too: bool
        ) -> list[dict[str, Any]]:
  rows = []
  for batch in batch_sizes:
    rng = np.random.default_rng(batch)
    images = rng.integers(0, 256, size=(batch, 128, frames), dtype=np.uint8)
    labels = (np.arange(batch) % 10).astype(np.int32)
    jax_stats: dict[str, Any] = {}
    contestants = {'jax': jax_contestant(batch, frames, images, labels, jax_stats)}
    if torch_too:
      contestants['torch'] = torch_contestant(batch, frames, images, labels, False)
      contestants['torch_cl'] = torch_contestant(batch, frames, images, labels, True)
    for mode, index in (('train', 0), ('eval', 1)):
      times: dict[str, list[float]] = {k: [] for k in contestants}
      peaks: dict[str, int] = {k: 0 for k in contestants}
      for i in range(warmup + steps):
        for name, fns in contestants.items():
          with PeakRss() as mem:
            tic = time.perf_counter()
            fns[index]()
            elapsed = time.perf_counter() - tic
          if i >= warmup:
            times[name].append(elapsed)
            peaks[name] = max(peaks[name], mem.peak)
      flops = jax_stats[f'{mode}_flops']
      for name in contestants:
        median = statistics.median(times[name])
        rows.append({
            'batch': batch, 'mode': mode, 'framework': name, 'step_s': median,
            'clips_s': batch / median, 'gflop_s': flops / median / 1e9,
            'peak_mib': peaks[name] / 2**20, 'times_s': times[name],
            'jax_compile_s': jax_stats[f'compile_{mode}_s'] if name == 'jax' else None,
        })
      line = '  '.join(f'{r["framework"]} {r["clips_s"]:.2f} clips/s' for r in rows[-len(contestants):])
      print(f'B={batch} {mode}: {line}', flush=True)
    del contestants
  return rows


def table(rows: list[dict[str, Any]]) -> str:
  out = [('| B | mode | JAX clips/s | torch clips/s | torch CL clips/s | JAX / best torch | '
          'JAX GFLOP/s | peak MiB JAX / torch / CL | JAX compile s |'),
         '|---|---|---|---|---|---|---|---|---|']
  keys = sorted({(r['batch'], r['mode']) for r in rows}, key=lambda k: (k[1] != 'train', k[0]))
  for batch, mode in keys:
    by = {r['framework']: r for r in rows if r['batch'] == batch and r['mode'] == mode}
    j = by['jax']
    t, cl = by.get('torch'), by.get('torch_cl')
    best = max((x['clips_s'] for x in (t, cl) if x), default=float('nan'))
    fmt = lambda r, k, f: format(r[k], f) if r else '-'
    out.append(
        f'| {batch} | {mode} | {j["clips_s"]:.2f} | {fmt(t, "clips_s", ".2f")} | '
        f'{fmt(cl, "clips_s", ".2f")} | {j["clips_s"] / best:.2f}x | {j["gflop_s"]:.1f} | '
        f'{j["peak_mib"]:.0f} / {fmt(t, "peak_mib", ".0f")} / {fmt(cl, "peak_mib", ".0f")} | '
        f'{j["jax_compile_s"]:.1f} |')
  return '\n'.join(out)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch_sizes', default='1,8,32,64')
  parser.add_argument('--frames', type=int, default=1292)
  parser.add_argument('--steps', type=int, default=3, help='timed steps per contestant')
  parser.add_argument('--warmup', type=int, default=1)
  parser.add_argument('--no_torch', action='store_true', help='JAX only (no torch installed)')
  parser.add_argument('--eigen_conv', action='store_true',
                      help=f'add {EIGEN_CONV_FLAG} to XLA_FLAGS (CPU_PERF_NOTES.md cause 3)')
  parser.add_argument('--json', default='', help='also write every figure here')
  args = parser.parse_args()
  if args.eigen_conv and EIGEN_CONV_FLAG not in os.environ.get('XLA_FLAGS', ''):
    # read when jax initialises its backend, so set before importing it
    os.environ['XLA_FLAGS'] = f'{os.environ.get("XLA_FLAGS", "")} {EIGEN_CONV_FLAG}'.strip()

  import jax  # pylint: disable=import-outside-toplevel
  env = {
      'machine': f'{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs',
      'jax': jax.__version__, 'device': str(jax.devices()[0]),
      'allocator': allocator(), 'XLA_FLAGS': os.environ.get('XLA_FLAGS', ''),
  }
  if not args.no_torch:
    import torch  # pylint: disable=import-outside-toplevel
    env['torch'] = torch.__version__
    env['torch_threads'] = torch.get_num_threads()
  print(json.dumps(env), flush=True)
  rows = run([int(b) for b in args.batch_sizes.split(',')], args.frames, args.steps,
             args.warmup, not args.no_torch)
  print(table(rows))
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'env': env, 'args': vars(args), 'rows': rows}, f, indent=2)


if __name__ == '__main__':
  main()
