r"""Train / eval throughput of the reference CRNN: crnn_jax vs the PyTorch port.

  python -m benchmarks.bench_train                      # B = 1, 8, 32, 64
  python -m benchmarks.bench_train --batch_sizes=1,8 --steps=3 --json=out.json

Same architecture (the genre model), same inputs, same optimiser recipe, one
process; per batch size the frameworks take turns step by step (JAX, torch
default NCHW, torch channels_last, JAX, ...), so machine load drifts hit all
alike; each figure is the median of ``--steps`` timed steps after
``--warmup`` untimed ones. JAX runs ``crnn_jax.train.steps.train_step`` /
``eval_step`` as training does (jit, donated state, uint8 input converted on
the device); torch runs crnn_jax/reference/torch_model.py with fastai's AdamW
(benchmarks/contestants.py builds both). ``--dtypes=float32,bfloat16`` adds
bfloat16 rows: crnn_jax's ``config.train.dtype`` and ``torch.autocast``. The
XLA flags are the ones training uses (crnn_jax/core/xla_defaults.py).

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
import json
import os
import platform
import statistics
import threading
import time
from typing import Any, Self

from crnn_jax.core import xla_defaults

xla_defaults.apply()  # the XLA flags training runs with, before jax is imported

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
def contestants_at(batch: int, frames: int, dtype: str, torch_too: bool
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
  """name -> Steps (benchmarks/contestants.py) for one batch size and dtype."""
  from benchmarks import contestants  # pylint: disable=import-outside-toplevel  # after XLA_FLAGS

  images, labels = contestants.make_batch(batch, frames)
  steps = {'jax': contestants.jax_steps(images, labels, contestants.jax_config(dtype))}
  if torch_too:
    for name, channels_last in (('torch', False), ('torch_cl', True)):
      steps[name] = contestants.torch_steps(images, labels, channels_last, dtype=dtype)
  return steps, steps['jax']


def time_interleaved(steps: dict[str, Any], mode: str, warmup: int, timed: int
                     ) -> tuple[dict[str, list[float]], dict[str, int]]:
  """The contestants take turns step by step; per contestant the timed steps and
  the largest RSS rise."""
  times: dict[str, list[float]] = {k: [] for k in steps}
  peaks: dict[str, int] = {k: 0 for k in steps}
  for i in range(warmup + timed):
    for name, s in steps.items():
      fn = s.train if mode == 'train' else s.eval
      with PeakRss() as mem:
        tic = time.perf_counter()
        s.sync(fn())
        elapsed = time.perf_counter() - tic
      if i >= warmup:
        times[name].append(elapsed)
        peaks[name] = max(peaks[name], mem.peak)
  return times, peaks


def run(batch_sizes: list[int], frames: int, steps: int, warmup: int, torch_too: bool,
        dtypes: tuple[str, ...] = ('float32',)) -> list[dict[str, Any]]:
  rows = []
  for dtype in dtypes:
    for batch in batch_sizes:
      contestants, jax_steps = contestants_at(batch, frames, dtype, torch_too)
      for mode in ('train', 'eval'):
        times, peaks = time_interleaved(contestants, mode, warmup, steps)
        for name in contestants:
          median = statistics.median(times[name])
          rows.append({
              'batch': batch, 'mode': mode, 'dtype': dtype, 'framework': name,
              'step_s': median, 'clips_s': batch / median,
              'gflop_s': jax_steps.flops[mode] / median / 1e9,
              'peak_mib': peaks[name] / 2**20, 'times_s': times[name],
              'jax_compile_s': jax_steps.compile_s[mode] if name == 'jax' else None,
          })
        line = '  '.join(f'{r["framework"]} {r["clips_s"]:.2f} clips/s'
                         for r in rows[-len(contestants):])
        print(f'B={batch} {dtype} {mode}: {line}', flush=True)
      del contestants, jax_steps
  return rows


def table(rows: list[dict[str, Any]]) -> str:
  out = [('| B | dtype | mode | JAX clips/s | torch clips/s | torch CL clips/s | JAX / best torch '
          '| JAX GFLOP/s | peak MiB JAX / torch / CL | JAX compile s |'),
         '|---|---|---|---|---|---|---|---|---|---|']
  keys = sorted({(r['batch'], r['dtype'], r['mode']) for r in rows},
                key=lambda k: (k[1] != 'float32', k[2] != 'train', k[0]))
  fmt = lambda r, k, f: format(r[k], f) if r else '-'
  for batch, dtype, mode in keys:
    by = {r['framework']: r for r in rows
          if (r['batch'], r['dtype'], r['mode']) == (batch, dtype, mode)}
    j, t, cl = by['jax'], by.get('torch'), by.get('torch_cl')
    best = max((x['clips_s'] for x in (t, cl) if x), default=float('nan'))
    out.append(
        f'| {batch} | {dtype} | {mode} | {j["clips_s"]:.2f} | {fmt(t, "clips_s", ".2f")} | '
        f'{fmt(cl, "clips_s", ".2f")} | {j["clips_s"] / best:.2f}x | {j["gflop_s"]:.1f} | '
        f'{j["peak_mib"]:.0f} / {fmt(t, "peak_mib", ".0f")} / {fmt(cl, "peak_mib", ".0f")} | '
        f'{j["jax_compile_s"]:.1f} |')
  return '\n'.join(out)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch_sizes', default='1,8,32,64')
  parser.add_argument('--dtypes', default='float32',
                      help='float32 and/or bfloat16 (JAX: config.train.dtype; torch: autocast)')
  parser.add_argument('--frames', type=int, default=1292)
  parser.add_argument('--steps', type=int, default=3, help='timed steps per contestant')
  parser.add_argument('--warmup', type=int, default=1)
  parser.add_argument('--no_torch', action='store_true', help='JAX only (no torch installed)')
  parser.add_argument('--json', default='', help='also write every figure here')
  args = parser.parse_args()

  import jax  # pylint: disable=import-outside-toplevel  # after xla_defaults.apply() above
  env = {
      'machine': f'{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs',
      'jax': jax.__version__, 'device': str(jax.devices()[0]),
      'allocator': allocator(), 'XLA_FLAGS': os.environ.get('XLA_FLAGS', ''),
      'GLIBC_TUNABLES': os.environ.get('GLIBC_TUNABLES', ''),
  }
  if not args.no_torch:
    import torch  # pylint: disable=import-outside-toplevel
    env['torch'] = torch.__version__
    env['torch_threads'] = torch.get_num_threads()
  print(json.dumps(env), flush=True)
  rows = run([int(b) for b in args.batch_sizes.split(',')], args.frames, args.steps,
             args.warmup, not args.no_torch, tuple(args.dtypes.split(',')))
  print(table(rows))
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'env': env, 'args': vars(args), 'rows': rows}, f, indent=2)


if __name__ == '__main__':
  main()
