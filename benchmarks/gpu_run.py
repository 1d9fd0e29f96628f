r"""One prepared command for a GPU machine: what it has, parity with the PyTorch
port, the benchmark table and a training curve, within a time budget, every
figure kept as it comes.

  bash benchmarks/gpu_run.sh               # on the GPU machine: the wheelhouse, then this
  python -m benchmarks.gpu_run --out=DIR   # where the project's dependencies are installed
  python -m benchmarks.gpu_run --smoke     # CPU, tiny shapes (the dress rehearsal)

The parts run in this order, each in a process of its own
(benchmarks/gpu_checks.py) under its own time budget, cut shorter where the
whole run's budget (--budget_s) ends first; a part that overruns is killed and
keeps what it measured, and the next one starts:

  env           versions (and where they lie in pyproject.toml's supported
                range), devices, driver
  parity        crnn_jax vs the port, same random weights (converted by
                crnn_jax.reference.weights): eval log-probabilities within 1e-4
                at the highest matmul precision; the gap at each framework's
                default precision is reported
  jax-f32 ...   benchmarks/bench_gpu.py's rows: crnn_jax and torch (eager,
                channels_last), float32 and bfloat16, B = 8-256 (B = 64 and
                256 first), train and eval, clips/s, peak memory, compile time,
                GRU share
  train, train-cpu  the demo-sized model for --train_steps steps on synthetic
                batches, on the default backend and on the same machine's CPU
  compiled-f32  the port through torch.compile, where it works
  gru           benchmarks/bench_gru.py: the recurrent part alone, gru_unroll

The CPU curve comes from the same command on the same machine (JAX_PLATFORMS=cpu):
same jax, same initialisation, same batches, so the curves differ by the
backend alone; a curve recorded elsewhere would also differ by jax version and
processor. After each record a part writes, --out's gpu.json (every figure; its
``rows`` are bench_gpu's, for bench_loader --gpu_json) and gpu.md (the tables)
are rewritten, so a run stopped at any point keeps what it measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import bench_gpu

ROOT = Path(__file__).resolve().parents[1]
POLL_S = 1.0  # how often a running part's new records are read and written out
MIN_PART_S = 10.0  # a part is not started with less time than this left
CURVE_STEPS = (0, 1, 2, 5, 10, 20, 50, 100, 150, 200, 250, 299)


@dataclasses.dataclass(frozen=True)
class Part:
  """One part: gpu_checks arguments, seconds on a GPU machine and in --smoke."""
  name: str
  args: tuple[str, ...]
  budget_s: float
  smoke_budget_s: float
  cpu: bool = False  # JAX on the CPU backend even where a GPU is


def _bench(name: str, framework: str, dtype: str, budget_s: float) -> Part:
  return Part(name, ('--part=bench', f'--framework={framework}', f'--dtype={dtype}'), budget_s,
              300)


PARTS = (
    Part('env', ('--part=env',), 20, 120),
    Part('parity', ('--part=parity',), 45, 240),
    _bench('jax-f32', 'jax', 'float32', 75),
    _bench('torch-f32', 'eager,cl', 'float32', 45),
    _bench('jax-bf16', 'jax', 'bfloat16', 75),
    _bench('torch-bf16', 'eager,cl', 'bfloat16', 45),
    Part('train', ('--part=train',), 40, 240),
    Part('train-cpu', ('--part=train',), 50, 240, cpu=True),
    _bench('compiled-f32', 'compiled', 'float32', 35),
    Part('gru', ('--part=gru',), 20, 120),
)


def part_timeout(budget_s: float, left_s: float) -> float | None:
  """Seconds a part may run: its budget, or what is left of the run's; None when
  too little is left to start it."""
  timeout = min(budget_s, left_s)
  return timeout if timeout >= MIN_PART_S else None


# --------------------------------------------------------------------------
# Running a part
# --------------------------------------------------------------------------
def run_child(argv: list[str], env: dict[str, str], timeout_s: float, records: Path,
              on_records: Callable[[list[dict[str, Any]]], None]) -> tuple[str, str]:
  """Runs one part's process: (status, the end of its stderr). ``on_records``
  gets the records the child appends to ``records`` while it runs; at
  ``timeout_s`` the child's process group is killed."""
  log = records.with_suffix('.log')
  with open(log, 'wb') as err:
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err,
                            start_new_session=True)
  start, seen, status = time.monotonic(), 0, None
  while status is None:
    try:
      code = proc.wait(timeout=POLL_S)
      status = 'done' if code == 0 else f'failed (exit {code})'
    except subprocess.TimeoutExpired:
      if time.monotonic() - start >= timeout_s:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        status = 'timed out'
    seen = _read_new(records, seen, on_records)
  return status, log.read_text(encoding='utf-8', errors='replace')[-3000:]


def _read_new(records: Path, seen: int, on_records: Callable[[list], None]) -> int:
  """Hands on the complete lines after the first ``seen``; returns the new count."""
  if not records.exists():
    return seen
  lines = records.read_text(encoding='utf-8').split('\n')[:-1]  # the last may be partial
  if len(lines) > seen:
    on_records([json.loads(line) for line in lines[seen:]])
  return len(lines)


def child_env(part: Part, smoke: bool) -> dict[str, str]:
  env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE='false', PYTHONUNBUFFERED='1')
  if smoke or part.cpu:
    env['JAX_PLATFORMS'] = 'cpu'
  if smoke:
    env['CUDA_VISIBLE_DEVICES'] = ''
  return env


def run_part(part: Part, args: argparse.Namespace, report: Report, deadline: float,
             scratch: Path) -> None:
  """One part, its records and status written out as they come."""
  budget = part.smoke_budget_s if args.smoke else part.budget_s
  timeout = part_timeout(budget, deadline - time.monotonic())
  entry = report.start(part.name, budget)
  if timeout is None:
    entry['status'] = 'not started: the run\'s time was spent'
    report.flush()
    return
  argv = [sys.executable, '-m', 'benchmarks.gpu_checks', *part.args,
          f'--records={scratch / part.name}.jsonl', f'--steps={args.train_steps}',
          f'--chunk={args.train_chunk}', *(['--smoke'] if args.smoke else [])]
  tic = time.monotonic()
  status, stderr = run_child(argv, child_env(part, args.smoke), timeout,
                             scratch / f'{part.name}.jsonl',
                             lambda new: report.add(part.name, new))
  entry.update(status=status, seconds=round(time.monotonic() - tic, 1))
  if entry['records'] and all(r['kind'] == 'skipped' for r in entry['records']):
    entry['status'] = 'skipped'
  if status.startswith('failed'):
    entry['stderr'] = stderr
  report.flush()
  print(f'{part.name}: {entry["status"]} in {entry["seconds"]} s', flush=True)


# --------------------------------------------------------------------------
# The report: gpu.json and gpu.md, rewritten after every record
# --------------------------------------------------------------------------
class Report:
  """Every record so far, by part; ``flush`` writes both files whole (atomically)."""

  def __init__(self, out: Path, header: dict[str, Any]):
    self.out = out
    self.data: dict[str, Any] = {**header, 'parts': {}, 'rows': []}

  def start(self, name: str, budget_s: float) -> dict[str, Any]:
    entry = {'status': 'running', 'budget_s': budget_s, 'seconds': None, 'records': []}
    self.data['parts'][name] = entry
    return entry

  def add(self, name: str, records: list[dict[str, Any]]) -> None:
    self.data['parts'][name]['records'] += records
    self.data['rows'] += [_row(r) for r in records if r['kind'] == 'bench']
    self.flush()

  def flush(self) -> None:
    self.out.mkdir(parents=True, exist_ok=True)
    for name, text in (('gpu.json', json.dumps(self.data, indent=1)),
                       ('gpu.md', markdown(self.data))):
      tmp = self.out / f'.{name}.tmp'
      tmp.write_text(text + '\n', encoding='utf-8')
      os.replace(tmp, self.out / name)


def _row(record: dict[str, Any]) -> dict[str, Any]:
  return {k: v for k, v in record.items() if k != 'kind'}


def records_of(data: dict[str, Any], kind: str) -> list[dict[str, Any]]:
  return [r for part in data['parts'].values() for r in part['records'] if r['kind'] == kind]


def md_table(columns: list[str], rows: list[list[Any]]) -> str:
  lines = [columns, ['---'] * len(columns), *rows]
  return '\n'.join('| ' + ' | '.join(str(c) for c in line) + ' |' for line in lines)


def markdown(data: dict[str, Any]) -> str:
  """gpu.md: what ran, then a section per kind of finding."""
  parts = [[name, p['status'], p['seconds'] if p['seconds'] is not None else '-',
            p['budget_s'], len(p['records']),
            '; '.join(r['reason'] for r in p['records'] if r['kind'] == 'skipped') or '-']
           for name, p in data['parts'].items()]
  smoke = ' (SMOKE: CPU, tiny shapes; not GPU figures)' if data['smoke'] else ''
  sections = [f'# {data["title"]}', f'`{data["command"]}`, started {data["started"]}{smoke}',
              md_table(['part', 'status', 's', 'budget s', 'records', 'skipped'], parts)]
  for title, render in (('Environment', _env_md), ('Parity', _parity_md),
                        ('Benchmark', _bench_md), ('Training curve', _train_md),
                        ('GRU alone (ms per forward + backward, compile s)', _gru_md)):
    text = render(data)
    if text:
      sections += [f'## {title}', text]
  return '\n\n'.join(sections)


def _env_md(data: dict[str, Any]) -> str:
  env = records_of(data, 'env')
  if not env:
    return ''
  lines = [f'- {k}: {v}' for k, v in env[0].items() if k not in ('kind', 'packages')]
  lines.append('- packages: ' + ', '.join(
      f'{k} {v}' for k, v in env[0].get('packages', {}).items() if v))
  lines += [f'- supported range: {r["package"]} {r["installed"]} ({r["supported"]}): '
            f'{r["where"]}' for r in records_of(data, 'range')]
  return '\n'.join(lines)


def _parity_md(data: dict[str, Any]) -> str:
  rows = [[r['pair'], r['precision'], f'{r["max_abs"]:.2e}', r['tolerance'] or '-',
           {True: 'yes', False: 'NO', None: '-'}[r['ok']], f'{r["same_top1"]:.0%}']
          for r in records_of(data, 'parity')]
  return md_table(['compared', 'matmul precision', 'max abs log-prob gap', 'tolerance',
                   'within', 'same top-1'], rows) if rows else ''


def _bench_md(data: dict[str, Any]) -> str:
  return bench_gpu.table(data['rows'], []) if data['rows'] else ''


def curves(data: dict[str, Any]) -> dict[str, list[float]]:
  """platform -> losses by step, from the train records of each part."""
  out: dict[str, list[float]] = {}
  for name, part in data['parts'].items():
    for r in part['records']:
      if r['kind'] == 'train':
        out.setdefault(f'{r["platform"]} ({name})', []).extend(r['losses'])
  return out


def _train_md(data: dict[str, Any]) -> str:
  found = curves(data)
  if not found:
    return ''
  names = list(found)
  longest = max(len(c) for c in found.values())
  steps = [s for s in CURVE_STEPS if s < longest] + [longest - 1]
  rows = [[s, *(f'{found[n][s]:.4f}' if s < len(found[n]) else '-' for n in names)]
          for s in dict.fromkeys(steps)]
  text = md_table(['step', *(f'loss, {n}' for n in names)], rows)
  if len(names) == 2:
    a, b = found[names[0]], found[names[1]]
    n = min(len(a), len(b))
    gaps = [abs(x - y) for x, y in zip(a[:n], b[:n])]
    tail = max(n // 6, 1)
    text += (f'\n\nmax |gap| over the first {min(n, 10)} steps: {max(gaps[:10]):.2e}; '
             f'over all {n}: {max(gaps):.2e}; mean loss of the last {tail} steps: '
             f'{sum(a[n - tail:n]) / tail:.4f} vs {sum(b[n - tail:n]) / tail:.4f}')
  compiles = [f'{r["platform"]} {r["compile_s"]:.1f} s' for r in records_of(data, 'train_compile')]
  speed = [f'{r["platform"]} {len(r["losses"]) / r["seconds"]:.1f} steps/s'
           for r in records_of(data, 'train')[1:2] + records_of(data, 'train')[-1:]]
  return text + f'\n\ncompile: {", ".join(compiles)}; speed (a chunk): {", ".join(speed)}'


def _gru_md(data: dict[str, Any]) -> str:
  rows = records_of(data, 'gru')
  if not rows:
    return ''
  names = list(rows[0]['ms'])
  body = [[r['batch'], *(f'{r["ms"][n]:.3f} ({r["compile_s"][n]:.1f})' for n in names),
           '-' if r['torch_ms'] is None else f'{r["torch_ms"]:.3f}'] for r in rows]
  return md_table(['B', *names, 'torch'], body)


# --------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--out', default=os.environ.get('OUT') or 'workdirs/gpu_run',
                      help='gpu.json and gpu.md go here (default $OUT)')
  parser.add_argument('--smoke', action='store_true', help='CPU, tiny shapes')
  parser.add_argument('--budget_s', type=float, default=None,
                      help='the whole run (default 450 s; --smoke 1800 s)')
  parser.add_argument('--parts', default=','.join(p.name for p in PARTS),
                      help='which parts, comma-separated')
  parser.add_argument('--train_steps', type=int, default=None, help='default 300 (smoke 12)')
  parser.add_argument('--train_chunk', type=int, default=None, help='default 50 (smoke 4)')
  args = parser.parse_args(argv)
  defaults = ({'budget_s': 1800.0, 'train_steps': 12, 'train_chunk': 4} if args.smoke else
              {'budget_s': 450.0, 'train_steps': 300, 'train_chunk': 50})
  for key, value in defaults.items():
    if getattr(args, key) is None:
      setattr(args, key, value)
  unknown = set(args.parts.split(',')) - {p.name for p in PARTS}
  if unknown:
    parser.error(f'unknown parts {sorted(unknown)}; known: {[p.name for p in PARTS]}')
  return args


def main(argv: list[str] | None = None) -> None:
  args = parse_args(argv)
  deadline = time.monotonic() + args.budget_s
  report = Report(Path(args.out), {
      'title': 'crnn_jax on a GPU machine' + (' (smoke run on CPU)' if args.smoke else ''),
      'command': ' '.join(['python -m benchmarks.gpu_run',
                           *(sys.argv[1:] if argv is None else argv)]),
      'started': datetime.datetime.now().isoformat(timespec='seconds'),
      'smoke': args.smoke, 'budget_s': args.budget_s})
  report.flush()
  wanted = args.parts.split(',')
  with tempfile.TemporaryDirectory(prefix='gpu_run_') as scratch:
    for part in (p for p in PARTS if p.name in wanted):
      run_part(part, args, report, deadline, Path(scratch))
  print(markdown(report.data))
  print(f'\nwritten: {Path(args.out) / "gpu.json"}, {Path(args.out) / "gpu.md"}')
  problems = failures(report.data)
  if problems:
    sys.exit('error: ' + '; '.join(problems))


def failures(data: dict[str, Any]) -> list[str]:
  """Parts that failed and parity outside its tolerance (a part cut short by its
  budget is not a failure: it keeps what it measured)."""
  out = [f'{name} {p["status"]}' for name, p in data['parts'].items()
         if p['status'].startswith('failed')]
  out += [f'parity {r["pair"]}: {r["max_abs"]:.2e} > {r["tolerance"]}'
          for r in records_of(data, 'parity') if r['ok'] is False]
  return out


if __name__ == '__main__':
  main()
