"""XLA settings that make the CRNN fast on CPU, applied by the entry points.

jaxlib 0.10.2 sends CPU convolutions to YNNPACK, whose weight-gradient
convolutions ran ~3.5x slower than its forward ones here; routing them to
Eigen made the train step 15-25% faster (CPU_PERF_NOTES.md cause 3,
benchmarks/RESULTS.md). XLA reads XLA_FLAGS once, when jax starts, so this
must run before jax is imported; a user's own setting of the flag wins.
Set CRNN_JAX_KEEP_XLA_FLAGS=1 to leave XLA_FLAGS untouched.
"""

from __future__ import annotations

import os
import sys

EIGEN_CONVOLUTIONS = '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution'


def apply() -> bool:
  """Adds the defaults to XLA_FLAGS; False when it is too late or declined."""
  if 'jax' in sys.modules or os.environ.get('CRNN_JAX_KEEP_XLA_FLAGS'):
    return False
  flags = os.environ.get('XLA_FLAGS', '')
  if 'xla_cpu_experimental_ynn_fusion_type' not in flags:
    os.environ['XLA_FLAGS'] = f'{flags} {EIGEN_CONVOLUTIONS}'.strip()
  return True
