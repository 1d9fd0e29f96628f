"""The bad-input corpus (tests/bad_inputs.py) through ``python -m data_prep
build`` and ``python -m crnn_jax.predict``: every good file kept, every bad
one reported with its reason, no crash, bounded memory, counts printed; and
the streaming decoder under them (a long file is never decoded whole)."""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
import tracemalloc

import jax
import numpy as np
import pytest
import soundfile as sf
from bad_inputs import KEPT, make_audio_corpus, tone, write_manifests, write_sparse_hour
from conftest import ROOT

from configs import default
from crnn_jax.core import audio, audio_features
from crnn_jax.data.info import DataInfo
from crnn_jax.inference.inputs import TabularTable
from crnn_jax.train import from_weights
from crnn_jax.train import state as state_lib
from data_prep import build, manifest
from data_prep.build_input import printable

# Decoding the corpus' hour (CD quality) whole takes 2.5 GB as float32 before
# resampling; streamed, a command stays near its usual size.
MAX_RSS_MB = 1500
CLIP_SECONDS = 5.0


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('corpus'))
  expected = make_audio_corpus(root)
  manifests = write_manifests(root, expected, str(tmp_path_factory.mktemp('manifests')))
  return root, expected, manifests


def _run_measured(args: list[str]) -> tuple[subprocess.CompletedProcess, int]:
  """(the finished command, its peak resident memory in MB), from a child
  that runs only it (ru_maxrss of this process's children would include
  every earlier one)."""
  code = ('import resource, subprocess, sys; p = subprocess.run(sys.argv[1:]); '
          'print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024, '
          'file=sys.stderr); sys.exit(p.returncode)')
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env.pop('XLA_FLAGS', None)
  proc = subprocess.run([sys.executable, '-c', code, *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, errors='surrogateescape', timeout=900,
                        check=False)
  *lines, peak = proc.stderr.rstrip('\n').split('\n')
  proc.stderr = '\n'.join(lines)
  return proc, int(peak)


def _track_id(root: str, path: str) -> str:
  return printable(os.path.splitext(os.path.relpath(path, root))[0])


def _report(path: str) -> dict[str, str]:
  with open(path, newline='', encoding='utf-8') as f:
    return {row['origin']: row['reason'] for row in csv.DictReader(f)}


def test_data_prep_build_goes_through_the_whole_corpus(corpus, tmp_path):
  import tensorflow_datasets as tfds
  root, expected, _ = corpus
  out = str(tmp_path / 'out')
  proc, peak_mb = _run_measured(
      [sys.executable, '-m', 'data_prep', 'build', f'--input={root}', f'--data_dir={out}',
       '--name=corpus', f'--clip_seconds={CLIP_SECONDS}', '--min_seconds=2', '--no_progress'])
  assert proc.returncode == 0, proc.stderr[-3000:]
  kept = {}
  for split, src in tfds.data_source('corpus', data_dir=out).items():
    kept.update({src[i]['track_id'].decode(): split for i in range(len(src))})
  report = _report(os.path.join(out, 'corpus_report.csv'))
  bad = {p: why for p, why in expected.items() if why != KEPT}
  assert sorted(kept) == sorted(_track_id(root, p) for p, why in expected.items() if why == KEPT)
  assert sorted(report) == sorted(bad)
  for path, why in bad.items():
    assert why in report[path], (path, report[path])
  assert f'skipped {len(bad)} input(s): ' in proc.stdout
  total_row = next(line for line in proc.stdout.splitlines() if line.startswith('total '))
  assert sum(int(n) for n in total_row.split()[1:]) == len(kept)  # clips per split
  assert peak_mb < MAX_RSS_MB, peak_mb


def _predict_workdir(path: str) -> str:
  """A workdir of the reference model for 5-s clips, arbitrary weights."""
  config = default.get_config()
  metadata = {'class_names': ['blues', 'rock'], 'tabular_names': [], 'tabular_categorical': {},
              'tabular_mean': [], 'tabular_std': [],
              'clip': {'seconds': CLIP_SECONDS, 'position': 'start', 'min_seconds': 2.0}}
  info = {'name': 'corpus', 'class_names': ['blues', 'rock'], 'num_tabular': 0,
          'categorical_encoding': 'raw', 'split_sizes': {},
          'frames': audio.num_frames(CLIP_SECONDS), 'metadata': metadata}
  shapes = state_lib.abstract_variables(config, DataInfo.from_json(info))
  rng = np.random.default_rng(0)
  variables = jax.tree_util.tree_map(
      lambda s: (0.05 * rng.standard_normal(s.shape)).astype(np.float32), shapes)
  from_weights.write_workdir(path, config, variables, info)
  return path


def test_predict_goes_through_the_whole_corpus(corpus, tmp_path):
  root, expected, _ = corpus
  workdir = _predict_workdir(str(tmp_path / 'w'))
  proc, peak_mb = _run_measured(
      [sys.executable, '-m', 'crnn_jax.predict', f'--workdir={workdir}', '--top_k=1', root])
  assert proc.returncode == 0, proc.stderr[-3000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith('error: ')]
  bad = {p: why for p, why in expected.items() if why != KEPT}
  for path, why in bad.items():
    line = next((e for e in errors if e.startswith(f'error: {path}: ')), None)
    assert line is not None and why in line, (path, why, line)
  assert len(errors) == len(bad)
  good = [p for p, why in expected.items() if why == KEPT]
  for path in good:
    assert f'\n{path}  (' in '\n' + proc.stdout, path  # names as they are, bytes and all
  hour = next(p for p in good if p.endswith('one_hour.wav'))
  assert f'{hour}  (5 windows averaged)' in proc.stdout  # 20 s of sound (+ its echo), silence
  assert re.search(rf'^# scored {len(good)} of {len(expected)} file\(s\) in [\d.]+ s '
                   rf'\([\d.]+ files/s\); {len(bad)} could not be scored \(reasons on stderr\)$',
                   proc.stdout, re.MULTILINE), proc.stdout[-300:]
  assert peak_mb < MAX_RSS_MB, peak_mb


def test_manifests_with_a_bom_mixed_line_endings_and_quoted_newlines(corpus, tmp_path):
  _, expected, manifests = corpus
  source = manifest.read_manifest(manifests['awkward'])
  named = {p for p in expected if printable(p) == p}  # a CSV cannot name the other one
  assert not source.problems
  assert sorted(t.path for t in source.tracks) == sorted(named)
  artists = {t.artist_id for t in source.tracks}
  assert 'Artist 0\nwith a line break, and a comma' in artists
  summary = build.build_dataset(manifests['awkward'], str(tmp_path / 'out'), 'awkward',
                                clip=audio.ClipSettings(CLIP_SECONDS, 'start', 2.0), workers=1,
                                progress=False, verbose=False)
  kept = sum(summary['clips_per_split'].values())
  assert kept == sum(1 for p in named if expected[p] == KEPT)
  assert summary['skipped'] == sum(1 for p in named if expected[p] != KEPT)


def _peak_mib(read, *args):
  """(``read(*args)``, the peak of Python's allocations meanwhile in MiB)."""
  tracemalloc.start()
  try:
    return read(*args), tracemalloc.get_traced_memory()[1] / 2**20
  finally:
    tracemalloc.stop()


def test_a_csv_of_a_million_columns_is_read_a_row_at_a_time(corpus, tmp_path):
  """Memory does not grow with the rows: 12 rows of a million cells cost what 3 do.
  A reader that keeps every row adds at least a row's list of cells (8 MiB) per row,
  72 MiB here (a dict per row, as csv.DictReader gives, 29 MiB a row)."""
  _, _, manifests = corpus
  with open(manifests['wide'], newline='', encoding='utf-8') as f:
    header, *rows = csv.reader(f)
  longer = str(tmp_path / 'wide_12_rows.csv')
  with open(longer, 'w', newline='', encoding='utf-8') as f:
    csv.writer(f).writerows([header, *rows * 4])
  peaks = {}
  for path, count in ((manifests['wide'], 3), (longer, 12)):
    source, peaks['manifest', count] = _peak_mib(manifest.read_manifest, path)
    table, peaks['table', count] = _peak_mib(TabularTable, path, ['c5', 'c999997'])
    assert len(source.tracks) == count and not source.problems
    assert len(table.rows) == count and set(table.rows[0]) == {'path', 'c5', 'c999997'}
  for reader in ('manifest', 'table'):
    assert peaks[reader, 12] - peaks[reader, 3] < 4, peaks  # MiB
    assert peaks[reader, 3] < 200, peaks  # two headers of a million names at most


# ---------------------------------------------------------------- the decoder underneath

def _whole_file_decode(path: str) -> np.ndarray:
  """What load_audio did before streaming: read all, average, resample."""
  import librosa
  data, rate = sf.read(path, dtype='float32', always_2d=True)
  mono = data.mean(axis=1)
  if rate != audio.SAMPLE_RATE:
    mono = librosa.resample(mono, orig_sr=rate, target_sr=audio.SAMPLE_RATE, res_type='soxr_hq')
  return mono.astype(np.float32)


@pytest.mark.parametrize('ext,rate,channels', [
    ('wav', 22_050, 1), ('wav', 44_100, 2), ('flac', 96_000, 6), ('flac', 8_000, 1),
    ('ogg', 22_050, 1), ('mp3', 44_100, 2), ('mp3', 22_050, 1), ('opus', 48_000, 2)])
def test_streamed_decoding_equals_whole_file_decoding(tmp_path, monkeypatch, ext, rate, channels):
  path = str(tmp_path / f'x.{ext}')
  kw = {'ogg': {'format': 'OGG', 'subtype': 'VORBIS'}, 'opus': {'format': 'OGG', 'subtype': 'OPUS'},
        'mp3': {'format': 'MP3', 'subtype': 'MPEG_LAYER_III'}}.get(ext, {})
  sf.write(path, tone(330, 7.3, rate, channels), rate, **kw)
  whole = _whole_file_decode(path)
  monkeypatch.setattr(audio, 'BLOCK_BYTES', 1 << 16)  # many blocks, even for 7 s
  streamed = audio.load_audio(path)
  if ext == 'mp3':  # libsndfile's MP3 float output differs in the last bit with read sizes
    np.testing.assert_allclose(streamed, whole, atol=1e-6)
  else:
    np.testing.assert_array_equal(streamed, whole)
  for position in ('start', 'center'):  # a clip and the windows: the same samples as all of it
    np.testing.assert_array_equal(audio.load_clip(path, 2.0, position, 1.0),
                                  audio.fixed_window(streamed, 2.0, position, 1.0))
  windows = list(audio.iter_windows(path, 2.0, 1.0))
  assert len(windows) == 3
  for got, want in zip(windows, audio.sliding_windows(streamed, 2.0, 1.0)):
    np.testing.assert_array_equal(got, want)


def test_an_hour_long_file_is_never_decoded_whole(tmp_path):
  path = str(tmp_path / 'hour.wav')
  write_sparse_hour(path)
  tracemalloc.start()
  clip = audio.load_clip(path, 30.0, 'start', 5.0)
  windows = sum(1 for _ in audio.iter_windows(path, 30.0, 5.0))
  peak = tracemalloc.get_traced_memory()[1]
  tracemalloc.stop()
  assert clip.shape == (audio.clip_samples(30.0),) and windows == 120
  assert peak < 64 << 20, peak  # the hour as float32 is 2.5 GB


def test_feature_estimates_stream_over_a_long_file(tmp_path, monkeypatch):
  """estimate_file == estimate(load_audio) also when only the centre is analysed."""
  monkeypatch.setattr(audio_features, 'MAX_ANALYSIS_SECONDS', 8.0)
  monkeypatch.setattr(audio, 'BLOCK_BYTES', 1 << 16)
  path = str(tmp_path / 'long.flac')
  sf.write(path, tone(220, 21.0, 44_100, 2, seed=3), 44_100)
  assert audio_features.estimate_file(path) == audio_features.estimate(audio.load_audio(path))


def test_paths_that_must_not_be_opened_are_refused_with_a_reason(tmp_path):
  fifo = tmp_path / 'pipe.mp3'
  os.mkfifo(fifo)  # opening it would wait for a writer forever
  (tmp_path / 'dir.flac').mkdir()
  os.symlink(tmp_path / 'loop.wav', tmp_path / 'loop.wav')
  for name, reason in [('pipe.mp3', 'not a regular file'), ('dir.flac', 'a folder'),
                       ('loop.wav', 'symlink loop'), ('missing.wav', 'No such file')]:
    with pytest.raises(audio.AudioError, match=reason):
      audio.load_clip(tmp_path / name)


def test_absurd_sample_rates_are_refused_before_decoding(tmp_path):
  from bad_inputs import wav_header
  path = tmp_path / 'one_hertz.wav'
  path.write_bytes(wav_header(1, 1, data_bytes=2 * 50_000) + bytes(2 * 50_000))
  with pytest.raises(audio.AudioError, match='absurd sample rate: 1 Hz'):
    audio.load_clip(path)  # at 1 Hz these 50,000 samples would resample to 14 hours


@pytest.mark.skipif(os.geteuid() != 0, reason='not root: the corpus tests meet a mode-000 file '
                    'as a user, which is the real case')
def test_unreadable_permissions_as_root():
  """Root reads a mode-000 file (the corpus then keeps it, honestly); as any
  other user it is refused: checked in a child that imports as root, then
  becomes 'nobody' (who may not read this Python installation)."""
  import tempfile
  folder = tempfile.mkdtemp(prefix='crnn_jax_perm_')  # under /tmp: others may enter
  os.chmod(folder, 0o755)
  path = os.path.join(folder, 'locked.wav')
  sf.write(path, tone(300, 2.0), audio.SAMPLE_RATE)
  os.chmod(path, 0)
  code = ('import os, sys; from crnn_jax.core import audio; os.setgid(65534); '
          'os.setuid(65534); print(audio.unreadable_reason(sys.argv[1]))')
  try:
    assert audio.unreadable_reason(path) is None
    out = subprocess.run([sys.executable, '-c', code, path], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=True)
  finally:
    shutil.rmtree(folder)
  assert out.stdout.strip() == 'unreadable path: permission denied'
