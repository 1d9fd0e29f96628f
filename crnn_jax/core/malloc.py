"""glibc malloc settings for processes that decode clip after clip.

Each clip allocates and frees the same few large buffers (decoded audio, the
STFT, the mel power). glibc hands blocks above its mmap threshold back to the
kernel when freed, so every clip faulted their pages in again: ~10 ms of a
~60 ms clip in a fresh decode worker (benchmarks/RESULTS.md). Raising the
threshold to its largest value and keeping freed memory at the top of the
heap makes the next clip reuse them. The cost is memory kept, bounded by one
clip's peak (tens of MB). Elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1  # mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's upper limit on 64-bit systems
TRIM_THRESHOLD = 256 << 20


def keep_freed_memory() -> bool:
  """Tells glibc to reuse freed blocks of up to 32 MiB; False where it cannot."""
  try:
    libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
    mallopt = libc.mallopt
  except (OSError, AttributeError):  # not glibc (macOS, musl without mallopt)
    return False
  mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
  return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
      mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
