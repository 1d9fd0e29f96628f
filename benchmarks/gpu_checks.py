r"""The parts of benchmarks/gpu_run.py, one per process.

  python -m benchmarks.gpu_checks --part=parity --records=FILE [--smoke]

Each part appends its findings to --records as JSON lines, one per finding,
flushed at once, so the parent keeps what a part measured before its time ran
out. Parts:

  env     versions (the supported range of pyproject.toml included), devices
  parity  crnn_jax vs the PyTorch port on the same random weights, converted by
          crnn_jax.reference.weights: eval log-probabilities at the highest
          matmul precision (within 1e-4) and at each framework's default
  bench   benchmarks/bench_gpu.py's rows of one framework and dtype
  gru     benchmarks/bench_gru.py: the recurrent part alone
  train   the demo-sized model (configs/demo.py, 5 s clips, batch 8) for --steps
          steps on synthetic batches through the trainer's jitted step; the
          losses are read back every --chunk steps, not after each step

``--smoke`` shrinks every shape for a CPU (the dress rehearsal). A part that
needs torch reports itself skipped where torch is missing or sees no GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from crnn_jax.core import xla_defaults

xla_defaults.apply()  # the XLA flags training runs with, before jax is imported

import jax
import numpy as np

from benchmarks import bench_gpu, bench_gru, supported_range
from configs import demo, genres
from crnn_jax.core import audio, labels
from crnn_jax.data.info import DataInfo
from crnn_jax.model import create_model
from crnn_jax.reference import weights as reference_weights
from crnn_jax.train import parallel as parallel_lib
from crnn_jax.train import state as state_lib
from crnn_jax.train import steps as steps_lib

Record = dict[str, Any]
PARITY_TOLERANCE = 1e-4  # eval log-probabilities, float32 at the highest precision
PACKAGES = ('jax', 'jaxlib', 'jax-cuda13-plugin', 'jax-cuda13-pjrt', 'jax-cuda12-plugin',
            'jax-cuda12-pjrt', 'flax', 'optax', 'orbax-checkpoint', 'chex', 'numpy', 'scipy',
            'ml-collections', 'librosa', 'soundfile', 'soxr', 'torch', 'triton')
SYNTHETIC_CLASSES = ('lowest bands', 'low bands', 'high bands', 'highest bands')


def torch_or_none(smoke: bool) -> Any:
  """torch where it can run the part: installed, and on a GPU unless smoke."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  return torch if smoke or torch.cuda.is_available() else None


def skipped(reason: str) -> Record:
  return {'kind': 'skipped', 'reason': reason}


# --------------------------------------------------------------------------
# env
# --------------------------------------------------------------------------
def env_records(args: argparse.Namespace) -> Iterator[Record]:
  device = jax.devices()[0]
  stats = device.memory_stats() or {}
  yield {'kind': 'env', 'date': datetime.datetime.now().isoformat(timespec='seconds'),
         'host': platform.node(), 'python': platform.python_version(),
         'cpu': f'{_cpu_model()}, {os.cpu_count()} CPUs',
         'packages': {n: supported_range.installed(n) for n in PACKAGES},
         'jax_backend': jax.default_backend(),
         'jax_devices': [d.device_kind for d in jax.devices()],
         'device_memory_gib': stats.get('bytes_limit', 0) / 2**30 or None,
         'nvidia_smi': _nvidia_smi(), **_torch_env()}
  for line in supported_range.report():
    yield {'kind': 'range', **line}


def _cpu_model() -> str:
  with contextlib.suppress(OSError), open('/proc/cpuinfo', encoding='utf-8') as f:
    for line in f:
      if line.startswith('model name'):
        return line.split(':', 1)[1].strip()
  return platform.processor() or platform.machine()


def _nvidia_smi() -> str | None:
  if not shutil.which('nvidia-smi'):
    return None
  out = subprocess.run(['nvidia-smi', '--query-gpu=name,driver_version,memory.total',
                        '--format=csv,noheader'], capture_output=True, text=True, check=False,
                       timeout=30)
  return out.stdout.strip() or out.stderr.strip()


def _torch_env() -> dict[str, Any]:
  torch = torch_or_none(smoke=True)
  if torch is None:
    return {'torch_device': None}
  cuda = torch.cuda.is_available()
  return {'torch_device': torch.cuda.get_device_name(0) if cuda else 'cpu',
          'torch_cuda': torch.version.cuda, 'cudnn': torch.backends.cudnn.version() if cuda
          else None}


# --------------------------------------------------------------------------
# parity
# --------------------------------------------------------------------------
def random_variables(model: Any, spec: np.ndarray, seed: int = 0) -> dict[str, Any]:
  """The model's own initialisation with random batch-norm statistics and affine
  parameters (their defaults 1/0/0/1 would hide mix-ups), as numpy arrays."""
  variables = jax.device_get(model.init(jax.random.key(seed), spec[:1]))
  rng = np.random.default_rng(seed)
  draws = {'mean': lambda s: rng.normal(0.0, 0.1, s), 'var': lambda s: rng.uniform(0.5, 2.0, s),
           'scale': lambda s: rng.uniform(0.5, 1.5, s), 'bias': lambda s: rng.normal(0.0, 0.1, s)}

  def draw(path: tuple, x: np.ndarray) -> np.ndarray:
    keys = [getattr(p, 'key', '') for p in path]
    if 'bn' in keys and keys[-1] in draws:
      return draws[keys[-1]](x.shape).astype(np.float32)
    return np.asarray(x, np.float32)

  return jax.tree_util.tree_map_with_path(draw, variables)


def jax_log_probs(model: Any, variables: Any, spec: np.ndarray, precision: str,
                  device: jax.Device) -> np.ndarray:
  """Eval-mode log-probabilities on ``device``; precision 'highest' or 'default'."""
  with jax.default_matmul_precision('highest' if precision == 'highest' else None):
    logits = jax.jit(model.apply)(jax.device_put(variables, device), jax.device_put(spec, device))
    return np.asarray(jax.nn.log_softmax(logits), np.float64)


def torch_log_probs(port: Any, spec: np.ndarray, precision: str, device: str) -> np.ndarray:
  """The port's eval log-probabilities; 'highest' turns TF32 off, 'default' leaves
  torch's own settings (cuDNN convolutions may use TF32 on a GPU)."""
  import torch  # pylint: disable=import-outside-toplevel

  flags = (torch.backends.cuda.matmul, torch.backends.cudnn)
  saved = [f.allow_tf32 for f in flags]
  try:
    if precision == 'highest':
      for f in flags:
        f.allow_tf32 = False
    x = torch.from_numpy(np.ascontiguousarray(spec.transpose(0, 3, 1, 2))).to(device)
    with torch.no_grad():
      return port.to(device).eval()(x, None).double().cpu().numpy()
  finally:
    for f, value in zip(flags, saved):
      f.allow_tf32 = value


def gap_record(pair: str, precision: str, ours: np.ndarray, theirs: np.ndarray) -> Record:
  """How far two sets of log-probabilities lie apart; 'ok' only at the highest
  precision, where they must agree within PARITY_TOLERANCE."""
  gap = float(np.abs(ours - theirs).max())
  tolerance = PARITY_TOLERANCE if precision == 'highest' else None
  return {'kind': 'parity', 'pair': pair, 'precision': precision, 'max_abs': gap,
          'tolerance': tolerance, 'ok': None if tolerance is None else gap <= tolerance,
          'same_top1': float((ours.argmax(-1) == theirs.argmax(-1)).mean())}


def port_with(variables: Any, frames: int) -> Any:
  """The PyTorch port holding ``variables``, through the project's conversion."""
  import torch  # pylint: disable=import-outside-toplevel

  from crnn_jax.reference import torch_model  # pylint: disable=import-outside-toplevel

  port = torch_model.GenreCRNN(frames=frames)
  state_dict = reference_weights.to_torch(variables)
  port.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state_dict.items()},
                       strict=True)
  return port


def parity_records(args: argparse.Namespace) -> Iterator[Record]:
  batch, frames = (2, 128) if args.smoke else (8, audio.num_frames())
  model = create_model(genres.get_config().model, len(labels.GENRES), 0)
  spec = np.random.default_rng(1).random((batch, audio.N_MELS, frames, 1), dtype=np.float32)
  variables = random_variables(model, spec)
  device, cpu = jax.devices()[0], jax.devices('cpu')[0]
  ours = {p: jax_log_probs(model, variables, spec, p, device) for p in ('highest', 'default')}
  yield gap_record(f'crnn_jax {device.platform} vs crnn_jax cpu', 'highest', ours['highest'],
                   jax_log_probs(model, variables, spec, 'highest', cpu))
  torch = torch_or_none(args.smoke)
  if torch is None:
    yield skipped('torch is not installed or sees no GPU: no comparison with the port')
    return
  port, torch_device = port_with(variables, frames), 'cpu' if args.smoke else 'cuda'
  for precision in ('highest', 'default'):
    yield gap_record(f'crnn_jax {device.platform} vs torch {torch_device}', precision,
                     ours[precision], torch_log_probs(port, spec, precision, torch_device))


# --------------------------------------------------------------------------
# bench, gru
# --------------------------------------------------------------------------
def bench_records(args: argparse.Namespace) -> Iterator[Record]:
  """bench_gpu's rows for --framework (jax, or a torch variant) and --dtype."""
  is_jax = args.framework == 'jax'
  if not is_jax and torch_or_none(args.smoke) is None:
    yield skipped('torch is not installed or sees no GPU')
    return
  argv = [f'--dtype={args.dtype}'] + (['--smoke'] if args.smoke else [
      '--batch_sizes=64,256,8,128,32,16', '--steps=10', '--repeats=3'])  # the most telling first
  options = bench_gpu.parse_args(argv + ([] if is_jax else [f'--torch={args.framework}']))
  rows = bench_gpu.jax_rows(options) if is_jax else bench_gpu.torch_rows(options)
  for row in rows:
    yield {'kind': 'bench', **row}


def gru_records(args: argparse.Namespace) -> Iterator[Record]:
  batch_sizes, unrolls = ([2], [1]) if args.smoke else ([64, 256], [1, 4, True])
  steps, repeats = (2, 1) if args.smoke else (20, 3)
  for row in bench_gru.measure(batch_sizes, unrolls, steps, repeats):
    yield {'kind': 'gru', **row}


# --------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------
def synthetic_batch(step: int, batch: int, frames: int, seed: int = 0) -> dict[str, np.ndarray]:
  """Noise images with one bright quarter of the mel bands, the label's: learnable,
  and the same on every platform (numpy, seeded by step)."""
  rng = np.random.default_rng((seed, step))
  classes = len(SYNTHETIC_CLASSES)
  labels = rng.integers(0, classes, batch).astype(np.int32)
  quarter = np.arange(audio.N_MELS) * classes // audio.N_MELS
  bright = quarter[None, :, None] == labels[:, None, None]
  images = rng.integers(0, 128, (batch, audio.N_MELS, frames)) + 96 * bright
  return {'spectrogram': images.astype(np.uint8), 'label': labels,
          'tabular': np.zeros((batch, 0), np.float32),
          'label_set': np.eye(classes, dtype=np.uint8)[labels]}


def train_records(args: argparse.Namespace) -> Iterator[Record]:
  config = demo.get_config()
  batch, frames = config.train.batch_size, audio.num_frames(config.data.demo_clip_seconds)
  info = DataInfo(name='synthetic', class_names=SYNTHETIC_CLASSES, num_tabular=0,
                  categorical_encoding='raw', split_sizes={'train': args.steps * batch},
                  frames=frames, metadata={})
  parallel = parallel_lib.Parallel(config)
  state = parallel.replicate(state_lib.create_train_state(
      config, info, jax.random.key(config.seed),
      state_lib.make_optimizer(config, args.steps)))
  weights = parallel.replicate(np.ones(len(SYNTHETIC_CLASSES), np.float32))
  step_fn = parallel.jit_train_step(False, steps_lib.TrainOptions.from_config(config))
  first = parallel.shard_batch(synthetic_batch(0, batch, frames))
  tic = time.perf_counter()
  compiled = step_fn.lower(state, first, weights).compile()
  yield {'kind': 'train_compile', 'platform': jax.default_backend(), 'batch': batch,
         'frames': frames, 'compile_s': time.perf_counter() - tic}
  yield from _train_loop(compiled, state, weights, parallel, args, (batch, frames))


def _train_loop(step_fn: Callable, state: Any, weights: Any, parallel: Any,
                args: argparse.Namespace, shape: tuple[int, int]) -> Iterator[Record]:
  """Steps dispatched ahead; the losses of each chunk read back together."""
  pending, start, tic = [], 0, time.perf_counter()
  for step in range(args.steps):
    state, metrics = step_fn(state, parallel.shard_batch(synthetic_batch(step, *shape)), weights)
    pending.append(metrics['loss'])
    if len(pending) == args.chunk or step == args.steps - 1:
      losses = [float(x) for x in jax.device_get(pending)]
      yield {'kind': 'train', 'platform': jax.default_backend(), 'first_step': start,
             'losses': losses, 'seconds': time.perf_counter() - tic}
      pending, start, tic = [], step + 1, time.perf_counter()


PARTS = {'env': env_records, 'parity': parity_records, 'bench': bench_records,
         'gru': gru_records, 'train': train_records}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--part', required=True, choices=sorted(PARTS))
  parser.add_argument('--records', required=True, help='JSON lines are appended here')
  parser.add_argument('--smoke', action='store_true', help='tiny shapes, for a CPU')
  parser.add_argument('--framework', default='jax', help="bench: 'jax' or a torch variant "
                      f'({", ".join(bench_gpu.TORCH_VARIANTS)})')
  parser.add_argument('--dtype', default='float32', help='bench: float32 or bfloat16')
  parser.add_argument('--steps', type=int, default=300, help='train: steps')
  parser.add_argument('--chunk', type=int, default=50, help='train: steps per read-back')
  return parser.parse_args(argv)


def main() -> None:
  args = parse_args()
  with open(args.records, 'a', encoding='utf-8') as f:
    for record in PARTS[args.part](args):
      f.write(json.dumps(record) + '\n')
      f.flush()
      print(f'{args.part}: {json.dumps(record)[:200]}', file=sys.stderr, flush=True)


if __name__ == '__main__':
  main()
