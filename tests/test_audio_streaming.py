"""Decoding a block at a time: the same samples as decoding a file whole, the
same windows, any channel count, and a 1-hour file in bounded memory."""

from __future__ import annotations

import tracemalloc

import librosa
import numpy as np
import pytest
import soundfile as sf
from tiny_models import CLIP, make_workdir

from crnn_jax.core import audio
from crnn_jax.inference.predictor import Predictor


def _whole_file(path) -> np.ndarray:
  """Decoding as librosa users do it: the whole file, channels averaged, resampled."""
  data, rate = sf.read(str(path), dtype='float32', always_2d=True)
  mono = data.mean(axis=1)
  if rate == audio.SAMPLE_RATE:
    return mono
  return librosa.resample(mono, orig_sr=rate, target_sr=audio.SAMPLE_RATE, res_type='soxr_hq')


@pytest.mark.parametrize('rate, channels, frames, fmt', [
    (44_100, 2, 44_100 * 5 + 7, 'WAV'), (48_000, 6, 48_000 * 3 + 1, 'FLAC'),
    (8_000, 1, 8_000 * 13 + 3, 'OGG'), (22_050, 1, 22_050 * 4, 'WAV')])
def test_blocks_equal_the_whole_file_decoded_at_once(tmp_path, rate, channels, frames, fmt):
  rng = np.random.default_rng(rate)
  path = tmp_path / f'x.{fmt.lower()}'
  sf.write(str(path), (0.1 * rng.normal(size=(frames, channels))).astype(np.float32), rate,
           format=fmt)
  expected = _whole_file(path)
  source = audio.open_audio(path)
  assert (source.sample_rate, source.channels) == (rate, channels)
  for block_seconds in (0.37, 1.0, 100.0):
    blocks = list(source.blocks(block_seconds=block_seconds))
    assert max(len(b) for b in blocks) <= block_seconds * audio.SAMPLE_RATE + 2048
    np.testing.assert_array_equal(np.concatenate(blocks), expected)
  np.testing.assert_array_equal(audio.load_audio(path), expected)


def test_stream_windows_equal_windows_of_the_whole_signal():
  y = np.random.default_rng(0).normal(size=int(17.3 * audio.SAMPLE_RATE)).astype(np.float32)
  n = audio.clip_samples(CLIP)
  for block in (1_000, n - 1, n, 3 * n + 5, len(y)):
    got = list(audio.stream_windows((y[i:i + block] for i in range(0, len(y), block)), CLIP))
    assert [start for start, _ in got] == [0.0, 5.0, 10.0]
    for i, (_, window) in enumerate(got):
      np.testing.assert_array_equal(window, y[i * n:(i + 1) * n])
  short, = audio.stream_windows([y[:n // 2], y[n // 2:n - 9]], CLIP)
  np.testing.assert_array_equal(short[1], np.pad(y[:n - 9], (0, 9)))
  with pytest.raises(audio.AudioError, match='too short'):
    list(audio.stream_windows([y[:100]], CLIP, min_seconds=2.0))


@pytest.fixture(scope='module')
def predictor(tmp_path_factory):
  return Predictor.from_workdir(make_workdir(tmp_path_factory.mktemp('wd_stream'))[3],
                                batch_size=8)


def test_six_channel_file_is_mixed_to_mono(predictor, tmp_path):
  rng = np.random.default_rng(6)
  t = np.arange(int(CLIP * 48_000)) / 48_000
  channels = [np.sin(2 * np.pi * f * t) * 0.2 + 0.01 * rng.normal(size=t.size)
              for f in (110, 220, 330, 440, 55, 880)]  # 5.1: each channel different
  path = tmp_path / 'surround.flac'
  sf.write(str(path), np.stack(channels, 1).astype(np.float32), 48_000)
  result, = predictor.predict_files([path], details=True)
  details = result['details']
  assert details.audio_info['channels'] == 6 and details.audio_info['sample_rate'] == 48_000
  image = audio.spectrogram_image(audio.fixed_window(_whole_file(path), CLIP), CLIP)
  np.testing.assert_array_equal(details.images[0], image)


@pytest.mark.slow
def test_one_hour_file_is_scored_in_bounded_memory(predictor, tmp_path):
  """720 windows of 5 s; the whole decoded hour (mono 22,050 Hz float32) would be
  318 MB, at the file's 16 kHz 230 MB: peak traced memory must stay far below."""
  rate, path = 16_000, tmp_path / 'hour.flac'
  rng = np.random.default_rng(0)
  with sf.SoundFile(str(path), 'w', rate, 1, format='FLAC') as f:
    for minute in range(60):
      t = np.arange(60 * rate) / rate
      tone = 0.3 * np.sin(2 * np.pi * (110 + 5 * minute) * t) * (1 + np.sin(2 * np.pi * t))
      f.write((tone + 0.01 * rng.normal(size=t.size)).astype(np.float32))
  short = tmp_path / 'short.wav'
  sf.write(str(short), np.sin(np.arange(3 * CLIP * rate) / 40).astype(np.float32), rate)
  predictor.predict_files([short], details=True)  # one-time imports and compiles: not counted
  tracemalloc.start()
  try:
    result, = predictor.predict_files([path], details=True)
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  assert result['windows'] == 720 and result['details'].audio_info['seconds'] == 3600.0
  images = result['details'].images.nbytes  # 720 x 128 x 216 uint8 = 20 MB, kept for details
  assert peak < images + 80 * 2**20, f'peak {peak / 2**20:.0f} MiB'
