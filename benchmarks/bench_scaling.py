r"""Data-parallel scaling of the training step over devices.

  python -m benchmarks.bench_scaling                       # forced CPU devices 1, 2, 4
  python -m benchmarks.bench_scaling --devices=1,2,4,8 --platform=gpu --batch=512

Each device count runs in its own process (XLA reads the forced CPU device
count at start-up; GPUs are limited with CUDA_VISIBLE_DEVICES) through the training code itself: ``train.Parallel`` (a
Mesh over all devices, batch sharded on 'data', state replicated) and
``train.train_step``. The global batch is fixed, so perfect scaling keeps
clips/s constant on shared cores and multiplies it on real devices. Prints a
table; each figure is the median of --steps timed steps after --warmup.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(devices: int, batch: int, frames: int, warmup: int, steps: int,
            dtype: str = 'float32') -> dict:
  """Runs in the child process: times the sharded train step."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from configs import default  # pylint: disable=import-outside-toplevel
  from crnn_jax.data.info import DataInfo  # pylint: disable=import-outside-toplevel
  from crnn_jax.train import parallel as parallel_lib  # pylint: disable=import-outside-toplevel
  from crnn_jax.train import state as state_lib  # pylint: disable=import-outside-toplevel

  config = default.get_config()
  config.train.batch_size = config.train.eval_batch_size = batch
  config.train.dtype = dtype
  info = DataInfo(name='bench', class_names=tuple(str(i) for i in range(10)),
                  num_tabular=0, categorical_encoding='raw',
                  split_sizes={'train': batch}, frames=frames, metadata={})
  parallel = parallel_lib.Parallel(config)
  state = parallel.replicate(state_lib.create_train_state(
      config, info, jax.random.key(0), state_lib.make_optimizer(config, 100)))
  step = parallel.jit_train_step(False)
  weights = parallel.replicate(jax.numpy.ones(10))
  rng = np.random.default_rng(0)
  host = {'spectrogram': rng.integers(0, 256, (batch, 128, frames), dtype=np.uint8),
          'tabular': np.zeros((batch, 0), np.float32),
          'label': rng.integers(0, 10, batch).astype(np.int32),
          'label_set': np.zeros((batch, 10), np.float32)}
  times = []
  for i in range(warmup + steps):
    tic = time.perf_counter()
    state, m = step(state, parallel.shard_batch(host), weights)
    float(m['loss'])  # block on every step, as training does
    if i >= warmup:
      times.append(time.perf_counter() - tic)
  median = statistics.median(times)
  return {'devices': jax.device_count(), 'platform': jax.devices()[0].platform,
          'device_kind': jax.devices()[0].device_kind, 'batch': batch, 'dtype': dtype,
          'step_s': median, 'clips_per_s': batch / median}


def run_device_count(devices: int, platform: str, batch: int, frames: int, warmup: int,
                     steps: int, dtype: str = 'float32') -> dict:
  """``measure`` in a child process that sees ``devices`` devices of ``platform``."""
  env = dict(os.environ)
  if platform == 'cpu':
    env['JAX_PLATFORMS'] = 'cpu'
    env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') +
                        f' --xla_force_host_platform_device_count={devices}').strip()
  else:
    visible = os.environ.get('CUDA_VISIBLE_DEVICES', '')
    ids = visible.split(',') if visible else [str(i) for i in range(devices)]
    env['CUDA_VISIBLE_DEVICES'] = ','.join(ids[:devices])
    env.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
  out = subprocess.run([sys.executable, '-m', 'benchmarks.bench_scaling', f'--child={devices}',
                        f'--batch={batch}', f'--frames={frames}', f'--warmup={warmup}',
                        f'--steps={steps}', f'--dtype={dtype}'], env=env, cwd=ROOT,
                       capture_output=True, text=True, check=False)
  if out.returncode:
    raise RuntimeError(f'bench_scaling child with {devices} device(s) failed:\n{out.stderr[-3000:]}')
  return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--devices', default='1,2,4', help='device counts (forced CPU devices, or '
                      'the first N GPUs)')
  parser.add_argument('--platform', default='cpu', choices=('cpu', 'gpu'))
  parser.add_argument('--batch', type=int, default=16, help='global batch')
  parser.add_argument('--frames', type=int, default=1292)
  parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'))
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--child', type=int, default=0, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(measure(args.child, args.batch, args.frames, args.warmup, args.steps,
                             args.dtype)))
    return
  rows = [run_device_count(int(n), args.platform, args.batch, args.frames, args.warmup,
                           args.steps, args.dtype) for n in args.devices.split(',')]
  base = rows[0]['clips_per_s']
  print(f'| devices | platform | global batch | step s | clips/s | vs {rows[0]["devices"]} device |')
  print('|---|---|---|---|---|---|')
  for r in rows:
    print(f'| {r["devices"]} | {r["platform"]} ({r["device_kind"]}) | {r["batch"]} | '
          f'{r["step_s"]:.3f} | {r["clips_per_s"]:.1f} | {r["clips_per_s"] / base:.2f}x |')


if __name__ == '__main__':
  main()
