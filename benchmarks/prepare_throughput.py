"""Data preparation throughput: decode + spectrogram + write, clips/s per core.

  python -m benchmarks.prepare_throughput [--clips=192] [--workers=1,2] [--repeats=2] [--results=PATH]

Generates ``--clips`` 30 s MP3 clips shaped like Spotify previews (44.1 kHz
stereo, music-like: chords, drum hits, noise), then times
``data_prep.build.build_dataset`` on them from a cold cache, each worker
count in a fresh process: the whole build (decode, resample, spectrogram,
per-track cache write, TFDS ArrayRecord write, worker start-up and librosa's
first-call set-up included). Also times each stage on one core, so the slowest
stage is visible, and the machine's own ceiling: the same per-clip work in 1
and in N independent warm processes at once (no build, no pool), which says
how much of a shortfall in scaling is the cores' and how much the build's.
Builds and ceilings run ``--repeats`` times in ABBA order (1 2 2 1) and the
medians are reported: a shared VM's speed can drift by 20% within a run, and
that order keeps the drift from favouring one worker count.
``--results`` appends the Markdown table to a file (benchmarks/RESULTS.md).
Targets (issue 14): at least 15 clips/s per core, and at least 1.8x from 1 to
2 workers.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import io
import multiprocessing
import os
import platform
import shutil
import tempfile
import time

# Per-core numbers: this process (the 1-worker run) single-threaded like the workers.
for _var in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'):
  os.environ.setdefault(_var, '1')

import numpy as np
import soundfile as sf

from crnn_jax.core import audio, malloc
from data_prep import build


def make_clips(folder: str, n: int, seconds: float = 30.0, rate: int = 44_100) -> list[str]:
  rng = np.random.default_rng(0)
  t = np.arange(int(seconds * rate)) / rate
  paths = []
  for i in range(n):
    label = ('a', 'b')[i % 2]
    os.makedirs(os.path.join(folder, label), exist_ok=True)
    root = 110.0 * 2 ** (rng.integers(0, 12) / 12)
    chord = sum(np.sin(2 * np.pi * root * r * t) for r in (1.0, 1.26, 1.5)) * 0.15
    beat = np.zeros_like(t)
    for start in np.arange(0, seconds, 0.5):
      s = int(start * rate)
      n_hit = min(2000, len(t) - s)
      beat[s:s + n_hit] += rng.standard_normal(n_hit) * np.exp(-np.arange(n_hit) / 300) * 0.4
    left = chord + beat + 0.01 * rng.standard_normal(len(t))
    right = chord + 0.8 * beat + 0.01 * rng.standard_normal(len(t))
    path = os.path.join(folder, label, f'{i:04d}.mp3')
    sf.write(path, np.stack([left, right], 1).astype(np.float32), rate, format='MP3')
    paths.append(path)
  return paths


def stage_times(paths: list[str], repeats: int = 5) -> dict[str, float]:
  """Median seconds per clip of each stage of the build's own code path
  (data_prep.decode.compute_track), in this process (one core)."""
  times: dict[str, list[float]] = {'decode+mono+resample': [], 'spectrogram': [], 'save': []}
  audio.spectrogram_image(np.random.default_rng(0).standard_normal(audio.clip_samples())
                          .astype(np.float32))  # warm-up (numba)
  clip = audio.ClipSettings()
  for path in (paths * repeats)[:max(repeats, 1) * 2]:
    t0 = time.perf_counter()
    window = audio.load_clip(path, clip.seconds, clip.position, clip.min_seconds)
    t1 = time.perf_counter()
    image = audio.spectrogram_image(window, clip.seconds)
    t2 = time.perf_counter()
    np.savez(io.BytesIO(), image=image)
    t3 = time.perf_counter()
    for k, v in zip(times, (t1 - t0, t2 - t1, t3 - t2)):
      times[k].append(v)
  return {k: float(np.median(v)) for k, v in times.items()}


def _decode_share(paths: list[str], start_at: float) -> tuple[float, float]:
  """Warm, then from the wall-clock time ``start_at`` decode + spectrogram
  ``paths``; returns (start, end) wall-clock times. Memory is kept as the
  build's decode processes keep it (core.malloc)."""
  malloc.keep_freed_memory()
  audio.spectrogram_image(audio.load_clip(paths[0]))
  time.sleep(max(0.0, start_at - time.time()))
  start = time.time()
  for path in paths:
    audio.spectrogram_image(audio.load_clip(path))
  return start, time.time()


def machine_ceiling(paths: list[str], processes: int) -> float:
  """Clips/s of ``processes`` independent warm processes, each decoding its
  share, all started at the same instant."""
  ctx = multiprocessing.get_context('spawn')
  start_at = time.time() + 5.0 + 2.0 * processes  # after every process is warm
  with concurrent.futures.ProcessPoolExecutor(processes, mp_context=ctx) as pool:
    spans = list(pool.map(_decode_share, [paths[i::processes] for i in range(processes)],
                          [start_at] * processes))
  return len(paths) / (max(e for _, e in spans) - min(s for s, _ in spans))


def _build(lib: str, out: str, workers: int) -> tuple[float, float, int]:
  t0 = time.perf_counter()
  summary = build.build_dataset(lib, out, 'bench', workers=workers, progress=False,
                                verbose=False)
  total = time.perf_counter() - t0
  return total, summary['decode_seconds'], sum(summary['clips_per_split'].values())


def timed_build(lib: str, out: str, workers: int) -> tuple[float, float, int]:
  """(total s, decode s, clips) of one build in a fresh process, as a user's
  command runs it: every worker count pays librosa's first-call set-up
  (lazy imports, numba caches; ~2 s) in whichever process decodes, none finds
  it done by an earlier run in this one."""
  ctx = multiprocessing.get_context('spawn')
  with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
    return pool.submit(_build, lib, out, workers).result()


def abba(items: list[int], repeats: int) -> list[int]:
  """``items`` ``repeats`` times, every other pass reversed (1 2 2 1 ...): a
  machine whose speed drifts during the run (a shared VM) then biases no item."""
  return [x for r in range(repeats) for x in (items if r % 2 == 0 else items[::-1])]


def run(clips: int, workers: list[int], results: str | None, repeats: int = 2) -> str:
  tmp = tempfile.mkdtemp(prefix='prep_bench_')
  try:
    lib = os.path.join(tmp, 'lib')
    paths = make_clips(lib, clips)
    stages = stage_times(paths)
    builds: dict[int, list[tuple[float, float]]] = {w: [] for w in workers}
    for i, w in enumerate(abba(workers, repeats)):
      total, decode_seconds, n = timed_build(lib, os.path.join(tmp, f'out{i}'), w)
      assert n == clips, (n, clips)
      builds[w].append((total, decode_seconds))
    rows = []
    for w in workers:
      total = float(np.median([t for t, _ in builds[w]]))
      decode_seconds = float(np.median([d for _, d in builds[w]]))
      rows.append((w, total, decode_seconds, clips / total, clips / total / w))
    counts = sorted(set(workers) | {1})
    rates: dict[int, list[float]] = {w: [] for w in counts}
    for w in abba(counts, repeats):
      rates[w].append(machine_ceiling(paths, w))
    ceiling = {w: float(np.median(r)) for w, r in rates.items()}
    load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
    lines = [
        (f'### Data preparation throughput ({datetime.date.today().isoformat()}, '
         f'{platform.processor() or platform.machine()}, {os.cpu_count()} cores, '
         f'load average {load:.1f} at the end)'),
        '',
        (f'{clips} clips of 30 s MP3, 44.1 kHz stereo -> TFDS ArrayRecord, cold cache '
         f'(`python -m benchmarks.prepare_throughput`); medians of {repeats} builds per '
         'worker count, run in ABBA order.'),
        '',
        ('| workers | total s | decode phase s | clips/s | clips/s/core | speed-up | '
         'machine ceiling clips/s | ceiling speed-up |'),
        '|---|---|---|---|---|---|---|---|',
    ]
    base = rows[0][3]
    for w, total, decode, rate, per_core in rows:
      lines.append(f'| {w} | {total:.1f} | {decode:.1f} | {rate:.2f} | {per_core:.2f} | '
                   f'{rate / base:.2f}x | {ceiling[w]:.2f} | {ceiling[w] / ceiling[1]:.2f}x |')
    lines += ['', ('Machine ceiling: decode + spectrogram alone in that many independent warm '
                   'processes started together (no pool, no TFDS write).')]
    per_clip = sum(stages.values())
    lines += ['', 'One core, median per clip: ' + ', '.join(
        f'{k} {1000 * v:.0f} ms' for k, v in stages.items()) +
              f' (total {1000 * per_clip:.0f} ms = {1 / per_clip:.1f} clips/s).', '']
    text = '\n'.join(lines)
    if results:
      with open(results, 'a', encoding='utf-8') as f:
        f.write('\n' + text)
    return text
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--clips', type=int, default=192)
  parser.add_argument('--workers', default='1,2', help='comma-separated worker counts, '
                      "e.g. 1,2,4,8; 'all': 1, 2, 4, ... up to every core")
  parser.add_argument('--repeats', type=int, default=2,
                      help='builds (and ceilings) per worker count, in ABBA order; medians')
  parser.add_argument('--results', default='', help='append the table to this file')
  args = parser.parse_args()
  cores = os.cpu_count() or 1
  workers = ([int(w) for w in args.workers.split(',')] if args.workers != 'all' else
             sorted({min(2 ** k, cores) for k in range(cores.bit_length() + 1)}))
  print(run(args.clips, workers, args.results or None, args.repeats))


if __name__ == '__main__':
  main()
