r"""The wheels a lent GPU machine lacks for benchmarks/gpu_run.py, for its
Python (cp312, manylinux x86-64), into an ignored folder that travels with the tree.

  python -m benchmarks.build_wheelhouse            # -> .whl/ (network needed here, not there)

What the GPU run imports beyond the machine's image (benchmarks/gpu_image.py):
the project's pins of NEEDED, and whatever those need that the image does not
hold, as pip resolves them for that machine's Python and platform. Wheels of
other versions or packages in the folder are removed (two versions of one
package stop the install there). Fails when the working tree that travels plus
the wheels reach MAX_MIB.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import parse_wheel_filename

from benchmarks import gpu_image

ROOT = Path(__file__).resolve().parents[1]
WHEELHOUSE = ROOT / '.whl'
# What benchmarks/gpu_run.py imports that the image lacks: ml_collections (the
# configs) and the audio stack that crnn_jax.core.audio loads with the train state.
NEEDED = ('ml-collections', 'librosa', 'soundfile', 'soxr')
MAX_MIB = 60  # the tree and the wheels travel together; the device tool takes 64 MiB


def pins(names: tuple[str, ...] = NEEDED) -> list[str]:
  """``name==version`` for each name, as pyproject.toml pins it."""
  with open(ROOT / 'pyproject.toml', 'rb') as f:
    declared = {gpu_image.normalized(Requirement(line).name): line
                for line in tomllib.load(f)['project']['dependencies']}
  return [declared[gpu_image.normalized(n)].split('#')[0].strip() for n in names]


def _platform_flags() -> list[str]:
  flags = ['--only-binary=:all:', '--python-version', gpu_image.PYTHON, '--implementation', 'cp',
           '--abi', f'cp{gpu_image.PYTHON.replace(".", "")}']
  for platform in gpu_image.PLATFORMS:
    flags += ['--platform', platform]
  return flags


def missing(requirements: list[str]) -> dict[str, str]:
  """name -> version of what ``requirements`` install on that machine's Python,
  less what its image holds (pip's resolver, no wheels downloaded)."""
  with tempfile.TemporaryDirectory() as tmp:
    report = Path(tmp) / 'report.json'
    subprocess.run([sys.executable, '-m', 'pip', 'install', '--dry-run', '--ignore-installed',
                    '--quiet', '--report', str(report), '--target', str(Path(tmp) / 'target'),
                    *_platform_flags(), *requirements], check=True)
    installs = json.loads(report.read_text())['install']
  found = {gpu_image.normalized(i['metadata']['name']): i['metadata']['version']
           for i in installs}
  return {name: version for name, version in sorted(found.items())
          if not gpu_image.on_image(name)}


def download(wanted: dict[str, str], wheelhouse: Path) -> None:
  """Exactly the wanted wheels in ``wheelhouse``: others removed, absent ones fetched."""
  wheelhouse.mkdir(exist_ok=True)
  for wheel in wheelhouse.glob('*.whl'):
    name, version, _, _ = parse_wheel_filename(wheel.name)
    if wanted.get(gpu_image.normalized(name)) != str(version):
      wheel.unlink()
  subprocess.run([sys.executable, '-m', 'pip', 'download', '--quiet', '--no-deps',
                  '--dest', str(wheelhouse), *_platform_flags(),
                  *(f'{name}=={version}' for name, version in wanted.items())], check=True)


def travelling_mib(wheelhouse: Path) -> tuple[float, float]:
  """(MiB of the working tree that travels: tracked and untracked-not-ignored files,
  MiB of the wheels)."""
  listed = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'],
                          cwd=ROOT, capture_output=True, check=True).stdout.split(b'\0')
  tree = sum((ROOT / p.decode()).stat().st_size for p in listed
             if p and (ROOT / p.decode()).is_file())
  wheels = sum(w.stat().st_size for w in wheelhouse.glob('*.whl'))
  return tree / 2**20, wheels / 2**20


def build(wheelhouse: Path = WHEELHOUSE) -> list[str]:
  """Fills ``wheelhouse``; returns its wheels' names."""
  wanted = missing(pins())
  download(wanted, wheelhouse)
  tree, wheels = travelling_mib(wheelhouse)
  names = sorted(w.name for w in wheelhouse.glob('*.whl'))
  print(f'{len(names)} wheels, {wheels:.1f} MiB, in {wheelhouse}; the tree: {tree:.1f} MiB')
  if tree + wheels >= MAX_MIB:
    sys.exit(f'error: the tree and the wheels come to {tree + wheels:.1f} MiB, '
             f'over the {MAX_MIB} MiB that may travel')
  return names


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--wheelhouse', default=str(WHEELHOUSE))
  args = parser.parse_args()
  for name in build(Path(args.wheelhouse)):
    print(' ', name)


if __name__ == '__main__':
  main()
