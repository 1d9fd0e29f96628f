"""data_prep.prepare: folder source -> TFDS set, bad input, splits, resumption."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import soundfile as sf
import tensorflow_datasets as tfds

from crnn_jax.core import audio, tabular
from crnn_jax.data import schema
from crnn_jax.data.schema import SPLITS
from data_prep import build, decode
from data_prep.split import assign_splits

SR = 22_050
CLIP = audio.ClipSettings(seconds=2.0, position='start', min_seconds=1.0)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tone(freq: float, seconds: float, sr: int = SR, channels: int = 1, seed: int = 0
          ) -> np.ndarray:
  t = np.arange(int(seconds * sr)) / sr
  rng = np.random.default_rng(seed)
  y = 0.3 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(len(t))
  return np.stack([y] * channels, axis=1).astype(np.float32) if channels > 1 else y


def make_library(root: str) -> tuple[dict[str, str], dict[str, str]]:
  """A small GTZAN-layout library; returns (good track id -> label, bad path -> hint)."""
  good, bad = {}, {}
  formats = [('wav', {}), ('flac', {}), ('ogg', {'format': 'OGG', 'subtype': 'VORBIS'}),
             ('mp3', {'format': 'MP3', 'subtype': 'MPEG_LAYER_III'})]
  for li, label in enumerate(('blues', 'rock', 'jazz')):
    os.makedirs(os.path.join(root, label))
    for k, (ext, kw) in enumerate(formats):
      path = os.path.join(root, label, f'{label}{k}.{ext}')
      sf.write(path, _tone(200 * (li + 1) + 30 * k, 2.5, seed=k), SR, **kw)
      good[f'{label}/{label}{k}'] = label
  # Exotic but valid: 6 channels at 8 kHz, stereo at 96 kHz, a 1.5 s clip (padded).
  sf.write(os.path.join(root, 'rock', 'surround.wav'), _tone(300, 2.2, 8000, 6), 8000)
  good['rock/surround'] = 'rock'
  sf.write(os.path.join(root, 'jazz', 'hires.flac'), _tone(500, 2.2, 96000, 2), 96000)
  good['jazz/hires'] = 'jazz'
  sf.write(os.path.join(root, 'blues', 'short_ok.wav'), _tone(250, 1.5), SR)
  good['blues/short_ok'] = 'blues'
  # Bad input.
  def add_bad(rel: str, data: bytes, hint: str) -> None:
    path = os.path.join(root, rel)
    with open(path, 'wb') as f:
      f.write(data)
    bad[path] = hint
  add_bad('blues/empty.mp3', b'', 'empty')
  add_bad('rock/text.wav', b'this is not audio at all\n' * 40, 'not decodable')
  add_bad('jazz/random.mp3', np.random.default_rng(1).bytes(5000), '')
  with open(os.path.join(root, 'rock', 'rock3.mp3'), 'rb') as f:
    mp3 = f.read()
  add_bad('rock/truncated.mp3', mp3[:len(mp3) // 5], 'truncated')
  long_mp3 = os.path.join(root, 'jazz', 'long.mp3')  # truncated, yet longer than a clip
  sf.write(long_mp3, _tone(350, 6.0), SR, format='MP3', subtype='MPEG_LAYER_III')
  with open(long_mp3, 'rb') as f:
    data = f.read()
  add_bad('jazz/long_truncated.mp3', data[:len(data) // 2], 'truncated file: decoded')
  os.remove(long_mp3)
  add_bad('jazz/notes.txt', b'hello', 'not an audio file extension')
  add_bad('stray.wav', b'', 'not in a label folder')
  silent = os.path.join(root, 'jazz', 'silent.wav')
  sf.write(silent, np.zeros(int(2.5 * SR), np.float32), SR)
  bad[silent] = 'silent'
  tiny = os.path.join(root, 'blues', 'tiny.wav')
  sf.write(tiny, _tone(300, 0.4), SR)
  bad[tiny] = 'too short'
  # Same id as rock/rock0.wav; files are read in sorted order, so the .wav is the duplicate.
  sf.write(os.path.join(root, 'rock', 'rock0.flac'), _tone(330, 2.5), SR, format='FLAC')
  bad[os.path.join(root, 'rock', 'rock0.wav')] = 'duplicate'
  link = os.path.join(root, 'blues', 'broken.wav')
  os.symlink(os.path.join(root, 'nowhere.wav'), link)
  bad[link] = 'unreadable'
  return good, bad


def read_split(data_dir: str, name: str) -> dict[str, dict]:
  import tensorflow_datasets as tfds
  sources = tfds.data_source(name, data_dir=data_dir)
  out = {}
  for split, src in sources.items():
    for i in range(len(src)):
      r = src[i]
      tid = r['track_id'].decode() if isinstance(r['track_id'], bytes) else r['track_id']
      out[tid] = dict(r, split=split)
  return out


def read_report(path: str) -> list[dict[str, str]]:
  with open(path, newline='', encoding='utf-8') as f:
    return list(csv.DictReader(f))


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('lib'))
  out = str(tmp_path_factory.mktemp('out'))
  good, bad = make_library(root)
  summary = build.build_dataset(root, out, 'lib_test', clip=CLIP, workers=1, progress=False)
  return root, out, good, bad, summary


def test_every_good_file_in_dataset_every_bad_one_in_report(built):
  _, out, good, bad, summary = built
  records = read_split(out, 'lib_test')
  assert set(records) == set(good)
  names = summary['classes']
  assert names == ['blues', 'jazz', 'rock']
  for tid, label in good.items():
    assert names[records[tid]['label']] == label
    assert records[tid]['label_set'].tolist() == [int(n == label) for n in names]
    assert records[tid]['artist_id'] in (tid, tid.encode())
    assert records[tid]['tabular'].shape == (0,)
  report = read_report(os.path.join(out, 'lib_test_report.csv'))
  reported = {r['origin']: r['reason'] for r in report}
  assert set(reported) == set(bad)
  for path, hint in bad.items():
    assert hint in reported[path], (path, reported[path])
  assert summary['skipped'] == len(bad)
  assert sum(summary['clips_per_split'].values()) == len(good)


def test_folder_source_says_it_is_split_per_track(built):
  import tensorflow_datasets as tfds
  _, out, _, _, summary = built
  md = tfds.builder('lib_test', data_dir=out).info.metadata
  assert md['split']['group_by_artist'] is True
  assert md['split']['grouped_by'] == 'track (no artist information)'
  warnings = [l for l in build.format_summary(summary).splitlines() if l.startswith('warning')]
  assert len(warnings) == 1 and 'track (no artist information)' in warnings[0]


def test_spectrogram_equals_direct_computation(built):
  root, out, _, _, _ = built
  records = read_split(out, 'lib_test')
  for tid in ('rock/rock3', 'rock/surround', 'blues/short_ok'):
    path = next(os.path.join(root, f) for f in [tid + e for e in ('.mp3', '.wav', '.flac')]
                if os.path.exists(os.path.join(root, f)))
    y = audio.fixed_window(audio.load_audio(path), CLIP.seconds, CLIP.position, CLIP.min_seconds)
    expected = audio.spectrogram_image(y, CLIP.seconds)
    assert records[tid]['spectrogram'].shape == (128, CLIP.frames())
    np.testing.assert_array_equal(records[tid]['spectrogram'], expected)


def test_spectrogram_equals_independent_librosa_computation(built):
  """SPEC.md section 2 written out with librosa alone, on a 96 kHz stereo file."""
  import librosa
  root, out, _, _, _ = built
  y, _ = librosa.load(os.path.join(root, 'jazz', 'hires.flac'), sr=22_050, mono=True)
  n = int(CLIP.seconds * 22_050)
  y = np.pad(y[:n], (0, max(0, n - len(y))))
  power = librosa.feature.melspectrogram(y=y, sr=22_050, n_fft=2048, hop_length=512, n_mels=128,
                                         fmin=0.0, fmax=11_025, power=2.0, pad_mode='reflect')
  log_spec = np.log(power + 1e-9)
  scaled = ((log_spec - log_spec.min()) / (log_spec.max() - log_spec.min()) * 255).astype(np.uint8)
  expected = 255 - scaled[::-1]
  stored = read_split(out, 'lib_test')['jazz/hires']['spectrogram']
  np.testing.assert_array_equal(stored, expected)


def test_metadata_contract(built):
  import tensorflow_datasets as tfds
  _, out, _, _, _ = built
  md = tfds.builder('lib_test', data_dir=out).info.metadata
  assert md['class_names'] == ['blues', 'jazz', 'rock']
  assert md['tabular_names'] == [] and md['tabular_categorical'] == {}
  assert md['tabular_mean'] == [] and md['tabular_std'] == []
  assert md['clip'] == {'seconds': 2.0, 'position': 'start', 'min_seconds': 1.0}
  assert md['source'].startswith('folder:')
  assert md['report'] == os.path.join(out, 'lib_test_report.csv')


def test_rerun_reuses_and_rebuild_from_cache_is_identical(built, monkeypatch):
  root, out, _, _, _ = built
  before = read_split(out, 'lib_test')

  def no_decoding(*args, **kwargs):
    raise AssertionError('decoded again although the cache holds the result')

  monkeypatch.setattr(decode, 'compute_track', no_decoding)
  again = build.build_dataset(root, out, 'lib_test', clip=CLIP, workers=1, progress=False)
  assert again['reused_existing']
  # A crash after decoding but before writing: the data set is gone, the cache is not,
  # and TFDS's temporary folder of a write killed midway is left over.
  import shutil
  shutil.rmtree(os.path.join(out, 'lib_test'))
  os.makedirs(os.path.join(out, 'lib_test', 'incomplete.ABC123_1.0.0'))
  rebuilt = build.build_dataset(root, out, 'lib_test', clip=CLIP, workers=1, progress=False)
  assert not rebuilt['reused_existing']
  after = read_split(out, 'lib_test')
  assert os.listdir(os.path.join(out, 'lib_test')) == ['1.0.0']
  assert set(after) == set(before)
  for tid, r in before.items():
    assert after[tid]['split'] == r['split']
    np.testing.assert_array_equal(after[tid]['spectrogram'], r['spectrogram'])


def test_changed_input_rebuilds(tmp_path):
  root, out = str(tmp_path / 'lib'), str(tmp_path / 'out')
  for label in ('a', 'b'):
    os.makedirs(os.path.join(root, label))
    for k in range(3):
      sf.write(os.path.join(root, label, f'{k}.wav'), _tone(300 + 100 * k, 1.2, seed=k), SR)
  first = build.build_dataset(root, out, 'chg', clip=CLIP, workers=1, progress=False)
  assert sum(first['clips_per_split'].values()) == 6
  sf.write(os.path.join(root, 'b', 'new.wav'), _tone(900, 1.2), SR)
  second = build.build_dataset(root, out, 'chg', clip=CLIP, workers=1, progress=False)
  assert not second['reused_existing']
  assert 'b/new' in read_split(out, 'chg')


def test_parallel_workers_give_same_dataset(tmp_path, monkeypatch):
  monkeypatch.setattr(decode, 'MIN_POOL_JOBS', 1)  # use the process pool for 6 clips
  root = str(tmp_path / 'lib')
  for label in ('a', 'b'):
    os.makedirs(os.path.join(root, label))
    for k in range(3):
      sf.write(os.path.join(root, label, f'{k}.wav'), _tone(200 + 150 * k, 1.2, seed=k), SR)
  serial = build.build_dataset(root, str(tmp_path / 'o1'), 'par', clip=CLIP, workers=1,
                                 progress=False)

  def not_here(*args, **kwargs):  # spawned workers import the real function
    raise AssertionError('decoded in the parent process, not in the worker pool')

  monkeypatch.setattr(decode, 'compute_track', not_here)
  parallel = build.build_dataset(root, str(tmp_path / 'o2'), 'par', clip=CLIP, workers=2,
                                   progress=False)
  assert serial['clips'] == parallel['clips']
  a, b = read_split(str(tmp_path / 'o1'), 'par'), read_split(str(tmp_path / 'o2'), 'par')
  assert set(a) == set(b)
  for tid in a:
    np.testing.assert_array_equal(a[tid]['spectrogram'], b[tid]['spectrogram'])


_WORKERS_AFTER_A_MARK = """
import sys
from data_prep import decode
from crnn_jax.core import audio
decode.MIN_POOL_JOBS = 1  # the process pool for these few clips
pool_pass = decode._pool_pass

def marked(*args):
  print('-- the workers start --', flush=True)
  return pool_pass(*args)

decode._pool_pass = marked
clip = audio.ClipSettings(seconds=2.0, position='start', min_seconds=1.0)
jobs = [decode.Job(f't{i}', path, f'{sys.argv[2]}/{i}.npz', clip, True)
        for i, path in enumerate(sys.argv[1].split(','))]
results = decode.run_jobs(jobs, workers=2, progress=False)
assert sorted(results) == [job.track_id for job in jobs], results
assert all(error is None for error, _ in results.values()), results
"""


@pytest.mark.slow  # compiles librosa's numba functions afresh: ~40 s of CPU
def test_workers_only_load_the_numba_cache_the_build_compiled(tmp_path):
  """A fresh install's first parallel build: librosa's numba functions are not
  cached yet. Were each worker to compile them, they would write the cache at
  once (numba takes no lock; this has left caches that segfault later loads).
  The build compiles them before the workers start; the workers only load."""
  paths = []
  for k in range(4):
    paths.append(str(tmp_path / f'{k}.wav'))
    sf.write(paths[-1], _tone(200 + 150 * k, 2.5, seed=k), SR)
  env = {**os.environ, 'NUMBA_CACHE_DIR': str(tmp_path / 'numba'), 'NUMBA_DEBUG_CACHE': '1',
         'NUMBA_OPT': '0', 'PYTHONUNBUFFERED': '1', 'PYTHONPATH': ROOT}  # lines as written
  proc = subprocess.Popen([sys.executable, '-c', _WORKERS_AFTER_A_MARK, ','.join(paths),
                           str(tmp_path / 'cache')], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
  before, workers = [], None
  watchdog = threading.Timer(1200, proc.kill)  # a hung build fails the test, not the suite
  watchdog.start()
  with proc:
    for line in proc.stdout:
      if line.startswith('-- the workers start --'):
        workers = []
      elif workers is None:
        before.append(line)
      else:
        workers.append(line)
        if '] data saved' in line or '] index saved' in line:
          proc.kill()  # a worker compiled: no need to wait for the rest
  watchdog.cancel()
  assert workers is not None, ''.join(before)[-2000:]
  assert any('[cache] data saved' in line for line in before)  # a fresh cache: compiled here
  assert any('[cache] data loaded' in line for line in workers)  # the workers used it ...
  assert not [line for line in workers if 'saved' in line]  # ... and compiled nothing
  assert proc.returncode == 0, ''.join(workers)[-2000:]


# ---------------------------------------------------------------- splits

def _toy(num_artists: int = 60, seed: int = 0) -> tuple[list[int], list[str]]:
  rng = np.random.default_rng(seed)
  labels, groups = [], []
  for a in range(num_artists):
    label = a % 4
    for _ in range(int(rng.integers(1, 8))):
      labels.append(label)
      groups.append(f'artist{a}')
  return labels, groups


def test_artist_split_no_artist_in_two_splits_and_stratified():
  labels, groups = _toy()
  splits = assign_splits(labels, groups, seed=3)
  by_artist: dict[str, set[str]] = {}
  for g, s in zip(groups, splits):
    by_artist.setdefault(g, set()).add(s)
  assert all(len(s) == 1 for s in by_artist.values())
  n = len(labels)
  for split, frac in zip(SPLITS, (0.64, 0.16, 0.20)):
    share = sum(s == split for s in splits) / n
    assert abs(share - frac) < 0.06, (split, share)
    for label in range(4):
      per_label = [s for s, l in zip(splits, labels) if l == label]
      assert split in per_label  # every class in every split
  assert splits == assign_splits(labels, groups, seed=3)  # seeded
  assert splits != assign_splits(labels, groups, seed=4)


def test_reference_split_sizes_match_the_reference():
  n = 39_597  # the genres data set: 25,342 / 6,335 / 7,920 (SPEC.md section 5)
  splits = assign_splits([0] * n, [str(i) for i in range(n)], seed=42,
                                 group_by_artist=False, stratify=False)
  assert [splits.count(s) for s in SPLITS] == [25_342, 6_335, 7_920]


def test_reference_split_validation_share_is_not_rounded_down():
  """n=100: 20 test (sklearn), then fastai's int(0.2 * 80) = 16 validation, not 15."""
  splits = assign_splits([0] * 100, [str(i) for i in range(100)], seed=0,
                                 group_by_artist=False, stratify=False)
  assert [splits.count(s) for s in SPLITS] == [64, 16, 20]


def test_bad_fractions_rejected():
  with pytest.raises(ValueError):
    assign_splits([0, 1], ['a', 'b'], fractions=(0.5, 0.5, 0.5))


def test_to_number_codes_categoricals_one_based():
  assert tabular.to_number('explicit', 'True') == 2.0
  assert tabular.to_number('explicit', False) == 1.0
  assert tabular.to_number('key', '0') == 1.0 and tabular.to_number('key', 11) == 12.0
  assert tabular.to_number('key', -1) is None  # Spotify: no key detected
  assert tabular.to_number('mode', 1) == 2.0
  assert tabular.to_number('tempo', ' 120.5 ') == 120.5
  assert tabular.to_number('tempo', '') is None
  with pytest.raises(ValueError):
    tabular.to_number('tempo', 'fast')
  with pytest.raises(ValueError):
    tabular.to_number('key', 12)


def test_cli_build_help_and_error():
  env = dict(os.environ, PYTHONPATH=ROOT)
  out = subprocess.run([sys.executable, '-m', 'data_prep', 'build', '--help'], env=env, check=False,
                       capture_output=True, text=True, cwd=ROOT)
  assert out.returncode == 0 and '--data_dir' in out.stdout
  out = subprocess.run([sys.executable, '-m', 'data_prep', 'build', '--input=/no/such/dir',
                        '--data_dir=/tmp/x', '--name=abc'], env=env, capture_output=True, check=False,
                       text=True, cwd=ROOT)
  assert out.returncode == 2 and out.stderr.startswith('error:') and 'Traceback' not in out.stderr
  for command, option in (('spotify', '--strategy'), ('match', '--library')):
    out = subprocess.run([sys.executable, '-m', 'data_prep', command, '--help'], env=env,
                         check=False, capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and option in out.stdout, out.stderr


def test_cli_clip_position_center_stores_the_middle_of_each_track(tmp_path):
  """`build --clip_position=center`: each 1-s clip is its 3-s track's middle, which
  straddles the track's two tones, not its start (the first tone alone)."""
  root, out, paths = tmp_path / 'lib', str(tmp_path / 'out'), {}
  for li, label in enumerate(('low', 'high')):
    os.makedirs(root / label)
    for k in range(4):
      paths[f'{label}/{label}{k}'] = path = str(root / label / f'{label}{k}.wav')
      sf.write(path, np.concatenate([_tone(200 + 300 * li + 20 * k, 1.5, seed=k),
                                     _tone(3000 + 100 * k, 1.5, seed=k)]), SR)
  proc = subprocess.run(
      [sys.executable, '-m', 'data_prep', 'build', f'--input={root}', f'--data_dir={out}',
       '--name=centre', '--clip_seconds=1', '--min_seconds=1', '--clip_position=center',
       '--no_progress'], env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
      cwd=ROOT, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  stored = read_split(out, 'centre')
  assert sorted(stored) == sorted(paths)
  for tid, path in paths.items():
    y = audio.load_audio(path)
    middle = audio.spectrogram_image(audio.fixed_window(y, 1.0, 'center'), 1.0)
    assert not np.array_equal(middle, audio.spectrogram_image(y[:SR], 1.0))
    np.testing.assert_array_equal(stored[tid]['spectrogram'], middle)


def _text(value: bytes | str) -> str:
  return value.decode() if isinstance(value, bytes) else value


def _all_examples(data_dir: str, name: str) -> list[dict]:
  """Every example of every split, in a fixed order (several windows share a track id)."""
  import tensorflow_datasets as tfds
  found = []
  for split, src in tfds.data_source(name, data_dir=data_dir).items():
    found += [dict(src[i], split=split) for i in range(len(src))]
  return sorted(found, key=lambda r: (r['track_id'], r['spectrogram'].tobytes()))


@pytest.mark.parametrize('windows', ['1', '2'])
def test_beam_multi_process_runner_without_the_cache_writes_the_same_dataset(tmp_path,
                                                                           monkeypatch, windows):
  """Decode and write as Beam pipelines on the DirectRunner's worker processes,
  with the build's local cache folder unusable (a file stands in its place):
  results must flow as pipeline elements. Same data set as a local build,
  with one window per track or several."""
  pytest.importorskip('apache_beam')
  from apache_beam.options.pipeline_options import PipelineOptions
  root = str(tmp_path / 'lib')
  seconds = 1.2 if windows == '1' else 4.5
  for label in ('a', 'b'):
    os.makedirs(os.path.join(root, label))
    for k in range(3):
      sf.write(os.path.join(root, label, f'{k}.wav'), _tone(200 + 150 * k, seconds, seed=k), SR)
  with open(os.path.join(root, 'a', 'bad.wav'), 'wb') as f:
    f.write(b'not audio')
  local = build.build_dataset(root, str(tmp_path / 'o1'), 'bm', clip=CLIP, workers=1,
                              progress=False, windows=windows)

  def no_local_pool(*args, **kwargs):
    raise AssertionError('decoded by the local process pool, not by Beam')

  monkeypatch.setattr(decode, 'run_jobs', no_local_pool)
  os.makedirs(tmp_path / 'o2')
  (tmp_path / 'o2' / 'bm_cache').write_text('not a folder: no worker can use a cache here')
  options = PipelineOptions(['--direct_running_mode=multi_processing', '--direct_num_workers=2'])
  beam = build.build_dataset(root, str(tmp_path / 'o2'), 'bm', clip=CLIP, progress=False,
                             beam_runner='DirectRunner', beam_options=options, windows=windows)
  assert beam['clips'] == local['clips'] and beam['skipped'] == local['skipped'] == 1
  assert beam['from_cache'] == 0 and not (tmp_path / 'o2' / 'bm_beam_work').exists()
  a, b = _all_examples(str(tmp_path / 'o1'), 'bm'), _all_examples(str(tmp_path / 'o2'), 'bm')
  tracks = {f'{l}/{k}' for l in 'ab' for k in range(3)}
  assert len(a) == len(b) == len(tracks) * int(windows)
  assert {_text(r['track_id']) for r in a} == {_text(r['track_id']) for r in b} == tracks
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=f'{x["track_id"]} {key}')
  meta = [json.loads((tmp_path / o / 'bm' / '1.0.0' / 'metadata.json').read_text())
          for o in ('o1', 'o2')]
  assert meta[0]['fingerprint'] == meta[1]['fingerprint']
  report = read_report(str(tmp_path / 'o2' / 'bm_report.csv'))
  assert [r['track_id'] for r in report] == ['a/bad']


def _small_library(root: str, per_label: int = 4, seconds: float = 1.2) -> None:
  for label in ('a', 'b'):
    os.makedirs(os.path.join(root, label), exist_ok=True)
    for k in range(per_label):
      sf.write(os.path.join(root, label, f'{k:03d}.wav'), _tone(200 + 37 * k, seconds, seed=k), SR)


def test_interrupted_build_resumes_without_redoing_work(tmp_path, monkeypatch):
  root, out = str(tmp_path / 'lib'), str(tmp_path / 'out')
  _small_library(root)
  real = decode.compute_track
  calls = []

  def interrupt_on_fifth(*args, **kwargs):
    calls.append(args[0])
    if len(calls) == 5:
      raise KeyboardInterrupt
    return real(*args, **kwargs)

  monkeypatch.setattr(decode, 'compute_track', interrupt_on_fifth)
  with pytest.raises(KeyboardInterrupt):
    build.build_dataset(root, out, 'intr', clip=CLIP, workers=1, progress=False)
  assert not os.path.exists(os.path.join(out, 'intr'))
  calls.clear()
  resumed = build.build_dataset(root, out, 'intr', clip=CLIP, workers=1, progress=False)
  assert (resumed['from_cache'], resumed['decoded'], len(calls)) == (4, 4, 4)
  monkeypatch.undo()
  clean = build.build_dataset(root, str(tmp_path / 'clean'), 'intr', clip=CLIP, workers=1,
                                progress=False)
  a, b = read_split(out, 'intr'), read_split(str(tmp_path / 'clean'), 'intr')
  assert set(a) == set(b) and len(a) == 8
  for tid in a:
    assert a[tid]['split'] == b[tid]['split']
    np.testing.assert_array_equal(a[tid]['spectrogram'], b[tid]['spectrogram'])
  assert clean['from_cache'] == 0


@pytest.mark.slow
def test_ctrl_c_on_the_cli_then_rerun(tmp_path):
  """A real SIGINT to `python -m data_prep build` with worker processes."""
  import signal
  import time
  root, out = str(tmp_path / 'lib'), str(tmp_path / 'out')
  _small_library(root, per_label=100, seconds=10.0)
  cmd = [sys.executable, '-m', 'data_prep', 'build', f'--input={root}', f'--data_dir={out}',
         '--name=ctrlc', '--clip_seconds=10', '--min_seconds=1', '--workers=2', '--no_progress']
  env = dict(os.environ, PYTHONPATH=ROOT)
  # A child inherits an ignored or blocked SIGINT (left so by anything earlier in this
  # process) and would then never see the signal: start it with Python's own handler.
  parent_handler = signal.signal(signal.SIGINT, signal.default_int_handler)
  parent_mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
  try:
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
  finally:
    signal.signal(signal.SIGINT, parent_handler)
    signal.pthread_sigmask(signal.SIG_SETMASK, parent_mask)
  cache = os.path.join(out, 'ctrlc_cache')

  def cached_clips() -> int:  # 0 until the build makes the folder: os.walk yields nothing
    return sum(len(f) for _, _, f in os.walk(cache))

  started, cached = time.time(), 0
  while time.time() < started + 120 and proc.poll() is None:
    cached = cached_clips()
    if cached >= 3:
      break
    time.sleep(0.05)
  before_signal = (f'process {"ended" if proc.poll() is not None else "running"} after '
                   f'{time.time() - started:.1f} s with {cached} cached clips; parent SIGINT '
                   f'handler {parent_handler!r}, blocked {signal.SIGINT in parent_mask}')
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 130, f'{before_signal}\n{err[-2000:]}'
  assert 'rerun the same command' in err
  assert not os.path.isdir(os.path.join(out, 'ctrlc', '1.0.0'))
  done = cached_clips()
  rerun = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600,
                         check=False)
  assert rerun.returncode == 0, rerun.stderr[-2000:]
  assert f'{200 - done} decoded, {done} from the cache' in rerun.stdout
  assert len(read_split(out, 'ctrlc')) == 200


# ---------------------------------------------------------------- crashed workers

_RUN_JOB = decode.run_job


def _die_on_crash_files(job: decode.Job) -> tuple[str, str | None, dict[str, float]]:
  """Worker entry point for the test: a worker process given a file named
  crash* dies as the OOM killer would do it (never the test process itself)."""
  import multiprocessing
  import signal
  if os.path.basename(job.path).startswith('crash') and multiprocessing.parent_process():
    os.kill(os.getpid(), signal.SIGKILL)
  return _RUN_JOB(job)


def test_crashed_worker_is_reported_and_cached_not_fatal(tmp_path, monkeypatch):
  monkeypatch.setattr(decode, 'MIN_POOL_JOBS', 1)  # use the process pool
  monkeypatch.setattr(decode, 'run_job', _die_on_crash_files)  # spawned workers get it by name
  root, out = str(tmp_path / 'lib'), str(tmp_path / 'out')
  _small_library(root, per_label=2)
  crash = os.path.join(root, 'a', 'crash.wav')
  sf.write(crash, _tone(500, 1.2), SR)
  summary = build.build_dataset(root, out, 'crash', clip=CLIP, workers=2, progress=False,
                                  split=(0.5, 0.25, 0.25))
  assert set(read_split(out, 'crash')) == {f'{l}/{k:03d}' for l in 'ab' for k in range(2)}
  reported = {r['origin']: r['reason'] for r in read_report(os.path.join(out, 'crash_report.csv'))}
  assert reported == {crash: 'worker crashed while decoding (killed by SIGKILL, out of memory?)'}
  assert summary['skipped_by_reason'] == {'worker crashed while decoding': 1}
  again = build.build_dataset(root, out, 'crash', clip=CLIP, workers=2, progress=False,
                                split=(0.5, 0.25, 0.25))
  assert (again['from_cache'], again['decoded'], again['reused_existing']) == (5, 0, True)


def test_file_that_killed_an_in_process_build_is_isolated_on_rerun(tmp_path, monkeypatch):
  """Few files decode in the build's own process; one that killed it (its
  marker left behind) is run in a process of its own on the rerun."""
  monkeypatch.setattr(decode, 'run_job', _die_on_crash_files)
  root, out = str(tmp_path / 'lib'), str(tmp_path / 'out')
  _small_library(root, per_label=2)
  crash = os.path.join(root, 'a', 'crash.wav')
  sf.write(crash, _tone(500, 1.2), SR)
  key = decode.cache_key(crash, CLIP, False)
  marker = os.path.join(out, 'kill_cache', key[:2], key + '.npz.running')
  os.makedirs(os.path.dirname(marker))
  open(marker, 'wb').close()  # as a build killed while decoding it leaves it
  summary = build.build_dataset(root, out, 'kill', clip=CLIP, workers=1, progress=False,
                                  split=(0.5, 0.25, 0.25))
  assert summary['skipped_by_reason'] == {'worker crashed while decoding': 1}
  assert len(read_split(out, 'kill')) == 4
  leftovers = [f for _, _, files in os.walk(out) for f in files if f.endswith('.running')]
  assert leftovers == []


def test_cli_unexpected_runtime_error_is_one_line(monkeypatch, capsys):
  from concurrent.futures.process import BrokenProcessPool

  from data_prep import __main__ as entry

  def broken(*args, **kwargs):
    raise BrokenProcessPool('A child process terminated abruptly')

  monkeypatch.setattr(build, 'build_dataset', broken)
  assert entry.main(['build', '--input=x', '--data_dir=y', '--name=abc']) == 1
  err = capsys.readouterr().err
  assert err.startswith('error: BrokenProcessPool: A child process') and err.count('\n') == 1


def test_several_windows_per_track_stay_in_the_track_split(tmp_path):
  root, out = str(tmp_path / 'lib'), str(tmp_path / 'out')
  seconds = {}
  for li, label in enumerate(('low', 'high')):
    os.makedirs(os.path.join(root, label))
    for k in range(4):
      seconds[f'{label}/t{k}'] = 4.5 + 2 * k  # 2, 3, 4, 5 full 2-s windows
      sf.write(os.path.join(root, label, f't{k}.wav'),
               _tone(150 + 800 * li + 20 * k, seconds[f'{label}/t{k}'], seed=k), SR)
  every = build.build_dataset(root, out, 'win_all', clip=CLIP, windows='all', workers=1,
                              progress=False, verbose=False)
  by_track: dict[str, set[str]] = {}
  count: dict[str, int] = {}
  for split, src in tfds.data_source('win_all', data_dir=out).items():
    for i in range(len(src)):
      tid = src[i]['track_id']
      tid = tid.decode() if isinstance(tid, bytes) else tid
      by_track.setdefault(tid, set()).add(split)
      count[tid] = count.get(tid, 0) + 1
  assert all(len(s) == 1 for s in by_track.values())  # no track in two splits
  assert count == {t: int(s // 2) for t, s in seconds.items()}
  assert sum(every['clips_per_split'].values()) == sum(count.values()) == 28
  assert sum(every['tracks_per_split'].values()) == 8
  assert 'windows per track: all' in build.format_summary(every)
  spread = build.build_dataset(root, out, 'win_3', clip=CLIP, windows=3, workers=1,
                               progress=False, verbose=False)
  assert sum(spread['clips_per_split'].values()) == 24
  with pytest.raises(ValueError, match="--windows 'often'"):
    build.build_dataset(root, out, 'win_bad', clip=CLIP, windows='often', workers=1)


def test_spread_windows_cover_the_track():
  y = np.arange(int(7 * SR), dtype=np.float32)
  windows = audio.spread_windows(y, 3, seconds=2.0)
  n = audio.clip_samples(2.0)
  assert [int(w[0]) for w in windows] == [0, (len(y) - n) // 2, len(y) - n]
  assert all(len(w) == n for w in windows)
  assert len(audio.spread_windows(y[:n // 2], 3, seconds=2.0)) == 1  # shorter: one padded


def _stored_encoding(data_dir: str, name: str) -> str:
  with open(os.path.join(data_dir, name, schema.VERSION, 'features.json'), encoding='utf-8') as f:
    return json.load(f)['featuresDict']['features']['spectrogram']['tensor']['encoding']


def _write_tiny_set(data_dir: str, name: str, images: list[np.ndarray]) -> None:
  from data_prep import writer
  examples = [(f'k{i}', {'spectrogram': image, 'tabular': np.zeros(0, np.float32),
                         'label': i % 2, 'label_set': np.eye(2, dtype=np.uint8)[i % 2],
                         'track_id': f't{i}', 'artist_id': f'a{i}'})
              for i, image in enumerate(images)]
  writer.write_dataset(name, data_dir, ['x', 'y'], 0, {'train': lambda: iter(examples)},
                       metadata={}, frames=images[0].shape[1])


def test_spectrograms_stored_as_raw_bytes_and_zlib_sets_still_read(tmp_path, monkeypatch):
  """ArrayRecord compresses records itself: the image is one byte string, not
  zlib on top (nor TFDS's int64 per pixel). Sets written with the earlier zlib
  encoding read back the same images, since TFDS decodes by the stored features."""
  rng = np.random.default_rng(0)
  images = [rng.integers(0, 256, (audio.N_MELS, 40), dtype=np.uint8) for _ in range(4)]
  _write_tiny_set(str(tmp_path), 'raw_set', images)
  assert _stored_encoding(str(tmp_path), 'raw_set') == 'bytes'

  monkeypatch.setattr(schema, 'SPECTROGRAM_ENCODING', tfds.features.Encoding.ZLIB)
  _write_tiny_set(str(tmp_path), 'zlib_set', images)
  monkeypatch.undo()
  assert _stored_encoding(str(tmp_path), 'zlib_set') == 'zlib'
  for name in ('raw_set', 'zlib_set'):
    records = read_split(str(tmp_path), name)
    for i, image in enumerate(images):
      np.testing.assert_array_equal(records[f't{i}']['spectrogram'], image)
