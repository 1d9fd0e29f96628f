"""The benchmarks keep working where no GPU is: the GPU benchmark's table from
its rows, and the whole command on CPU with tiny shapes (slow); the preparation
benchmark's alternating order and fresh builds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import bench_gpu, prepare_throughput

ROOT = Path(__file__).resolve().parents[1]


def _row(framework, mode, step_s, no_gru=False, batch=8, **extra):
  return dict(framework=framework, batch=batch, dtype='float32', mode=mode, no_gru=no_gru,
              step_s=step_s, clips_s=batch / step_s, compile_s=1.0, memory_mib=100.0, **extra)


def test_gpu_table_ratios_gru_share_errors_and_scaling():
  rows = [_row('jax u1', 'train', 0.1), _row('jax u1', 'train', 0.075, no_gru=True),
          _row('jax u4', 'train', 0.08),
          _row('torch', 'train', 0.2), _row('torch', 'train', 0.1, no_gru=True),
          {'framework': 'torch CL', 'batch': 8, 'dtype': 'float32', 'mode': 'train',
           'no_gru': False, 'error': 'OutOfMemoryError: CUDA out of memory'}]
  scaling = [{'devices': 1, 'platform': 'gpu', 'batch': 64, 'dtype': 'float32',
              'clips_per_s': 100.0},
             {'devices': 2, 'platform': 'gpu', 'batch': 128, 'dtype': 'float32',
              'clips_per_s': 190.0}]
  lines = bench_gpu.table(rows, scaling).splitlines()
  assert lines[0].startswith('| B | dtype | mode | JAX clips/s | torch clips/s |')
  assert 'gru_unroll 4' in lines[0]
  cells = [c.strip() for c in lines[2].split('|')[1:-1]]
  assert cells[:7] == ['8', 'float32', 'train', '80.0', '40.0', 'error', '2.00x']
  assert cells[9] == '25% / 50% / -'  # 1 - 0.075/0.1, 1 - 0.1/0.2, no figure
  assert cells[10] == '100.0'  # the unroll-4 variant
  assert '1.90x vs 1 device(s)' in lines[4]
  assert len({line.count('|') for line in lines}) == 1


@pytest.mark.slow
def test_gpu_benchmark_runs_on_cpu_with_tiny_shapes(tmp_path):
  """The whole command (children, torch, scaling, table) in --smoke mode."""
  pytest.importorskip('torch')
  out_json = tmp_path / 'gpu.json'
  out = subprocess.run([sys.executable, '-m', 'benchmarks.bench_gpu', '--smoke',
                        '--gru_unroll=1,2', f'--json={out_json}'], cwd=ROOT,
                       capture_output=True, text=True, timeout=1800, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  table = [line for line in out.stdout.splitlines() if line.startswith('|')]
  modes = [(c[1].strip(), c[2].strip()) for c in (line.split('|')[1:] for line in table[2:])]
  for dtype in ('float32', 'bfloat16'):
    assert (dtype, 'train') in modes and (dtype, 'eval') in modes
    assert (dtype, 'train, 2 cpu device(s), data parallel') in modes
  results = json.loads(out_json.read_text())
  frameworks = {r['framework'] for r in results['rows'] if r.get('clips_s', 0) > 0}
  assert frameworks == {'jax u1', 'jax u2', 'torch', 'torch CL'}
  assert not [r for r in results['rows'] if 'error' in r]


def test_prepare_throughput_alternates_worker_counts():
  assert prepare_throughput.abba([1, 2], 3) == [1, 2, 2, 1, 1, 2]
  assert prepare_throughput.abba([1, 2, 4], 1) == [1, 2, 4]


@pytest.mark.slow
def test_prepare_throughput_times_fresh_builds_and_the_machine_ceiling():
  """A fresh process per worker count and the independent-process ceiling,
  on a few tiny clips (the figures themselves are for RESULTS.md, not here)."""
  text = prepare_throughput.run(clips=6, workers=[1, 2], results=None, repeats=2)
  table = [line for line in text.splitlines() if line.startswith('| ')]
  assert table[0].startswith('| workers |') and 'machine ceiling' in table[0]
  assert [row.split('|')[1].strip() for row in table[1:]] == ['1', '2']
  first = [cell.strip() for cell in table[1].split('|')[1:-1]]
  assert first[5] == '1.00x' and first[7] == '1.00x'
  assert all(float(cell) > 0 for cell in first[1:5] + first[6:7])
