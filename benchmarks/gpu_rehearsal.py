r"""A dress rehearsal of the GPU run on this machine's CPU: the same command, on a
clean clone plus the wheelhouse, in a venv holding only what the GPU image holds,
with the network shut.

  python -m benchmarks.gpu_rehearsal                 # builds .whl/ first; about 5 min
  python -m benchmarks.gpu_rehearsal --python=/path/to/python3.12 --work=/tmp/rehearsal

1. the wheelhouse (benchmarks/build_wheelhouse.py), as for the GPU machine;
2. a venv of Python 3.12 with the image's jax, jaxlib and numpy
   (benchmarks/gpu_image.py) and flax, optax, orbax-checkpoint of versions
   that go with them (COMPANIONS), CPU builds from PyPI, then every package
   the image lacks removed again; no project install;
3. a clean clone of this repository's HEAD, the wheelhouse copied in;
4. with the network shut (``unshare -n`` where it works, as root here; pip
   ``--no-index`` and no pip configuration either way): ``bash
   benchmarks/gpu_run.sh --smoke``, the GPU machine's command in smoke mode;
5. its gpu.json checked: every part done, the torch parts skipped, parity held.

What it does not cover: torch. PyPI's Linux torch wheels are CUDA builds (2.11.0
for cp312: 506 MiB, plus several GiB of nvidia-* wheels it needs to import), and
the CPU builds live outside PyPI, so the venv has no torch and the run takes
its torch-missing path (parity with the port, the torch and torch.compile
rows: skipped). The torch paths run on the project's own environment
(tests/test_gpu_run.py), with that environment's torch; neither covers CUDA.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import build_wheelhouse, gpu_image, supported_range

ROOT = Path(__file__).resolve().parents[1]
# Releases that go with jax 0.11.2 (2026-09-17) before the image was read (2026-11):
# flax 0.12.10 (2026-09-24) lies inside the supported range; optax and orbax-checkpoint
# have one supported version each.
COMPANIONS = {'flax': '0.12.10', 'optax': '0.2.8', 'orbax-checkpoint': '0.12.8'}
# The image's packages the run imports (their own needs come along, then are checked
# against the image's list).
IMAGE_PICKS = ('chex', 'scipy', 'scikit-learn', 'numba', 'packaging', 'requests', 'absl-py',
               'etils', 'pyyaml', 'msgpack', 'typing-extensions', 'lazy-loader', 'joblib')
TORCH_PARTS = ('torch-f32', 'torch-bf16', 'compiled-f32')


def image_requirements() -> list[str]:
  pinned = {n: gpu_image.IMAGE_VERSIONS[n] for n in ('jax', 'jaxlib', 'numpy')}
  return [f'{n}=={v}' for n, v in {**pinned, **COMPANIONS}.items()] + list(IMAGE_PICKS)


def plain_env() -> dict[str, str]:
  """This environment less what would let the venv see this machine's Python
  setup (PYTHONPATH, pip's settings, JAX and XLA flags)."""
  return {k: v for k, v in os.environ.items()
          if not k.startswith(('PIP_', 'PYTHON', 'JAX_', 'XLA_', 'VIRTUAL_ENV'))}


def make_venv(python: str, venv: Path) -> dict[str, str]:
  """The image's Python packages (network on here); returns name -> version installed."""
  subprocess.run([python, '-m', 'venv', '--clear', str(venv)], check=True)
  pip, env = [str(venv / 'bin' / 'python'), '-m', 'pip'], plain_env()
  subprocess.run([*pip, 'install', '--quiet', *image_requirements()], env=env, check=True)
  listed = json.loads(subprocess.run([*pip, 'list', '--format=json'], capture_output=True,
                                     text=True, env=env, check=True).stdout)
  extra = [p['name'] for p in listed if not gpu_image.on_image(p['name'])]
  if extra:  # pulled in here, absent there: the run must not lean on them
    print(f'removing what the image lacks: {", ".join(extra)}', flush=True)
    subprocess.run([*pip, 'uninstall', '--quiet', '--yes', *extra], env=env, check=True)
  return {gpu_image.normalized(p['name']): p['version'] for p in listed
          if p['name'] not in extra}


def clean_clone(work: Path) -> Path:
  """HEAD of this repository in ``work/repo``, with the wheelhouse beside its files."""
  repo = work / 'repo'
  shutil.rmtree(repo, ignore_errors=True)
  subprocess.run(['git', 'clone', '--quiet', '--no-hardlinks', str(ROOT), str(repo)], check=True)
  shutil.copytree(build_wheelhouse.WHEELHOUSE, repo / '.whl')
  return repo


def network_shut() -> list[str]:
  """``unshare -n`` where this user may make a network namespace, else nothing."""
  works = shutil.which('unshare') and subprocess.run(
      ['unshare', '-n', 'true'], capture_output=True, check=False).returncode == 0
  return ['unshare', '-n'] if works else []


def offline_run(repo: Path, venv: Path, work: Path, prefix: list[str]) -> int:
  """The GPU machine's command, smoke mode: no pip configuration, no user site,
  no PYTHONPATH but the wheels'."""
  env = plain_env()
  env.update(PATH=f'{venv / "bin"}:{env["PATH"]}', PIP_CONFIG_FILE=os.devnull,
             PYTHONNOUSERSITE='1', PYTHON=str(venv / 'bin' / 'python'),
             GPU_RUN_SITE=str(work / 'site'))
  shutil.rmtree(work / 'site', ignore_errors=True)
  command = [*prefix, 'bash', 'benchmarks/gpu_run.sh', '--smoke', f'--out={work / "out"}']
  print('$', ' '.join(command), flush=True)
  return subprocess.run(command, cwd=repo, env=env, check=False).returncode


def verdict(results: dict[str, Any], versions: dict[str, str]) -> list[str]:
  """What went wrong, judged from gpu.json: [] when the rehearsal passed."""
  problems = []
  for name, part in results['parts'].items():
    want = 'skipped' if name in TORCH_PARTS else 'done'
    if part['status'] != want:
      problems.append(f'{name}: {part["status"]} (expected {want})')
  env = next(r for p in results['parts'].values() for r in p['records'] if r['kind'] == 'env')
  for name in ('jax', 'jaxlib', 'numpy'):
    if env['packages'][name] != versions.get(name):
      problems.append(f'{name} {env["packages"][name]} ran, {versions.get(name)} installed')
  parity = [r for p in results['parts'].values() for r in p['records'] if r['kind'] == 'parity']
  if not parity or not all(r['ok'] for r in parity if r['ok'] is not None):
    problems.append(f'parity: {parity}')
  return problems


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--python', default=None, help=f'a Python {gpu_image.PYTHON}')
  parser.add_argument('--work', default='/tmp/crnn_jax_gpu_rehearsal')
  args = parser.parse_args()
  work, tic = Path(args.work), time.monotonic()
  work.mkdir(parents=True, exist_ok=True)
  build_wheelhouse.build()
  versions = make_venv(args.python or supported_range.find_python(gpu_image.PYTHON), work / 'venv')
  repo, prefix = clean_clone(work), network_shut()
  print(f'network: {"shut (unshare -n)" if prefix else "NOT shut (no unshare -n here)"}; '
        f'pip: --no-index, no configuration', flush=True)
  code = offline_run(repo, work / 'venv', work, prefix)
  results = json.loads((work / 'out' / 'gpu.json').read_text())
  problems = verdict(results, versions) + ([f'gpu_run exited {code}'] if code else [])
  print(f'\nrehearsal: {"FAILED: " + "; ".join(problems) if problems else "passed"} in '
        f'{time.monotonic() - tic:.0f} s; network {"shut" if prefix else "open"}; '
        f'{work / "out" / "gpu.md"}')
  sys.exit(1 if problems else 0)


if __name__ == '__main__':
  main()
