"""What the lent GPU machines ('cuda' image: nvidia-h100-x1, nvidia-h200) hold.

Read off such machines in 2026-11 (their package list as of 2026-11-17; the
versions below as sessions saw them). benchmarks/build_wheelhouse.py carries
what the GPU run needs beyond IMAGE_PACKAGES; benchmarks/gpu_rehearsal.py
builds a venv holding IMAGE_VERSIONS and nothing outside IMAGE_PACKAGES. The
image's flax, optax and orbax-checkpoint versions were not recorded:
benchmarks/gpu_run.py prints them.
"""

from __future__ import annotations

import re
from pathlib import Path

PYTHON = '3.12'  # 3.12.3 there
# pip's platform tags for its wheels (x86-64, glibc; pip matches each N exactly).
PLATFORMS = ('manylinux_2_28_x86_64', 'manylinux_2_27_x86_64', 'manylinux_2_17_x86_64',
             'manylinux2014_x86_64', 'manylinux1_x86_64')
IMAGE_VERSIONS = {'jax': '0.11.2', 'jaxlib': '0.11.2', 'numpy': '2.5.2', 'torch': '2.11.0',
                  'onnx': '1.23.1', 'onnxruntime': '1.30.0'}


def normalized(name: str) -> str:
  """A distribution name as pip compares them (PEP 503)."""
  return re.sub(r'[-_.]+', '-', name).lower()


def _read_names(path: Path) -> frozenset[str]:
  lines = path.read_text(encoding='utf-8').splitlines()
  return frozenset(normalized(n) for n in lines if n.strip() and not n.startswith('#'))


IMAGE_PACKAGES = _read_names(Path(__file__).with_name('gpu_image_packages.txt'))


def on_image(name: str) -> bool:
  return normalized(name) in IMAGE_PACKAGES
