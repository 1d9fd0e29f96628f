"""Kill training and data preparation at random points; resumed == uninterrupted.

  python -m experiments.fault_injection [--trials=3] [--kills=4] [--seed=0]
                                        [--only=training|build] [--keep=DIR]

A tiny synthetic library (data_prep.demo, 24 clips of 3 s) is built once
without interruption, and a small CRNN trained on it once (3 epochs); those are
the references. Then each trial runs the same command again in a fresh
folder, SIGKILLs it (the whole process group, as the OOM killer or a
scheduler would) at ``--kills`` random points one after another, reruns the
same command after each kill, lets the last run finish, and compares its
result with the reference: for training results.json and metrics.jsonl, for
a build every example (split, label, spectrogram bytes, tabular values) and
the bad-input report.

Kill points are drawn from the phases the commands announce
(points.py): the commands stop at each announced moment
until this process lets them go on, so a kill lands exactly there, or a
random 0-250 ms after it (inside a checkpoint save, which takes longer, or a
validation pass). The phases of a trial are drawn from a seeded random
permutation of all phases, so a few kills already cover checkpoint saves and
evaluation, and are visited in the order the command meets them; the
occurrence within a phase (which batch, which save) and the delay come from
the same seeded generator. A kill whose run ends before reaching its point
does not count. The table says how many kills landed in each phase, and how
many inside a save (an unfinished orbax folder was left).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import glob
import hashlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from data_prep import demo
from experiments.fault_injection import BUILD_PHASES, TRAINING_PHASES

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAX_DELAY_S = 0.25
TIMEOUT_S = 900


@dataclasses.dataclass(frozen=True)
class KillPoint:
  phase: str
  occurrence: int  # 1 = the first time the phase is announced in that run
  delay_s: float  # after letting the command go on from the announcement


@dataclasses.dataclass
class Segment:
  """One run of the command: the phases it announced, and whether it was killed."""
  counts: collections.Counter
  killed_at: KillPoint | None
  returncode: int | None
  output: str


@dataclasses.dataclass
class Target:
  """What is killed: the command's arguments in a given folder, and its result."""
  name: str
  phases: Sequence[str]
  command: Any  # folder -> argv after 'python -m experiments.fault_injection.points'
  result: Any  # folder -> comparable result


def run_segment(argv: list[str], kill: KillPoint | None) -> Segment:
  """Runs ``python -m experiments.fault_injection.points ARGV`` once, killing it at ``kill``."""
  down_r, down_w = os.pipe()  # we -> command: go on
  up_r, up_w = os.pipe()  # command -> we: phase names
  env = dict(os.environ, JAX_PLATFORMS='cpu', CRNN_JAX_FAULT_OUT=str(up_w),
             CRNN_JAX_FAULT_IN=str(down_r))
  env.pop('XLA_FLAGS', None)
  with tempfile.TemporaryFile() as log:
    proc = subprocess.Popen([sys.executable, '-m', 'experiments.fault_injection.points', *argv],
                            cwd=ROOT, env=env, pass_fds=(up_w, down_r), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    os.close(up_w)
    os.close(down_r)
    with os.fdopen(up_r, 'rb') as announcements, os.fdopen(down_w, 'wb', buffering=0) as go_on:
      counts, killed = _follow(proc, announcements, go_on, kill)
    proc.wait()
    log.seek(0)
    return Segment(counts, killed, proc.returncode, log.read().decode(errors='replace'))


def _follow(proc: subprocess.Popen, announcements: Any, go_on: Any, kill: KillPoint | None
            ) -> tuple[collections.Counter, KillPoint | None]:
  """Lets the command past each announced point, and kills it at ``kill``."""
  counts: collections.Counter = collections.Counter()
  deadline = time.time() + TIMEOUT_S
  while True:
    ready, _, _ = select.select([announcements], [], [], 1.0)
    if time.time() > deadline:
      os.killpg(proc.pid, signal.SIGKILL)
      raise TimeoutError(f'{proc.args} did not finish in {TIMEOUT_S} s')
    if not ready:
      continue
    line = announcements.readline()
    if not line:
      return counts, None  # the command ended
    phase = line.decode().strip()
    counts[phase] += 1
    go_on.write(b'.')
    if kill is not None and phase == kill.phase and counts[phase] == kill.occurrence:
      time.sleep(kill.delay_s)
      os.killpg(proc.pid, signal.SIGKILL)
      return counts, kill


def draw_points(rng: np.random.Generator, phases: Sequence[str], counts: collections.Counter,
                kills: int) -> list[KillPoint]:
  """``kills`` points: random phases (all before any repeats), in the order
  the command meets them (a cached decode is not decoded again), each at a
  random occurrence (within the first half of a full run's, so a resumed run
  still reaches it) and delay."""
  order: list[str] = []
  while len(order) < kills:
    order += [phases[i] for i in rng.permutation(len(phases))]
  points = []
  for phase in sorted(order[:kills], key=phases.index):
    last = max(1, (counts[phase] + 1) // 2)
    points.append(KillPoint(phase, int(rng.integers(1, last + 1)),
                            round(float(rng.uniform(0, MAX_DELAY_S)), 3)))
  return points


def run_trial(target: Target, folder: str, points: list[KillPoint]) -> tuple[list[dict], Any]:
  """Kills at each point in turn (a run that ends first just moves on), then
  runs to the end; returns (what each kill hit, the final result)."""
  hits = []
  for point in points:
    segment = run_segment(target.command(folder), point)
    if segment.killed_at is None:
      if segment.returncode != 0:
        raise RuntimeError(f'{target.name} failed:\n{segment.output[-3000:]}')
      continue
    unfinished = glob.glob(os.path.join(folder, '**', '*.orbax-checkpoint-tmp*'), recursive=True)
    hits.append({'phase': point.phase, 'mid_save': bool(unfinished)})
  final = run_segment(target.command(folder), None)
  if final.returncode != 0:
    raise RuntimeError(f'{target.name} did not finish after the kills:\n{final.output[-3000:]}')
  return hits, target.result(folder)


# ---------------------------------------------------------------- the two targets

def library(folder: str) -> str:
  demo.generate_demo_library(folder, seed=0, clips_per_class=6, seconds=3.0)
  return folder


def build_target(audio_dir: str) -> Target:
  def command(folder: str) -> list[str]:
    return ['build', f'--input={audio_dir}', f'--data_dir={folder}', '--name=faults',
            '--clip_seconds=3', '--min_seconds=1', '--workers=1', '--no_progress']

  def result(folder: str) -> dict[str, Any]:
    examples = {}
    for split, source in tfds.data_source('faults', data_dir=folder).items():
      for i in range(len(source)):
        r = source[i]
        examples[r['track_id'].decode()] = (split, int(r['label']), hashlib.sha256(
            r['spectrogram'].tobytes()).hexdigest(), np.asarray(r['tabular']).tolist())
    with open(os.path.join(folder, 'faults_report.csv'), encoding='utf-8') as f:
      return {'examples': examples, 'report': f.read().replace(folder, '<dir>')}
  return Target('build', BUILD_PHASES, command, result)


def training_target(data_dir: str) -> Target:
  def command(folder: str) -> list[str]:
    return ['train', '--config=configs/default.py', f'--workdir={folder}',
            '--config.data.name=faults', f'--config.data.data_dir={data_dir}',
            '--config.train.batch_size=4', '--config.train.eval_batch_size=8',
            '--config.train.num_epochs=3', '--config.train.max_lr=3e-3']

  def result(folder: str) -> dict[str, Any]:
    with open(os.path.join(folder, 'results.json')) as f:
      results = json.load(f)
    with open(os.path.join(folder, 'metrics.jsonl')) as f:
      return {'results': results, 'metrics': f.read()}
  return Target('training', TRAINING_PHASES, command, result)


# ---------------------------------------------------------------- the experiment

def inject(target: Target, work: str, trials: int, kills: int, seed: int) -> dict[str, Any]:
  """Reference run, then ``trials`` killed-and-resumed runs; a summary row."""
  reference_dir = os.path.join(work, f'{target.name}_reference')
  reference = run_segment(target.command(reference_dir), None)
  if reference.returncode != 0:
    raise RuntimeError(f'the uninterrupted {target.name} failed:\n{reference.output[-3000:]}')
  expected = target.result(reference_dir)
  rng = np.random.default_rng(seed)
  hits, equal = [], 0
  for trial in range(trials):
    points = draw_points(rng, target.phases, reference.counts, kills)
    trial_hits, got = run_trial(target, os.path.join(work, f'{target.name}_{trial}'), points)
    hits += trial_hits
    equal += got == expected
    print(f'{target.name} trial {trial + 1}: kills at '
          + ', '.join(f'{p.phase}#{p.occurrence}+{p.delay_s:.3f}s' for p in points)
          + f'; {len(trial_hits)} landed; resumed result '
          + ('equals' if got == expected else 'DIFFERS FROM') + ' the uninterrupted one',
          flush=True)
  return {'target': target.name, 'trials': trials, 'kills': len(hits), 'equal': equal,
          'by_phase': dict(collections.Counter(h['phase'] for h in hits)),
          'mid_save': sum(h['mid_save'] for h in hits)}


def table(rows: list[dict[str, Any]], seed: int) -> str:
  header = f'{"target":<9} {"trials":>6} {"kills":>5}  {"resumed == uninterrupted":>24}'
  lines = [f'fault injection (seed {seed}): SIGKILL at random points, then the same command',
           f'{header}  kills by phase']
  for r in rows:
    phases = ', '.join(f'{k} {v}' for k, v in sorted(r['by_phase'].items()))
    if r['mid_save']:
      phases += f' ({r["mid_save"]} inside an unfinished save)'
    lines.append(f'{r["target"]:<9} {r["trials"]:>6} {r["kills"]:>5}  '
                 f'{str(r["equal"]) + "/" + str(r["trials"]):>24}  {phases}')
  return '\n'.join(lines)


def run(trials: int, kills: int, seed: int, only: str = '', keep: str = '') -> list[dict]:
  work = keep or tempfile.mkdtemp(prefix='crnn_jax_faults_')
  try:
    audio_dir = library(os.path.join(work, 'audio'))
    rows = []
    if only in ('', 'build'):
      rows.append(inject(build_target(audio_dir), work, trials, kills, seed))
    if only in ('', 'training'):
      data_dir = os.path.join(work, 'build_reference')
      if not os.path.isdir(data_dir):
        run_segment(build_target(audio_dir).command(data_dir), None)
      rows.append(inject(training_target(data_dir), work, trials, kills, seed))
    print(table(rows, seed), flush=True)
    return rows
  finally:
    if not keep:
      shutil.rmtree(work, ignore_errors=True)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--trials', type=int, default=3)
  parser.add_argument('--kills', type=int, default=4, help='kill points per trial')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--only', choices=('', 'training', 'build'), default='')
  parser.add_argument('--keep', default='', help='work in this folder and keep it')
  args = parser.parse_args()
  rows = run(args.trials, args.kills, args.seed, args.only, args.keep)
  sys.exit(0 if all(r['equal'] == r['trials'] for r in rows) else 1)


if __name__ == '__main__':
  main()
