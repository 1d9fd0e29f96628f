"""XLA settings that make the CRNN fast on CPU, applied by the entry points.

jaxlib 0.10.2 sends CPU convolutions to YNNPACK, whose weight-gradient
convolutions ran ~3.5x slower than its forward ones here; routing them to
Eigen made the train step 15-25% faster (CPU_PERF_NOTES.md cause 3,
benchmarks/RESULTS.md). XLA reads XLA_FLAGS once, when jax starts, so this
must run before jax is imported; a user's own setting of the flag wins.
Set CRNN_JAX_KEEP_XLA_FLAGS=1 to leave XLA_FLAGS untouched.

Inference programs (the eval step, prediction, embeddings) are compiled with
their own fusion set, through jit's ``compiler_options``: YNNPACK's elementwise
and reduce fusions (batch norm, ReLU and the max pools of eval mode) made the
forward pass about half as fast on this CPU, while the train step gains from
them (benchmarks/RESULTS.md). A user's own choice of fusion types wins there too.
"""

from __future__ import annotations

import os
import sys

FUSION_FLAG = 'xla_cpu_experimental_ynn_fusion_type'
EIGEN_CONVOLUTIONS = f'--{FUSION_FLAG}=-individual_convolution'
# YNNPACK for matrix products only (no elementwise, reduce or convolution fusions).
INFERENCE_FUSIONS = 'LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT'


def apply() -> bool:
  """Adds the defaults to XLA_FLAGS; False when it is too late or declined."""
  if 'jax' in sys.modules or os.environ.get('CRNN_JAX_KEEP_XLA_FLAGS'):
    return False
  flags = os.environ.get('XLA_FLAGS', '')
  if FUSION_FLAG not in flags:
    os.environ['XLA_FLAGS'] = f'{flags} {EIGEN_CONVOLUTIONS}'.strip()
  return True


def inference_compiler_options(platform: str) -> dict[str, str] | None:
  """``compiler_options`` for jitting a forward pass on ``platform`` (None: XLA's own)."""
  user_flags = os.environ.get('XLA_FLAGS', '').replace(EIGEN_CONVOLUTIONS, '')
  if platform != 'cpu' or os.environ.get('CRNN_JAX_KEEP_XLA_FLAGS') or FUSION_FLAG in user_flags:
    return None
  return {FUSION_FLAG: INFERENCE_FUSIONS}
