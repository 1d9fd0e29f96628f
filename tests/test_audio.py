"""The spectrogram contract (SPEC.md section 2) against a direct librosa computation."""

import librosa
import numpy as np
import pytest
import soundfile as sf

from crnn_jax.core import audio


def _tone(seconds, sr=audio.SAMPLE_RATE, channels=1):
  t = np.arange(int(seconds * sr)) / sr
  y = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 3000 * t)
  y = y + 0.01 * np.random.default_rng(0).normal(size=y.shape)
  return np.stack([y] * channels, axis=1).astype(np.float32) if channels > 1 else y.astype(np.float32)


def test_image_matches_direct_librosa_computation():
  import librosa
  y = _tone(30.0)
  image = audio.spectrogram_image(y)
  assert image.shape == (128, 1292) and image.dtype == np.uint8
  # Straight from SPEC.md, independently of audio.py's helpers.
  s = librosa.feature.melspectrogram(y=y, sr=22050, n_fft=2048, hop_length=512, n_mels=128,
                                     center=True, pad_mode='reflect')
  x = np.log(s + 1e-9)
  x = ((x - x.min()) / (x.max() - x.min()) * 255).astype(np.uint8)
  expected = 255 - np.flipud(x)
  np.testing.assert_array_equal(image, expected)
  # Low frequencies at the bottom: the 440 Hz tone (loudest -> darkest after
  # inversion) lies in the lower quarter of the rows.
  assert image.mean(axis=1).argmin() > 96
  model_input = audio.image_to_model_input(image)
  assert model_input.shape == (128, 1292, 1) and 0 <= model_input.min() <= model_input.max() <= 1


def test_decode_resamples_and_downmixes(tmp_path):
  path = tmp_path / 'stereo.flac'
  sf.write(path, _tone(2.0, sr=44100, channels=2), 44100)
  y = audio.load_audio(path)
  assert y.ndim == 1 and abs(len(y) - 2 * 22050) <= 1


def test_window_crop_pad_and_minimum():
  y = np.ones(10 * 22050, np.float32)
  assert len(audio.fixed_window(y, 30.0)) == 661_500
  long = np.arange(40 * 22050, dtype=np.float32)
  centre = audio.fixed_window(long, 30.0, 'center')
  assert centre[0] == 5 * 22050
  with pytest.raises(audio.AudioError, match='too short'):
    audio.fixed_window(y[:22050], 30.0, min_seconds=5.0)
  assert len(list(audio.sliding_windows(long, 10.0))) == 4


@pytest.mark.parametrize('content,reason', [(b'', 'empty'), (b'not audio at all' * 100, 'decodable')])
def test_bad_files_raise_audio_error_with_reason(tmp_path, content, reason):
  path = tmp_path / 'bad.mp3'
  path.write_bytes(content)
  with pytest.raises(audio.AudioError, match=reason):
    audio.load_audio(path)


def test_silence_is_rejected():
  with pytest.raises(audio.AudioError, match='silent'):
    audio.spectrogram_image(np.zeros(22050, np.float32), seconds=1.0)


def test_frames():
  assert audio.num_frames(30.0) == 1292


def test_truncated_mp3_is_rejected_and_complete_one_accepted(tmp_path):
  path = tmp_path / 'full.mp3'
  sf.write(path, _tone(6.0), 22050, format='MP3')
  assert abs(len(audio.load_audio(path)) - 6 * 22050) < 22050 // 10
  cut = tmp_path / 'cut.mp3'
  data = path.read_bytes()
  cut.write_bytes(data[:len(data) // 2])
  with pytest.raises(audio.AudioError, match='truncated file'):
    audio.load_audio(cut)


def test_non_audio_bytes_get_an_honest_reason(tmp_path):
  path = tmp_path / 'notes.mp3'
  path.write_text('these are liner notes, not audio\n' * 40)
  with pytest.raises(audio.AudioError, match='unrecognised format or corrupt data'):
    audio.load_audio(path)


def _strip_length_frame(data: bytes) -> bytes:
  """Removes the MPEG frame that carries the Xing/Info tag."""
  tag = max(data.find(b'Xing'), data.find(b'Info'))
  start = data.rfind(b'\xff', 0, tag)
  while (data[start + 1] & 0xE0) != 0xE0:
    start = data.rfind(b'\xff', 0, start)
  sync = data[start:start + 2]
  end = data.find(sync, tag)
  return data[:start] + data[end:]


def test_vbr_mp3_without_length_header_is_not_called_truncated(tmp_path):
  t = np.arange(20 * 22050) / 22050
  quiet_intro = np.where(t < 8, 0.0, 0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
  vbr = tmp_path / 'vbr.mp3'
  sf.write(vbr, quiet_intro, 22050, format='MP3', bitrate_mode='VARIABLE')
  headerless = tmp_path / 'headerless.mp3'
  headerless.write_bytes(_strip_length_frame(vbr.read_bytes()))
  with sf.SoundFile(headerless) as f:
    assert f.frames > 22050 * 20 / audio.TRUNCATED_FRACTION  # the bitrate guess overshoots
  assert abs(len(audio.load_audio(headerless)) / 22050 - 20) < 0.5


@pytest.mark.parametrize('sample_rate', [audio.SAMPLE_RATE, 16_000])
def test_mel_power_is_librosa_melspectrogram_bit_for_bit(sample_rate):
  y = np.random.default_rng(5).standard_normal(sample_rate * 3).astype(np.float32) * 0.3
  expected = librosa.feature.melspectrogram(y=y, sr=sample_rate, fmax=sample_rate / 2,
                                            **audio.MEL_PARAMS)
  assert np.array_equal(audio.mel_power(y, sample_rate), expected)
  assert np.array_equal(audio.mel_power(y, sample_rate), expected)  # from the cached bank
