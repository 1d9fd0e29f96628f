r"""The trainer's loop: time per training step, its reads back to the host included.

  python -m benchmarks.bench_loop                            # 128-frame clips, B = 8
  python -m benchmarks.bench_loop --frames=1292 --steps=6    # the reference's 30-s clips
  python -m benchmarks.bench_loop --log_every_steps=1,100 --repeats=3 --json=out.json

Writes a synthetic prepared set (bench_loader's music-like spectrograms, cut to
``--frames``), then runs the real ``train_and_evaluate`` (the reference model,
float32) for ``--epochs`` epochs of ``--steps`` steps, once per value of
``config.log_every_steps``, the values taking turns ``--repeats`` times so that
machine load drifts hit all alike. ``log_every_steps=1`` reads the loss back
after every step, as the trainer did before issue 28.4; larger values leave the
steps in flight between reads. A step's time is an epoch's training time over
its steps, from the loop's first request for a batch to the start of
validation (so the epoch-end read-back is in it); epoch 1 (compilation) is
left out. The table gives the median over the timed epochs with their range,
and each value's ratio to the first one's median.

The same command run with PYTHONPATH on another checkout times that code's
loop (values of ``log_every_steps`` it does not know are ignored there).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import statistics
import tempfile
import time
from collections.abc import Iterator
from typing import Any, Self

from crnn_jax.core import xla_defaults

xla_defaults.apply()  # the XLA flags training runs with, before jax is imported

import jax

from benchmarks import bench_loader
from configs import default
from crnn_jax.data import pipeline
from crnn_jax.train import trainer


class EpochClock:
  """When each epoch's training began and ended, from the trainer's own calls:
  its first request for a batch, and its call that predicts the validation split."""

  def __init__(self):
    self.starts: list[float] = []
    self.ends: list[float] = []
    self._batches, self._predict = pipeline.train_batches, trainer.predict_split

  def __enter__(self) -> Self:
    def batches(*args: Any, **kwargs: Any) -> Iterator[Any]:
      first = True
      for batch in self._batches(*args, **kwargs):
        if first:
          self.starts.append(time.perf_counter())
          first = False
        yield batch

    def predict(run: Any, state: Any, split: str, eval_fn: Any) -> Any:
      if split == 'validation' and len(self.ends) < len(self.starts):
        self.ends.append(time.perf_counter())
      return self._predict(run, state, split, eval_fn)

    pipeline.train_batches, trainer.predict_split = batches, predict
    return self

  def __exit__(self, *exc: object) -> None:
    pipeline.train_batches, trainer.predict_split = self._batches, self._predict

  def epoch_seconds(self) -> list[float]:
    return [end - start for start, end in zip(self.starts, self.ends)]


def one_run(data_dir: str, workdir: str, args: argparse.Namespace, log_every: int
            ) -> list[float]:
  """Seconds per step of each epoch after the first, of one training run."""
  config = default.get_config()
  config.data.name, config.data.data_dir = bench_loader.NAME, data_dir
  config.data.class_names = tuple(bench_loader.CLASSES)
  config.train.batch_size = config.train.eval_batch_size = args.batch
  config.train.num_epochs = args.epochs
  config.log_every_steps = log_every
  with EpochClock() as clock:
    trainer.train_and_evaluate(config, workdir)
  return [s / args.steps for s in clock.epoch_seconds()[1:]]


def table(rows: list[dict[str, Any]]) -> str:
  first = rows[0]['median_s']
  out = ['| log_every_steps | s/step, median (min-max) | clips/s | vs first |', '|---|---|---|---|']
  for r in rows:
    out.append(f'| {r["log_every_steps"]} | {r["median_s"]:.4f} ({min(r["times_s"]):.4f}-'
               f'{max(r["times_s"]):.4f}) | {r["clips_s"]:.1f} | {r["median_s"] / first:.3f}x |')
  return '\n'.join(out)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--frames', type=int, default=128, help='spectrogram frames per clip')
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--steps', type=int, default=24, help='training steps per epoch')
  parser.add_argument('--epochs', type=int, default=3, help='the first is not timed')
  parser.add_argument('--log_every_steps', default='1,100')
  parser.add_argument('--repeats', type=int, default=2)
  parser.add_argument('--json', default='', help='also write every figure here')
  args = parser.parse_args()
  values = [int(v) for v in args.log_every_steps.split(',')]
  env = {'date': datetime.datetime.now(datetime.UTC).isoformat(timespec='minutes'),
         'machine': f'{platform.machine()}, {os.cpu_count()} CPUs',
         'load_average': os.getloadavg(), 'jax': jax.__version__,
         'devices': jax.device_count(), 'trainer': os.path.abspath(trainer.__file__)}
  print(json.dumps(env), flush=True)
  times: dict[int, list[float]] = {v: [] for v in values}
  with tempfile.TemporaryDirectory() as tmp:
    bench_loader.write_synthetic(os.path.join(tmp, 'data'), args.steps * args.batch, args.frames)
    for repeat in range(args.repeats):
      for v in values:
        per_step = one_run(os.path.join(tmp, 'data'), os.path.join(tmp, f'w{repeat}_{v}'), args, v)
        times[v] += per_step
        print(f'log_every_steps={v}: {" ".join(f"{s:.4f}" for s in per_step)} s/step', flush=True)
  rows = [{'log_every_steps': v, 'median_s': statistics.median(times[v]),
           'clips_s': args.batch / statistics.median(times[v]), 'times_s': times[v]}
          for v in values]
  print(table(rows))
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps({'env': env, 'args': vars(args), 'rows': rows},
                                                  indent=2))


if __name__ == '__main__':
  main()
