"""The input pipeline streams: memory stays bounded on a data set several
times larger than the allowed growth (never the whole set in RAM)."""

import subprocess
import sys

from conftest import ROOT

N, FRAMES = 2000, 1292  # ~315 MiB of spectrograms

WRITE = r'''
import sys
sys.path.insert(0, {root!r})
import numpy as np
from data_prep.writer import write_dataset

def examples(n):
  rng = np.random.default_rng(0)
  for i in range(n):  # random bytes do not compress: files as large as the data
    yield str(i), dict(spectrogram=rng.integers(0, 256, (128, {frames}), dtype=np.uint8),
                       tabular=np.zeros(0, np.float32), label=i % 2,
                       label_set=np.eye(2, dtype=np.uint8)[i % 2], track_id=str(i), artist_id=str(i))
write_dataset('big', {data_dir!r}, ['a', 'b'], 0,
              dict(train=lambda: examples({n}), validation=lambda: examples(2),
                   test=lambda: examples(2)),
              dict(class_names=['a', 'b'], tabular_names=[]), frames={frames})
'''

READ = r'''
import resource, sys
sys.path.insert(0, {root!r})
import numpy as np
from configs import default
from crnn_jax.data import pipeline, source

config = default.get_config()
config.data.name, config.data.data_dir = 'big', {data_dir!r}
config.data.prefetch_batches = {prefetch}
info = source.load_info(config)
src = source.open_sources(config)['train']
order = pipeline.epoch_order(np.arange({n}) % 2, 0, 0)
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB
batches = pipeline.train_batches(pipeline.Reader(src, info, config), order, 32)
first = next(batches)
base = peak()
total = first['spectrogram'].nbytes
for b in batches:
  total += b['spectrogram'].nbytes
print(base, peak(), total / 2**20)
'''


def _read_growth(data_dir, prefetch):
  out = subprocess.run([sys.executable, '-c', READ.format(root=ROOT, data_dir=data_dir, n=N,
                                                         prefetch=prefetch)],
                       capture_output=True, text=True, timeout=600, check=True)
  base, peak, read_mib = map(float, out.stdout.strip().splitlines()[-1].split())
  return peak - base, read_mib


def test_reading_a_large_data_set_keeps_memory_bounded(tmp_path):
  subprocess.run([sys.executable, '-c', WRITE.format(root=ROOT, data_dir=str(tmp_path), n=N,
                                                     frames=FRAMES)],
                 capture_output=True, timeout=600, check=True)
  limit_mib = 80
  growth, read_mib = _read_growth(str(tmp_path), prefetch=4)
  assert read_mib > 3 * limit_mib  # the data read is several times the limit
  assert growth < limit_mib, (growth, read_mib)
