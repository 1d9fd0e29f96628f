r"""crnn_jax vs the PyTorch port on a GPU: one command, one table.

  python -m benchmarks.bench_gpu                   # CUDA builds of jax and torch installed
  python -m benchmarks.bench_gpu --gru_unroll=1,4,all --json=gpu.json
  python -m benchmarks.bench_gpu --smoke           # CPU, tiny shapes (CI keeps it working)

On a GPU machine without network, ``benchmarks/gpu_run.sh`` (benchmarks/gpu_run.py)
runs this table's children within time budgets, beside the parity check and a
training curve; docs/install.md says how to install the CUDA builds.

Per batch size (default 8, 16, 32, 64, 128, 256), compute dtype (float32;
bfloat16: crnn_jax's ``config.train.dtype``, torch.autocast) and mode (train
step with the optimiser, eval step), both frameworks on the same GPU and the
same uint8 batches (benchmarks/contestants.py):

  clips/s    median of --repeats windows of --steps back-to-back steps, timed
             to the end of the last step on the device (dispatch runs ahead,
             as in training)
  peak MiB   crnn_jax: XLA's buffer assignment of the compiled step
             (arguments + outputs + temporaries); torch: max_memory_allocated
  compile s  crnn_jax: lowering + compiling the step; torch: its first step
             (cuDNN autotuning, ``cudnn.benchmark``; with ``torch.compile``
             the Inductor compilation too)
  GRU share  1 - step time without the recurrent part / with it (the same
             model with the GRU removed; the readout keeps its 1,280 inputs)

The torch contestants (--torch): ``eager`` (NCHW), ``cl`` (channels_last) and
``compiled`` (``torch.compile`` of the NCHW model, no GRU share). Then
crnn_jax's data-parallel train step (``train.Parallel``) on the first 1, 2, 4,
... visible GPUs, --scaling_batch clips per GPU. Each framework and dtype runs
in a process of its own (no shared allocator, no JAX preallocation), printing
each row as it is measured; the table comes at the end, --json keeps every
figure.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks import bench_scaling

ROOT = Path(__file__).resolve().parents[1]
SMOKE = {'batch_sizes': '2', 'frames': 128, 'steps': 1, 'repeats': 1, 'warmup': 0,
         'scaling_devices': '1,2', 'scaling_batch': 2}


# --------------------------------------------------------------------------
# Children: one framework, one dtype, every batch size
# --------------------------------------------------------------------------
def time_steps(steps: Any, mode: str, n: int, repeats: int, warmup: int) -> float:
  """Median seconds per step over ``repeats`` windows of ``n`` steps."""
  fn = steps.train if mode == 'train' else steps.eval
  for _ in range(warmup):
    steps.sync(fn())
  times = []
  for _ in range(repeats):
    tic = time.perf_counter()
    handle = None
    for _ in range(n):
      handle = fn()
    steps.sync(handle)
    times.append((time.perf_counter() - tic) / n)
  return statistics.median(times)


def measure_contestant(name: str, build: Any, args: argparse.Namespace, batch: int,
                       no_gru: bool) -> list[dict[str, Any]]:
  """Rows (train, eval) of one contestant; an error (out of memory) becomes a row."""
  base = {'framework': name, 'batch': batch, 'dtype': args.dtype, 'no_gru': no_gru}
  try:
    steps = build()
    rows = []
    for mode in ('train', 'eval'):
      steps.reset_peak_memory()
      step_s = time_steps(steps, mode, args.steps, args.repeats, args.warmup)
      memory = steps.memory_bytes[mode] or steps.peak_memory()
      rows.append(dict(base, mode=mode, step_s=step_s, clips_s=batch / step_s,
                       compile_s=steps.compile_s[mode], memory_mib=memory and memory / 2**20,
                       flops=steps.flops.get(mode)))
    return rows
  except Exception as e:  # noqa: BLE001  e.g. out of memory at the largest batch
    message = f'{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ""}'
    return [dict(base, mode=mode, error=message) for mode in ('train', 'eval')]


TORCH_VARIANTS = {  # --torch value: (row name, channels_last, torch.compile)
    'eager': ('torch', False, False),
    'cl': ('torch CL', True, False),
    'compiled': ('torch compiled', False, True),
}


def jax_rows(args: argparse.Namespace) -> Iterator[dict[str, Any]]:
  """crnn_jax's rows, batch size by batch size (each row as soon as it is measured)."""
  from benchmarks import contestants  # pylint: disable=import-outside-toplevel  # imports jax

  for batch in _ints(args.batch_sizes):
    images, labels = contestants.make_batch(batch, args.frames)
    for unroll in args.gru_unroll.split(','):
      value = True if unroll == 'all' else int(unroll)
      first = unroll == args.gru_unroll.split(',')[0]  # the ablation has no GRU to unroll
      for no_gru in (False, True) if args.gru_share and first else (False,):
        config = contestants.jax_config(args.dtype, no_gru, value)
        build = functools.partial(contestants.jax_steps, images, labels, config)
        yield from measure_contestant(f'jax u{unroll}', build, args, batch, no_gru)


def torch_rows(args: argparse.Namespace) -> Iterator[dict[str, Any]]:
  """The port's rows: each --torch variant, batch size by batch size."""
  import torch  # pylint: disable=import-outside-toplevel

  from benchmarks import contestants  # pylint: disable=import-outside-toplevel

  device = 'cpu' if args.smoke else 'cuda'
  torch.backends.cudnn.benchmark = True
  for batch in _ints(args.batch_sizes):
    images, labels = contestants.make_batch(batch, args.frames)
    for variant in args.torch.split(','):
      name, channels_last, compiled = TORCH_VARIANTS[variant]
      for no_gru in (False, True) if args.gru_share and not compiled else (False,):
        build = functools.partial(contestants.torch_steps, images, labels, channels_last,
                                  device, args.dtype, no_gru, compiled)
        yield from measure_contestant(name, build, args, batch, no_gru)
        if device == 'cuda':
          torch.cuda.empty_cache()


def environment(args: argparse.Namespace) -> dict[str, Any]:
  import jax  # pylint: disable=import-outside-toplevel

  env = {'date': datetime.date.today().isoformat(), 'host': platform.node(),
         'cpu': f'{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs',
         'jax': jax.__version__, 'jax_devices': [d.device_kind for d in jax.devices()],
         'jax_platform': jax.devices()[0].platform}
  try:
    import torch  # pylint: disable=import-outside-toplevel
    env['torch'] = torch.__version__
    env['torch_cuda'] = torch.version.cuda
    if torch.cuda.is_available():
      env['torch_device'] = torch.cuda.get_device_name(0)
  except ImportError:
    env['torch'] = None
  env['smoke'] = args.smoke
  return env


# --------------------------------------------------------------------------
# The parent: children, scaling, the table
# --------------------------------------------------------------------------
def run_child(args: argparse.Namespace, kind: str, dtype: str = 'float32') -> list[Any]:
  """What a child printed: one JSON value per line (the info dict, or rows)."""
  env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE='false')
  if args.smoke:
    env.update(JAX_PLATFORMS='cpu', CUDA_VISIBLE_DEVICES='')
  argv = [sys.executable, '-m', 'benchmarks.bench_gpu', f'--child={kind}', f'--dtype={dtype}',
          f'--batch_sizes={args.batch_sizes}', f'--frames={args.frames}',
          f'--steps={args.steps}', f'--repeats={args.repeats}', f'--warmup={args.warmup}',
          f'--gru_unroll={args.gru_unroll}', f'--torch={args.torch}',
          '--gru_share' if args.gru_share else '--no-gru_share']
  if args.smoke:
    argv.append('--smoke')
  out = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
  if out.returncode:
    raise RuntimeError(f'{kind} ({dtype}) failed:\n{out.stderr[-4000:]}')
  return [json.loads(line) for line in out.stdout.splitlines() if line.startswith('{')]


def scaling_rows(args: argparse.Namespace, visible: int) -> list[dict[str, Any]]:
  counts = ([int(n) for n in args.scaling_devices.split(',')] if args.scaling_devices
            else [n for n in (1, 2, 4, 8, 16, 32) if n <= visible])
  platform_name = 'cpu' if args.smoke else 'gpu'
  rows = []
  for dtype in args.dtypes.split(','):
    for n in counts:
      r = bench_scaling.run_device_count(n, platform_name, args.scaling_batch * n, args.frames,
                                         max(args.warmup, 1), args.steps * args.repeats, dtype)
      rows.append(r)
  return rows


def _ints(text: str) -> list[int]:
  return [int(x) for x in text.split(',') if x]


def _fmt(value: Any, spec: str) -> str:
  return '-' if value is None else format(value, spec)


def _index(rows: list[dict[str, Any]], no_gru: bool) -> dict[tuple, dict[str, Any]]:
  return {(r['framework'], r['batch'], r['dtype'], r['mode']): r
          for r in rows if r['no_gru'] == no_gru}


def _cells(key: tuple, full: dict, ablated: dict, names: list[str], extra: list[str]
           ) -> list[Any]:
  """One table row: the contestants' figures at (batch, dtype, mode)."""
  found = [full.get((n, *key), {}) for n in names]
  clips = [f.get('clips_s') for f in found]
  best_torch = max((c for c in clips[1:] if c), default=None)
  ratio = f'{clips[0] / best_torch:.2f}x' if clips[0] and best_torch else '-'
  shares = []
  for name, f in zip(names, found):
    a = ablated.get((name, *key), {})
    shares.append(f'{1 - a["step_s"] / f["step_s"]:.0%}' if 'step_s' in a and 'step_s' in f
                  else '-')
  cells = [*key, *(('error' if 'error' in f else '-') if c is None else f'{c:.1f}'
                   for c, f in zip(clips, found)), ratio,
           ' / '.join(_fmt(f.get('memory_mib'), '.0f') for f in found),
           ' / '.join(_fmt(f.get('compile_s'), '.1f') for f in found), ' / '.join(shares)]
  if extra:
    cells.append(' / '.join(_fmt(full.get((n, *key), {}).get('clips_s'), '.1f') for n in extra))
  return cells


def _scaling_cells(scaling: list[dict[str, Any]], width: int) -> list[list[Any]]:
  rows = []
  for r in scaling:
    base = next(b for b in scaling if b['dtype'] == r['dtype'])
    rows.append([r['batch'], r['dtype'],
                 f'train, {r["devices"]} {r["platform"]} device(s), data parallel',
                 f'{r["clips_per_s"]:.1f}', '-', '-',
                 f'{r["clips_per_s"] / base["clips_per_s"]:.2f}x vs {base["devices"]} device(s)'])
    rows[-1] += ['-'] * (width - len(rows[-1]))
  return rows


def table(rows: list[dict[str, Any]], scaling: list[dict[str, Any]]) -> str:
  """One Markdown table: a row per (B, dtype, mode), then the scaling rows; a column
  per torch variant that has rows."""
  full, ablated = _index(rows, False), _index(rows, True)
  frameworks = {r['framework'] for r in rows}
  jax_names = list(dict.fromkeys(r['framework'] for r in rows if r['framework'].startswith('jax')))
  torch_names = [name for name, _, _ in TORCH_VARIANTS.values() if name in frameworks]
  names, extra = (jax_names[:1] or ['jax u1']) + torch_names, jax_names[1:]  # '-' without JAX rows
  short = ' / '.join(['JAX'] + [n.replace('torch ', '') for n in torch_names])
  columns = ['B', 'dtype', 'mode', 'JAX clips/s', *(f'{n} clips/s' for n in torch_names),
             'JAX / best torch', f'peak MiB {short}', f'compile s {short} (1st step)',
             f'GRU share {short}']
  if extra:
    columns.append('JAX clips/s with gru_unroll ' + ' / '.join(n[5:] for n in extra))
  keys = sorted({k[1:] for k in full}, key=lambda k: (k[1], k[2] != 'train', k[0]))
  lines = [columns, ['---'] * len(columns)]
  lines += [_cells(k, full, ablated, names, extra) for k in keys]
  lines += _scaling_cells(scaling, len(columns))
  return '\n'.join('| ' + ' | '.join(str(c) for c in line) + ' |' for line in lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--smoke', action='store_true', help='CPU, tiny shapes: checks it runs')
  parser.add_argument('--batch_sizes', default=None, help='default 8,16,32,64,128,256')
  parser.add_argument('--dtypes', default='float32,bfloat16')
  parser.add_argument('--frames', type=int, default=None, help='default 1292 (30 s)')
  parser.add_argument('--steps', type=int, default=None, help='steps per timed window (10)')
  parser.add_argument('--repeats', type=int, default=None, help='timed windows (5)')
  parser.add_argument('--warmup', type=int, default=None, help='untimed steps (2)')
  parser.add_argument('--gru_unroll', default='1', help="JAX's config.model.gru_unroll "
                      "values, e.g. 1,4,all (the GRU share is measured for the first)")
  parser.add_argument('--gru_share', action=argparse.BooleanOptionalAction, default=True,
                      help='also time both models without their GRU')
  parser.add_argument('--no_torch', action='store_true', help='crnn_jax only')
  parser.add_argument('--torch', default='eager,cl', help='torch variants: eager, cl '
                      '(channels_last), compiled (torch.compile)')
  parser.add_argument('--scaling_devices', default=None,
                      help='device counts (default 1, 2, 4, ... up to all visible)')
  parser.add_argument('--scaling_batch', type=int, default=None, help='clips per device (64)')
  parser.add_argument('--json', default='', help='also write every figure here')
  parser.add_argument('--child', default='', help=argparse.SUPPRESS)
  parser.add_argument('--dtype', default='float32', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  defaults = SMOKE if args.smoke else {
      'batch_sizes': '8,16,32,64,128,256', 'frames': 1292, 'steps': 10, 'repeats': 5,
      'warmup': 2, 'scaling_devices': '', 'scaling_batch': 64}
  for key, value in defaults.items():
    if getattr(args, key) is None:
      setattr(args, key, value)
  return args


def measure_all(args: argparse.Namespace) -> dict[str, Any]:
  env = run_child(args, 'info')[0]
  print(json.dumps(env), flush=True)
  if not args.smoke and env['jax_platform'] != 'gpu':
    sys.exit(f'error: JAX sees no GPU ({env["jax_platform"]}): install the CUDA builds '
             '(docs/install.md) or run --smoke on a CPU')
  with_torch = not args.no_torch and env.get('torch') is not None
  if with_torch and not args.smoke and 'torch_device' not in env:
    print(f'torch {env["torch"]} sees no GPU: crnn_jax only', file=sys.stderr)
    with_torch = False
  results = {'env': env, 'args': vars(args), 'rows': [], 'scaling': []}
  for dtype in args.dtypes.split(','):
    for kind in ('jax', 'torch') if with_torch else ('jax',):
      tic = time.perf_counter()
      new = run_child(args, kind, dtype)
      results['rows'] += new
      print(f'{kind} {dtype}: {time.perf_counter() - tic:.0f} s', file=sys.stderr, flush=True)
      _progress(results, new, args.json)
  results['scaling'] = scaling_rows(args, len(env['jax_devices']))
  return results


def _progress(results: dict[str, Any], new: list[dict[str, Any]], json_path: str) -> None:
  """The new rows on stderr, and the JSON so far: a run cut short keeps them."""
  for r in new:
    figure = f'{r["clips_s"]:.1f} clips/s' if 'clips_s' in r else r['error']
    print(f'  {r["framework"]}{" (no GRU)" if r["no_gru"] else ""} B={r["batch"]} {r["dtype"]} '
          f'{r["mode"]}: {figure}', file=sys.stderr, flush=True)
  if json_path:
    with open(json_path, 'w', encoding='utf-8') as f:
      json.dump(results, f, indent=2)


CHILDREN = {'info': environment, 'jax': jax_rows, 'torch': torch_rows}


def main() -> None:
  args = parse_args()
  if args.child:
    from crnn_jax.core import xla_defaults  # pylint: disable=import-outside-toplevel
    xla_defaults.apply()  # as training's entry points, before jax is imported
    out = CHILDREN[args.child](args)
    for item in [out] if isinstance(out, dict) else out:
      print(json.dumps(item), flush=True)
    return
  results = measure_all(args)
  print(table(results['rows'], results['scaling']))
  if args.json:
    with open(args.json, 'w', encoding='utf-8') as f:
      json.dump(results, f, indent=2)


if __name__ == '__main__':
  main()
