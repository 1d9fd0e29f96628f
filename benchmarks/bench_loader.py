r"""The input pipeline alone: ArrayRecord -> grain -> batches on the device.

  python -m benchmarks.bench_loader                         # workers 0, 1, 2; threads 1, 4
  python -m benchmarks.bench_loader --workers=0,2,4,8 --threads=4 --gpu_json=gpu.json

Writes a synthetic data set in the project's format (data_prep.writer: raw
spectrogram images of music-like audio, as a build stores them), then reads
its training split through ``crnn_jax.data.pipeline.train_batches`` (the
trainer's own path: seeded order, decoding, tabular encoding, batching,
grain read-ahead) and puts every batch on the device, as the trainer does.
Per setting of ``config.data.num_workers`` (worker processes; 0: threads of
this process) and ``num_threads``: clips/s after the first batch, and per
worker. Beside it, what the step eats: crnn_jax's float32 train step at the
same batch size on this machine, and what a GPU would need, from
bench_gpu's JSON (``--gpu_json``: the fastest crnn_jax train row at this batch
size) or else from the step's FLOPs at an assumed sustained GPU rate.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import tempfile
import time

from crnn_jax.core import xla_defaults

xla_defaults.apply()  # the XLA flags training runs with, before jax is imported

import jax
import numpy as np

from benchmarks import contestants
from configs import default
from crnn_jax.core import audio
from crnn_jax.data import pipeline, source
from data_prep import writer

NAME = 'loader_bench'
CLASSES = ['a', 'b', 'c', 'd']


def music_like_images(n: int, seed: int = 0) -> list[np.ndarray]:
  """``n`` spectrogram images of chords, drum hits and noise (they compress
  like real ones, unlike uniform noise)."""
  rng = np.random.default_rng(seed)
  t = np.arange(audio.clip_samples()) / audio.SAMPLE_RATE
  images = []
  for _ in range(n):
    root = 110.0 * 2 ** (rng.integers(0, 12) / 12)
    y = sum(np.sin(2 * np.pi * root * r * t) for r in (1.0, 1.26, 1.5)) * 0.15
    hits = (np.sin(2 * np.pi * 2 * t) > 0.99) * rng.standard_normal(len(t)) * 0.3
    y = (y + hits + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
    images.append(audio.spectrogram_image(y))
  return images


def write_synthetic(data_dir: str, clips: int, frames: int | None = None) -> None:
  """``clips`` training examples (and a few for the other splits), 30-s clips
  or their first ``frames`` spectrogram frames."""
  frames = frames or audio.num_frames()
  images = music_like_images(8)
  rng = np.random.default_rng(1)

  def examples(split: str, n: int):
    for i in range(n):
      label = int(rng.integers(len(CLASSES)))
      image = np.roll(images[i % len(images)], int(rng.integers(1000)), axis=1)[:, :frames]
      yield f'{split}{i}', {'spectrogram': image, 'tabular': np.zeros(0, np.float32),
                            'label': label, 'label_set': np.eye(len(CLASSES), dtype=np.uint8)[label],
                            'track_id': f'{split}{i}', 'artist_id': f'{split}{i}'}

  sizes = {'train': clips, 'validation': 4, 'test': 4}
  writer.write_dataset(NAME, data_dir, CLASSES, 0,
                       {s: (lambda s=s, n=n: examples(s, n)) for s, n in sizes.items()},
                       {'tabular_names': []}, frames=frames)


def loader_rate(data_dir: str, batch: int, workers: int, threads: int, batches: int
                ) -> float:
  """Clips/s of the trainer's input path, device transfer included, after batch 1."""
  config = default.get_config()
  config.data.name, config.data.data_dir = NAME, data_dir
  config.data.num_workers, config.data.num_threads = workers, threads
  info = source.load_info(config)
  train = source.open_sources(config)['train']
  order = pipeline.epoch_order(np.zeros(len(train), np.int64), config.seed, 0)
  it = pipeline.train_batches(pipeline.Reader(train, info, config), order, batch)
  jax.block_until_ready(jax.device_put(next(it)))  # worker start-up, first reads
  tic = time.perf_counter()
  n = 0
  for _ in range(batches):
    jax.block_until_ready(jax.device_put(next(it)))
    n += batch
  return n / (time.perf_counter() - tic)


def step_consumption(batch: int) -> tuple[float, float]:
  """(clips/s of crnn_jax's float32 train step here, train FLOPs per clip)."""
  images, labels = contestants.make_batch(batch, audio.num_frames())
  steps = contestants.jax_steps(images, labels, contestants.jax_config())
  steps.sync(steps.train())
  tic = time.perf_counter()
  for _ in range(2):
    steps.sync(steps.train())
  return 2 * batch / (time.perf_counter() - tic), steps.flops['train'] / batch


def gpu_need(gpu_json: str, batch: int, flops_per_clip: float, tflops: float) -> tuple[float, str]:
  """Clips/s a GPU's train step eats: measured (bench_gpu JSON) or estimated."""
  if gpu_json:
    with open(gpu_json, encoding='utf-8') as f:
      rows = json.load(f)['rows']
    rates = [r['clips_s'] for r in rows if r['framework'].startswith('jax') and r['mode'] ==
             'train' and r['batch'] == batch and not r['no_gru'] and 'clips_s' in r]
    if rates:
      return max(rates), f'measured by bench_gpu ({gpu_json})'
  return (tflops * 1e12 / flops_per_clip,
          f'estimated: {flops_per_clip / 1e9:.1f} GFLOP per clip at {tflops:g} TFLOP/s sustained')


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--clips', type=int, default=512, help='training examples written')
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--batches', type=int, default=6, help='timed batches per setting')
  parser.add_argument('--workers', default='0,1,2', help='config.data.num_workers values')
  parser.add_argument('--threads', default='1,4', help='config.data.num_threads values')
  parser.add_argument('--gpu_json', default='', help="bench_gpu's --json output")
  parser.add_argument('--gpu_tflops', type=float, default=100.0,
                      help='sustained GPU rate for the estimate without --gpu_json')
  parser.add_argument('--no_step', action='store_true', help='skip timing the CPU train step')
  args = parser.parse_args()
  tmp = tempfile.mkdtemp(prefix='loader_bench_')
  try:
    write_synthetic(tmp, args.clips)
    rows = []
    for workers in (int(w) for w in args.workers.split(',')):
      for threads in (int(t) for t in args.threads.split(',')):
        rate = loader_rate(tmp, args.batch, workers, threads, args.batches)
        rows.append((workers, threads, rate))
        print(f'workers={workers} threads={threads}: {rate:.1f} clips/s', flush=True)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  if args.no_step:
    cpu_rate, flops = float('nan'), contestants_flops(args.batch)
  else:
    cpu_rate, flops = step_consumption(args.batch)
  need, how = gpu_need(args.gpu_json, args.batch, flops, args.gpu_tflops)
  print(f'{datetime.date.today()}, {platform.processor() or platform.machine()}, '
        f'{os.cpu_count()} CPUs, jax device {jax.devices()[0]}, batch {args.batch}')
  print(f'crnn_jax float32 train step here: {cpu_rate:.1f} clips/s; a GPU: {need:.0f} clips/s '
        f'({how})')
  print('| num_workers | num_threads | loader clips/s | per worker | x CPU train step | '
        'x GPU need |')
  print('|---|---|---|---|---|---|')
  for workers, threads, rate in rows:
    print(f'| {workers} | {threads} | {rate:.1f} | {rate / max(workers, 1):.1f} | '
          f'{rate / cpu_rate:.1f}x | {rate / need:.2f}x |')


def contestants_flops(batch: int) -> float:
  """Train FLOPs per clip from XLA's cost analysis (compiles, does not run)."""
  images, labels = contestants.make_batch(batch, audio.num_frames())
  return contestants.jax_steps(images, labels, contestants.jax_config()).flops['train'] / batch


if __name__ == '__main__':
  main()
