r"""The versions crnn_jax supports: the ranges pyproject.toml declares (``>=low,<=high``),
and where the installed versions lie in them.

  python -m benchmarks.supported_range                 # installed vs supported, a line each
  python -m benchmarks.supported_range --end=highest   # fails unless each is at its upper bound
  python -m benchmarks.supported_range --find_python=3.12   # prints a Python 3.12 found here

CI runs the default suite at both ends of the range (.ci/run); ``--end`` proves
that an environment really is the end it stands for, since pip may resolve to
any version inside a range. benchmarks/gpu_checks.py reports the same lines
for the packages a GPU machine came with.
"""

from __future__ import annotations

import argparse
import glob
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parents[1] / 'pyproject.toml'


def ranges(pyproject: Path = PYPROJECT) -> dict[str, tuple[Version, Version]]:
  """name -> (lowest, highest) for each dependency declared as ``>=low,<=high``."""
  with open(pyproject, 'rb') as f:
    dependencies = tomllib.load(f)['project']['dependencies']
  out = {}
  for line in dependencies:
    requirement = Requirement(line)
    bounds = {s.operator: Version(s.version) for s in requirement.specifier}
    if '>=' in bounds and '<=' in bounds:
      out[requirement.name] = (bounds['>='], bounds['<='])
  return out


def installed(name: str) -> str | None:
  try:
    return importlib.metadata.version(name)
  except importlib.metadata.PackageNotFoundError:
    return None


def placement(name: str, low: Version, high: Version) -> dict[str, Any]:
  """Where the installed version of ``name`` lies: 'lowest', 'highest', 'both ends'
  (a range of one version), 'inside', 'below', 'above' or 'missing'."""
  version = installed(name)
  if version is None:
    where = 'missing'
  else:
    v = Version(version)
    where = ('both ends' if v == low == high else 'lowest' if v == low else 'highest'
             if v == high else 'below' if v < low
             else 'above' if v > high else 'inside')
  return {'package': name, 'installed': version, 'supported': f'{low} - {high}',
          'where': where}


def report() -> list[dict[str, Any]]:
  return [placement(name, low, high) for name, (low, high) in ranges().items()]


def find_python(version: str) -> str:
  """An interpreter of ``version`` (e.g. '3.12') that runs: on the PATH, else pyenv's newest."""
  pyenv = sorted(glob.glob(os.path.expanduser(f'~/.pyenv/versions/{version}.*/bin/python')),
                 reverse=True)
  for candidate in [shutil.which(f'python{version}'), *pyenv]:
    if candidate and subprocess.run([candidate, '-c', ''], capture_output=True,
                                    check=False).returncode == 0:
      return candidate
  sys.exit(f'error: no Python {version} found (PATH, ~/.pyenv)')


def not_at(end: str) -> list[str]:
  """The ranged packages whose installed version is not the ``end`` ('lowest' or
  'highest') of their range."""
  wrong = []
  for name, (low, high) in ranges().items():
    version = installed(name)
    if version is None or Version(version) != (low if end == 'lowest' else high):
      wrong.append(name)
  return wrong


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--end', choices=('lowest', 'highest'), default=None,
                      help='fail unless every ranged package is at this end')
  parser.add_argument('--find_python', default='', help='print an interpreter of this version')
  args = parser.parse_args()
  if args.find_python:
    print(find_python(args.find_python))
    return
  for line in report():
    print(f'{line["package"]} {line["installed"]} (supported {line["supported"]}): '
          f'{line["where"]}')
  wrong = not_at(args.end) if args.end else []
  if wrong:
    sys.exit(f'error: not at the {args.end} end of the supported range: {", ".join(wrong)}')


if __name__ == '__main__':
  main()
