"""A corpus of bad (and awkward but good) inputs, generated small and seeded.

``make_audio_corpus(root)`` writes a library in the folder layout
(``root/<label>/...``) and returns what each entry should come to: 'kept', or
a piece of the reason it is reported with. ``write_manifests`` writes CSVs
naming the same files: with a BOM, mixed line endings and quoted newlines,
and one with 1,000,000 columns.

Sizes stay small: the 1-hour file is a sparse WAV (a header, 20 s of sound,
then a hole the file system stores as nothing), so it takes ~4 MB of disk but
decodes as 3,600 s of CD-quality audio (635 MB of samples; 2.5 GB as float32
at once, which is what decoding it whole would cost).
"""

from __future__ import annotations

import io
import os
import struct

import numpy as np
import soundfile as sf

SR = 22_050
FORMATS = {'wav': {}, 'flac': {}, 'ogg': {'format': 'OGG', 'subtype': 'VORBIS'},
           'mp3': {'format': 'MP3', 'subtype': 'MPEG_LAYER_III'}}
HOUR_SECONDS = 3600
KEPT = 'kept'


def tone(freq: float, seconds: float, sr: int = SR, channels: int = 1, seed: int = 0
         ) -> np.ndarray:
  t = np.arange(int(seconds * sr)) / sr
  y = 0.3 * np.sin(2 * np.pi * freq * t) + 0.02 * np.random.default_rng(seed).standard_normal(len(t))
  y = y.astype(np.float32)
  return np.stack([y] * channels, axis=1) if channels > 1 else y


def encoded(ext: str, seconds: float = 2.0, freq: float = 440.0, sr: int = SR) -> bytes:
  buf = io.BytesIO()
  kw = dict(FORMATS[ext])
  kw.setdefault('format', ext.upper())
  sf.write(buf, tone(freq, seconds, sr), sr, **kw)
  return buf.getvalue()


def wav_header(rate: int, channels: int, bits: int = 16, data_bytes: int = 0,
               float_format: bool = False) -> bytes:
  """A canonical 44-byte RIFF/WAVE header with whatever fields we like."""
  block_align = channels * bits // 8
  fmt = struct.pack('<HHIIHH', 3 if float_format else 1, channels, rate,
                    (rate * block_align) & 0xFFFFFFFF, block_align, bits)
  return (b'RIFF' + struct.pack('<I', 36 + data_bytes) + b'WAVE' + b'fmt ' +
          struct.pack('<I', 16) + fmt + b'data' + struct.pack('<I', data_bytes))


def _write(path: str, data: bytes) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'wb') as f:
    f.write(data)


def _good_files(root: str, expected: dict[str, str]) -> None:
  """Six ordinary files per label, in every format, at several rates."""
  for li, label in enumerate(('blues', 'rock')):
    for k, (ext, rate) in enumerate([('wav', SR), ('flac', 44_100), ('ogg', SR), ('mp3', SR),
                                     ('wav', 8_000), ('flac', 96_000)]):
      path = os.path.join(root, label, f'{label}{k}.{ext}')
      _write(path, encoded(ext, 2.5, 200 * (li + 1) + 30 * k, rate))
      expected[path] = KEPT


def _awkward_but_good(root: str, expected: dict[str, str]) -> None:
  """Valid audio in unusual shapes: kept."""
  many = os.path.join(root, 'rock', 'sixty_four_channels.wav')
  sf.write(many, tone(330, 2.2, 8_000, channels=64), 8_000)
  expected[many] = KEPT
  hour = os.path.join(root, 'blues', 'one_hour.wav')
  write_sparse_hour(hour)
  expected[hour] = KEPT
  name = os.path.join(os.fsencode(root), b'rock', b'caf\xe9 \xff.wav')  # not UTF-8
  with open(name, 'wb') as f:
    f.write(encoded('wav', 2.5, 520))
  expected[os.fsdecode(name)] = KEPT
  locked = os.path.join(root, 'blues', 'no_permission.wav')
  _write(locked, encoded('wav', 2.5, 610))
  os.chmod(locked, 0)
  # Root reads it anyway (permission bits do not bind root): then it is good.
  expected[locked] = KEPT if os.geteuid() == 0 else 'permission denied'
  noise = os.path.join(root, 'rock', 'wav_header_then_random.wav')  # PCM: noise, valid
  _write(noise, wav_header(SR, 1, data_bytes=2 * SR * 3) + np.random.default_rng(5).bytes(
      2 * SR * 3))
  expected[noise] = KEPT


def write_sparse_hour(path: str, rate: int = 44_100, channels: int = 2,
                      sound_seconds: float = 20.0) -> None:
  """A valid 16-bit WAV of HOUR_SECONDS (CD quality: 635 MB as audio): sound,
  then a hole the file system stores as nothing (silence when read)."""
  frames = HOUR_SECONDS * rate
  head = (tone(700, sound_seconds, rate, channels) * 32767).astype('<i2').tobytes()
  with open(path, 'wb') as f:
    f.write(wav_header(rate, channels, data_bytes=2 * channels * frames))
    f.write(head)
    f.truncate(44 + 2 * channels * frames)


def _broken_audio(root: str, expected: dict[str, str]) -> None:
  rng = np.random.default_rng(7)
  for ext in ('mp3', 'flac', 'ogg'):  # a real file's first bytes, then garbage
    head = encoded(ext)[:200 if ext != 'mp3' else 600]
    path = os.path.join(root, 'rock', f'{ext}_header_then_random.{ext}')
    _write(path, head + rng.bytes(20_000))
    expected[path] = 'not decodable'
  for ext in FORMATS:
    for cut in (4, 20):
      path = os.path.join(root, 'blues', f'{ext}_header_cut_at_{cut}.{ext}')
      _write(path, encoded(ext)[:cut])
      expected[path] = 'not decodable'
  nan = os.path.join(root, 'blues', 'nan_inf.wav')
  floats = tone(300, 2.5)
  floats[::7], floats[3::11] = np.nan, np.inf
  sf.write(nan, floats, SR, subtype='FLOAT')
  expected[nan] = 'NaN or infinite'
  pcm = (tone(300, 2.5) * 32767).astype('<i2').tobytes()
  for name, rate, channels, reason in [
      ('rate_zero.wav', 0, 1, 'not decodable'), ('rate_one_hertz.wav', 1, 1, 'sample rate'),
      ('rate_four_gigahertz.wav', 4_000_000_000, 1, 'not decodable'),
      ('zero_channels.wav', SR, 0, 'not decodable')]:
    path = os.path.join(root, 'rock', name)
    _write(path, wav_header(rate, channels, data_bytes=len(pcm)) + pcm)
    expected[path] = reason


def _not_files(root: str, expected: dict[str, str]) -> None:
  loop_a, loop_b = os.path.join(root, 'rock', 'loop_a.wav'), os.path.join(root, 'rock', 'loop_b.wav')
  os.symlink(loop_b, loop_a)
  os.symlink(loop_a, loop_b)
  expected[loop_a] = expected[loop_b] = 'symlink loop'
  folder = os.path.join(root, 'blues', 'x.mp3')
  os.makedirs(folder)
  expected[folder] = 'a folder'
  fifo = os.path.join(root, 'blues', 'pipe.wav')  # opening it would wait forever
  os.mkfifo(fifo)
  expected[fifo] = 'not a regular file'
  empty = os.path.join(root, 'rock', 'empty.flac')
  _write(empty, b'')
  expected[empty] = 'empty file'


def make_audio_corpus(root: str) -> dict[str, str]:
  """Writes the corpus; returns path -> 'kept' or a piece of its reported reason."""
  expected: dict[str, str] = {}
  _good_files(root, expected)
  _awkward_but_good(root, expected)
  _broken_audio(root, expected)
  _not_files(root, expected)
  return expected


def write_manifests(root: str, expected: dict[str, str], out_dir: str) -> dict[str, str]:
  """CSV manifests naming the corpus' audio files (path,label,artist): one with
  a BOM, mixed line endings and quoted newlines; one with 1,000,000 columns.
  Returns name -> path."""
  os.makedirs(out_dir, exist_ok=True)
  rows = []
  for path in sorted(expected):
    label = os.path.basename(os.path.dirname(path))
    rows.append((path, label))
  endings = ['\r\n', '\n', '\r\n', '\n']
  awkward = io.StringIO()
  awkward.write('\ufeffpath,label,artist' + endings[0])
  for i, (path, label) in enumerate(rows):
    if not _utf8(path):
      continue  # a CSV is text: such a name cannot be written in one
    artist = f'"Artist {i}\nwith a line break, and a comma"' if i % 3 == 0 else f'artist {i}'
    awkward.write(f'"{path}",{label},{artist}{endings[i % len(endings)]}')
  paths = {'awkward': os.path.join(out_dir, 'awkward.csv'),
           'wide': os.path.join(out_dir, 'wide.csv')}
  with open(paths['awkward'], 'w', encoding='utf-8', newline='') as f:
    f.write(awkward.getvalue())
  with open(paths['wide'], 'w', encoding='utf-8', newline='') as f:
    f.write('path,label,' + ','.join(f'c{i}' for i in range(999_998)) + '\n')
    filler = ',' * 999_997
    for path, label in rows[:3]:
      if _utf8(path):
        f.write(f'"{path}",{label},{filler}\n')
  return paths


def _utf8(path: str) -> bool:
  try:
    path.encode('utf-8')
    return True
  except UnicodeEncodeError:
    return False
