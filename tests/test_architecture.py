"""The layout's rules, checked: import-linter's contracts (pyproject.toml) hold,
and a wrong arrow breaks them; no long functions; imports at the top."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ('crnn_jax', 'data_prep', 'experiments')  # the rules below hold in these
# Imports a function may make itself: optional extras that must not load with the module.
LAZY_ALLOWED = ('torch', 'apache_beam')
MAX_FUNCTION_LINES = 80


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess:
  lint = Path(sys.executable).with_name('lint-imports')
  command = [str(lint)] if lint.exists() else ['lint-imports']
  return subprocess.run([*command, '--no-logo', '--no-cache'], cwd=cwd, capture_output=True,
                        text=True, timeout=300, check=False)


def _sources() -> list[Path]:
  files = [ROOT / 'main.py']
  for package in PACKAGES:
    files += sorted((ROOT / package).rglob('*.py'))
  return files


def test_import_contracts_hold():
  out = _lint_imports(ROOT)
  assert out.returncode == 0, out.stdout + out.stderr
  assert 'broken' not in out.stdout.lower().replace('0 broken', '')


@pytest.mark.parametrize('module, line, contract', [
    ('crnn_jax/model/layers.py', 'import data_prep.records',
     'The library never imports data preparation BROKEN'),
    ('crnn_jax/evaluate/report.py', 'from crnn_jax.train import trainer',
     'Evaluation and inference never import training BROKEN'),
    ('crnn_jax/core/audio.py', 'from crnn_jax.data import schema',
     'crnn_jax\'s stages are layered'),
    ('crnn_jax/inference/model.py', 'from crnn_jax.reference import torch_model',
     'no library module imports it BROKEN'),
    ('data_prep/split.py', 'import experiments.fault_injection',
     'never import the experiments or the benchmarks BROKEN'),
])
def test_a_wrong_arrow_breaks_a_contract(tmp_path, module, line, contract):
  with open(ROOT / 'pyproject.toml', 'rb') as f:
    root_packages = tomllib.load(f)['tool']['importlinter']['root_packages']
  for package in root_packages:
    shutil.copytree(ROOT / package, tmp_path / package,
                    ignore=shutil.ignore_patterns('__pycache__'))
  shutil.copy(ROOT / 'pyproject.toml', tmp_path / 'pyproject.toml')
  with open(tmp_path / module, 'a', encoding='utf-8') as f:
    f.write(f'\n{line}  # a wrong arrow\n')
  out = _lint_imports(tmp_path)
  assert out.returncode != 0
  assert contract in ' '.join(out.stdout.split()), out.stdout


def test_no_function_is_longer_than_a_screen():
  long = []
  for path in _sources():
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        lines = node.end_lineno - node.lineno + 1
        if lines > MAX_FUNCTION_LINES:
          long.append(f'{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)')
  assert not long, long


def test_imports_sit_at_the_top_of_modules():
  inside = []
  for path in _sources():
    for func in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
      if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
        continue
      for node in ast.walk(func):
        if isinstance(node, ast.Import):
          names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
          names = [node.module or '']
        else:
          continue
        if not all(n.split('.')[0] in LAZY_ALLOWED for n in names):
          inside.append(f'{path.relative_to(ROOT)}:{node.lineno} {func.name} imports {names}')
  assert not inside, inside
