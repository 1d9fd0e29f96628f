"""The GPU run's pieces where no GPU is: parts cut short by their budgets keep
what they wrote and leave it on disk, parity fails when the weights differ, the
wheelhouse's pins come from pyproject.toml; slow: the
whole command on CPU with torch, and the dress rehearsal in a venv like the GPU
machine's with the network shut."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks import build_wheelhouse, gpu_run, supported_range

ROOT = Path(__file__).resolve().parents[1]


def _child(lines: list[str], then_sleep: float) -> list[str]:
  """A part's process that writes ``lines`` to its --records file, then sleeps."""
  script = textwrap.dedent(f'''
      import sys, time
      with open(sys.argv[1], 'a') as f:
        for line in {lines!r}:
          f.write(line)
          f.flush()
      time.sleep({then_sleep})
  ''')
  return [sys.executable, '-c', script]


def test_a_part_cut_short_keeps_its_complete_records_on_disk(tmp_path):
  report = gpu_run.Report(tmp_path / 'out', {'title': 't', 'command': 'c', 'started': 's',
                                             'smoke': True})
  report.start('slow', 3)
  records = tmp_path / 'slow.jsonl'
  row = {'framework': 'jax u1', 'batch': 8, 'dtype': 'float32', 'mode': 'train', 'no_gru': False,
         'step_s': 0.1, 'clips_s': 80.0, 'compile_s': 1.0, 'memory_mib': 10.0}
  lines = [json.dumps({'kind': 'bench', **row}) + '\n', '{"kind": "env"}\n', '{"kind": "ha']
  tic = time.monotonic()
  status, _ = gpu_run.run_child([*_child(lines, 60), str(records)], dict(os.environ), 3.0,
                                records, lambda new: report.add('slow', new))
  assert status == 'timed out' and time.monotonic() - tic < 30
  on_disk = json.loads((tmp_path / 'out' / 'gpu.json').read_text())  # written as they came
  assert [r['kind'] for r in on_disk['parts']['slow']['records']] == ['bench', 'env']
  assert on_disk['rows'] == [row]  # bench_loader --gpu_json reads these
  markdown = (tmp_path / 'out' / 'gpu.md').read_text()
  assert '| slow | running | - | 3 | 2 | - |' in markdown and '| 8 | float32 | train | 80.0 |' in markdown


def test_a_failed_part_is_reported_and_a_finished_one_is_done(tmp_path):
  records = tmp_path / 'r.jsonl'
  failing = [sys.executable, '-c', 'import sys; sys.exit(3)']
  status, _ = gpu_run.run_child(failing, dict(os.environ), 30, records, lambda new: None)
  assert status == 'failed (exit 3)'
  got = []
  status, _ = gpu_run.run_child([*_child(['{"kind": "env"}\n'], 0), str(records)],
                                dict(os.environ), 30, records, got.extend)
  assert status == 'done' and got == [{'kind': 'env'}]


def test_parts_get_their_budget_or_what_is_left_and_none_when_too_little():
  assert gpu_run.part_timeout(45, 500) == 45
  assert gpu_run.part_timeout(45, 30) == 30
  assert gpu_run.part_timeout(45, gpu_run.MIN_PART_S - 1) is None


def test_a_part_without_time_left_is_not_started(tmp_path):
  args = gpu_run.parse_args(['--smoke', f'--out={tmp_path}'])
  report = gpu_run.Report(tmp_path, {'title': 't', 'command': 'c', 'started': 's',
                                     'smoke': True})
  gpu_run.run_part(gpu_run.PARTS[0], args, report, time.monotonic() + 1, tmp_path)
  assert report.data['parts']['env']['status'].startswith('not started')
  assert report.data['parts']['env']['records'] == []


def test_the_gpu_budgets_fit_the_eight_minute_command():
  assert gpu_run.parse_args([]).budget_s + 30 <= 8 * 60  # 30 s for the wheels' install
  assert sum(p.budget_s for p in gpu_run.PARTS) <= gpu_run.parse_args([]).budget_s


def test_markdown_compares_the_two_training_curves():
  data = {'title': 't', 'command': 'c', 'started': 's', 'smoke': False, 'rows': [], 'parts': {
      'train': {'status': 'done', 'seconds': 1, 'budget_s': 9, 'records': [
          {'kind': 'train', 'platform': 'gpu', 'first_step': 0, 'losses': [1.0, 0.5, 0.25],
           'seconds': 1.0}]},
      'train-cpu': {'status': 'timed out', 'seconds': 9, 'budget_s': 9, 'records': [
          {'kind': 'train', 'platform': 'cpu', 'first_step': 0, 'losses': [1.0, 0.5],
           'seconds': 2.0}]}}}
  text = gpu_run.markdown(data)
  assert '| step | loss, gpu (train) | loss, cpu (train-cpu) |' in text
  assert '| 2 | 0.2500 | - |' in text
  assert 'max |gap| over the first 2 steps: 0.00e+00' in text


def test_parity_fails_when_the_weights_differ():
  """The check compares what each framework computes: the port holding other
  weights than crnn_jax's must fail it, the same weights pass."""
  pytest.importorskip('torch')
  import jax  # pylint: disable=import-outside-toplevel

  from benchmarks import gpu_checks  # pylint: disable=import-outside-toplevel  # sets XLA_FLAGS
  from configs import genres  # pylint: disable=import-outside-toplevel
  from crnn_jax.model import create_model  # pylint: disable=import-outside-toplevel

  model = create_model(genres.get_config().model, 10, 0)
  spec = np.random.default_rng(1).random((2, 128, 128, 1), dtype=np.float32)
  ours = gpu_checks.random_variables(model, spec)
  jax_lp = gpu_checks.jax_log_probs(model, ours, spec, 'highest', jax.devices()[0])
  for seed, ok in ((0, True), (5, False)):
    port = gpu_checks.port_with(gpu_checks.random_variables(model, spec, seed), 128)
    record = gpu_checks.gap_record('x', 'highest', jax_lp,
                                   gpu_checks.torch_log_probs(port, spec, 'highest', 'cpu'))
    assert record['ok'] is ok, record
  data = {'parts': {'parity': {'status': 'done', 'records': [record]}}}
  assert gpu_run.failures(data) == [f'parity x: {record["max_abs"]:.2e} > 0.0001']


def test_the_wheelhouse_carries_the_pins_of_pyproject():
  with open(ROOT / 'pyproject.toml', 'rb') as f:
    declared = supported_range.tomllib.load(f)['project']['dependencies']
  assert build_wheelhouse.pins(('librosa', 'ml_collections')) == [
      line for line in declared if line.split('==')[0] in ('librosa', 'ml-collections')]


@pytest.mark.slow
def test_gpu_run_on_cpu_with_torch(tmp_path):
  """Parity with the port and the torch rows (eager, channels_last, torch.compile),
  in smoke mode with this environment's torch."""
  pytest.importorskip('torch')
  out = subprocess.run([sys.executable, '-m', 'benchmarks.gpu_run', '--smoke', f'--out={tmp_path}',
                        '--parts=parity,torch-f32,compiled-f32'], cwd=ROOT, capture_output=True,
                       text=True, timeout=1500, check=False)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  results = json.loads((tmp_path / 'gpu.json').read_text())
  assert {p['status'] for p in results['parts'].values()} == {'done'}
  parity = [r for r in results['parts']['parity']['records'] if 'torch' in r['pair']]
  assert [r['precision'] for r in parity] == ['highest', 'default'] and parity[0]['ok']
  assert {r['framework'] for r in results['rows'] if 'clips_s' in r} == {
      'torch', 'torch CL', 'torch compiled'}


@pytest.mark.slow
def test_dress_rehearsal_in_a_venv_like_the_gpu_machine(tmp_path):
  """benchmarks/gpu_rehearsal.py: wheelhouse, venv of the image's versions, clean
  clone, network shut, the GPU command in smoke mode (needs PyPI for the venv)."""
  out = subprocess.run([sys.executable, '-m', 'benchmarks.gpu_rehearsal',
                        f'--python={supported_range.find_python("3.12")}', f'--work={tmp_path}'], cwd=ROOT,
                       capture_output=True, text=True, timeout=2400, check=False)
  assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-3000:]
  assert 'rehearsal: passed' in out.stdout and 'network shut' in out.stdout
