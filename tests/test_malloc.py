"""Decode processes keep freed memory for the next clip (glibc)."""

import platform
import subprocess
import sys

import pytest
from conftest import ROOT

# A clip's pattern: a few buffers of 10-20 MiB allocated and freed again; prints
# the page faults of the third round.
PROBE = '''
import resource, sys
import numpy as np
from crnn_jax.core import malloc
if sys.argv[1] == 'keep':
  assert malloc.keep_freed_memory()
def clip():
  buffers = [np.ones(n << 18, np.float32) for n in (10, 20, 20)]  # MiB
  del buffers
clip(); clip()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
clip()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
'''


def _faults(mode):
  out = subprocess.run([sys.executable, '-c', PROBE, mode], cwd=ROOT, capture_output=True,
                       text=True, timeout=120, check=True)
  return int(out.stdout.split()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason='glibc malloc only')
def test_freed_buffers_are_reused_instead_of_faulted_in_again():
  assert _faults('default') > 300  # handed back to the kernel, faulted in again
  assert _faults('keep') < 50
