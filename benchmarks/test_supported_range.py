"""The supported range of pyproject.toml, read and placed (CI checks each of its two
environments against an end of it with ``--end``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmarks import supported_range

ROOT = Path(__file__).resolve().parents[1]


def test_supported_range_reads_the_bounds_and_places_a_version(tmp_path):
  pyproject = tmp_path / 'pyproject.toml'
  pyproject.write_text('[project]\ndependencies = ["numpy>=1.0,<=99", "scipy==1.17.1"]\n')
  ranges = supported_range.ranges(pyproject)
  assert list(ranges) == ['numpy']
  assert supported_range.placement('numpy', *ranges['numpy'])['where'] == 'inside'
  assert supported_range.placement('no-such-package', *ranges['numpy'])['where'] == 'missing'
  assert set(supported_range.ranges()) >= {'jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint'}


def test_an_environment_not_at_the_named_end_fails_the_check():
  placements = {line['where'] for line in supported_range.report()}
  end = 'highest' if 'lowest' in placements else 'lowest'  # the end this one is not at
  out = subprocess.run([sys.executable, '-m', 'benchmarks.supported_range', f'--end={end}'],
                       cwd=ROOT, capture_output=True, text=True, check=False)
  assert out.returncode != 0 and f'not at the {end} end' in out.stderr
