"""Audio decoding and the reference's spectrogram contract (docs/reference.md section 2).

The one place that turns sound into model input, used by data preparation and
by prediction alike, so both see exactly the same numbers:

  decode -> mono 22,050 Hz -> fixed-length window -> mel power spectrogram
  (n_fft 2048, hop 512, 128 Slaney bands 0 Hz..Nyquist, centred frames)
  -> log(power + 1e-9) -> per-clip min-max to 0..255, truncated to uint8
  -> frequency axis flipped (low bands at the bottom) and inverted (255 - x).

That uint8 "image" is what a data set stores; ``image_to_model_input``
divides by 255 as the reference's image loader did. Training, evaluation,
prediction and export all read images through it.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import math
import os
import stat
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import librosa
import numpy as np
import soundfile as sf
import soxr

# What a library folder's audio files may be named; soundfile decodes them all.
AUDIO_EXTENSIONS = ('.mp3', '.ogg', '.oga', '.opus', '.flac', '.wav')
SAMPLE_RATE = 22_050
CLIP_SECONDS = 30.0
N_FFT = 2048
HOP_LENGTH = 512
N_MELS = 128
LOG_EPSILON = 1e-9
# An MP3 cut short decodes without error, just shorter than its header says.
TRUNCATED_FRACTION = 0.9
# librosa < 0.10 (the reference's, 2020) padded centred frames by reflection;
# librosa 0.10+ defaults to zeros. The first and last frame depend on it.
PAD_MODE = 'reflect'
# A window whose peak stays below this is silence (digital silence decodes to
# tiny non-zero values through some codecs); it says nothing about a genre.
SILENCE_PEAK = 1e-4  # -80 dBFS
# librosa.feature.melspectrogram's arguments besides y, sr and fmax (= sr / 2).
MEL_PARAMS = {'n_fft': N_FFT, 'hop_length': HOP_LENGTH, 'n_mels': N_MELS, 'fmin': 0.0,
              'htk': False, 'norm': 'slaney', 'power': 2.0, 'window': 'hann', 'center': True,
              'pad_mode': PAD_MODE}
# soxr's quality for resampling (librosa's res_type 'soxr_hq').
RESAMPLE_QUALITY = 'HQ'
# Sample rates a real recording can have; others are damaged headers (a rate
# of 1 Hz would make seconds of file into hours of resampled audio).
MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 768_000
# Decoded audio held at once while streaming a file (float32, all channels): a
# long file is never in memory whole at its own rate and channel count.
BLOCK_BYTES = 2 << 20
MPEG_FRAME = 1152  # samples per MPEG-1 layer III frame (two MPEG-2 frames)


class AudioError(Exception):
  """A file that cannot give a clip; the message is the reason, for reports."""


def clip_samples(seconds: float = CLIP_SECONDS, sample_rate: int = SAMPLE_RATE) -> int:
  return round(seconds * sample_rate)


def num_frames(seconds: float = CLIP_SECONDS, sample_rate: int = SAMPLE_RATE) -> int:
  """Frames of a centred STFT of a clip: 1,292 for the reference's 30 s."""
  return 1 + clip_samples(seconds, sample_rate) // HOP_LENGTH


def unreadable_reason(path: str | os.PathLike) -> str | None:
  """Why ``path`` cannot be opened as an audio file, before trying; None if it can.

  Checked first because some paths must never be opened: a FIFO (named like a
  song) would wait forever, a symlink loop or a folder give decoders' errors
  that say nothing.
  """
  try:
    st = os.stat(path)
  except OSError as e:
    if e.errno == errno.ELOOP:
      return 'unreadable path: symlink loop'
    if e.errno == errno.ENOENT and os.path.lexists(path):
      return 'unreadable path: broken symlink'
    return f'unreadable path: {e.strerror or e}'
  if stat.S_ISDIR(st.st_mode):
    return 'unreadable path: a folder, not an audio file'
  if not stat.S_ISREG(st.st_mode):
    return 'unreadable path: not a regular file (a pipe, socket or device)'
  if not os.access(path, os.R_OK):
    return 'unreadable path: permission denied'
  if st.st_size == 0:
    return 'empty file (0 bytes)'
  return None


@dataclasses.dataclass(frozen=True)
class AudioSource:
  """An audio file whose header was read (``open_audio``); ``blocks`` decodes it."""
  path: str
  sample_rate: int  # the file's own
  channels: int
  declared_frames: int  # from the header (an estimate for MP3s without a length tag)

  def blocks(self, sample_rate: int = SAMPLE_RATE,
             block_seconds: float | None = None) -> Iterator[np.ndarray]:
    """Mono float32 at ``sample_rate``, a block at a time, as the file decodes.

    A block is about ``block_seconds`` of the file (default: BLOCK_BYTES of
    decoded samples), rounded down to whole MPEG frames. Channels are averaged
    (as librosa.load does), then resampled with soxr's streaming resampler;
    the blocks joined are exactly librosa.resample's (res_type 'soxr_hq') of
    the whole signal, of its length ceil(n * ratio). A 1-hour file thus costs
    one block at a time. AudioError (one line) for corrupt data, NaN samples
    or no samples, possibly after some blocks (a truncated MP3 is found at
    its end); a caller that stops early never decodes the rest.
    """
    rate = self.sample_rate
    resampler = (soxr.ResampleStream(rate, sample_rate, 1, dtype='float32',
                                     quality=RESAMPLE_QUALITY) if rate != sample_rate else None)
    block = _block_frames(rate, self.channels, block_seconds)
    decoded = resampled = 0
    with _open_sound_file(self.path) as f:
      while True:
        data = _read_block(f, block)
        last = len(data) < block
        mono = _channel_mean(data)
        if not np.all(np.isfinite(mono)):
          raise AudioError('audio contains NaN or infinite samples')
        decoded += len(mono)
        if resampler is not None:
          mono = resampler.resample_chunk(mono, last=last)
          if last:  # librosa.resample's length: ceil(n * ratio), zero-padded or cut
            wanted = max(0, math.ceil(decoded * (sample_rate / rate)) - resampled)
            mono = np.pad(mono, (0, max(0, wanted - len(mono))))[:wanted]
          resampled += len(mono)
        if len(mono):
          yield np.ascontiguousarray(mono, dtype=np.float32)
        if last:
          break
    if decoded == 0:
      raise AudioError('no audio samples')
    self._check_complete(decoded)

  def stated_samples(self, sample_rate: int = SAMPLE_RATE) -> int:
    """The length at ``sample_rate`` the header states (0 if it states none)."""
    if not 0 < self.declared_frames < 2**62:
      return 0
    return round(self.declared_frames * sample_rate / self.sample_rate)

  def states_length(self) -> bool:
    """Whether this is an MP3 whose header states its exact length (Xing/Info/VBRI)."""
    try:
      return self.path.lower().endswith('.mp3') and _mp3_declares_length(self.path)
    except OSError:
      return False

  def _check_complete(self, decoded: int) -> None:
    """An MP3 cut short decodes without error, just shorter than its header says."""
    declared, rate = self.declared_frames, self.sample_rate
    if (0 < declared < 2**62 and decoded < TRUNCATED_FRACTION * declared
        and self.states_length()):
      raise AudioError(f'truncated file: decoded {decoded / rate:.2f} s of the '
                       f'{declared / rate:.2f} s its header declares')


def open_audio(path: str | os.PathLike) -> AudioSource:
  """Reads a file's header. AudioError (one line) for a path that must not be
  opened (unreadable_reason), an empty or non-audio file, or an absurd sample
  rate; a file name that is not UTF-8 is opened by its bytes."""
  reason = unreadable_reason(path)
  if reason:
    raise AudioError(reason)
  with _open_sound_file(path) as f:
    rate, channels, frames = int(f.samplerate), int(f.channels), int(f.frames)
  if channels < 1:
    raise AudioError('no audio samples')
  if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
    raise AudioError(f'absurd sample rate: {rate:,} Hz (expected {MIN_SAMPLE_RATE:,} to '
                     f'{MAX_SAMPLE_RATE:,})')
  return AudioSource(os.fspath(path), rate, channels, frames)


def decoded_blocks(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE
                   ) -> Iterator[np.ndarray]:
  """The file as consecutive mono float32 blocks at ``sample_rate``
  (``open_audio(path).blocks``), every error raised as the stream is read."""
  yield from open_audio(path).blocks(sample_rate)


def _channel_mean(data: np.ndarray) -> np.ndarray:
  """(frames, channels) -> mono float32: the channels summed in order, then
  divided by their count, as librosa.to_mono's mean does. Summed a column at a
  time: numpy's mean along the short rows took a third of a clip's decoding."""
  mono = np.array(data[:, 0], dtype=np.float32)
  for c in range(1, data.shape[1]):
    mono += data[:, c]
  if data.shape[1] > 1:
    mono /= data.shape[1]
  return mono


def _block_frames(rate: int, channels: int, block_seconds: float | None) -> int:
  """Frames per read: ``block_seconds`` of the file, else ~BLOCK_BYTES decoded;
  a whole number of MPEG frames (1,152 samples), at least one. libsndfile's
  MP3 decoder gives other samples when a read ends mid-frame; aligned reads
  give the same samples whatever the block size."""
  frames = (block_seconds * rate if block_seconds is not None
            else BLOCK_BYTES / (4 * max(channels, 1)))
  return max(1, int(frames) // MPEG_FRAME) * MPEG_FRAME


def _open_sound_file(path: str | os.PathLike) -> sf.SoundFile:
  try:  # as bytes: soundfile cannot encode a file name that is not UTF-8
    return sf.SoundFile(os.fsencode(path))
  except Exception as e:  # noqa: BLE001  soundfile raises many types for corrupt input
    raise AudioError(f'not decodable audio: {_decoder_message(e)}') from None


def _read_block(f: sf.SoundFile, frames: int) -> np.ndarray:
  try:
    return f.read(frames, dtype='float32', always_2d=True)
  except Exception as e:  # noqa: BLE001
    raise AudioError(f'not decodable audio: {_decoder_message(e)}') from None


def _decoder_message(e: Exception) -> str:
  message = str(e).splitlines()[0] if str(e) else type(e).__name__
  if 'does not exist' in message or 'not recognised' in message.lower():
    # libsndfile's words for a file whose bytes it cannot identify.
    message = 'unrecognised format or corrupt data'
  return message.split(': ', 1)[-1][:200] if message.startswith('Error opening') else message[:200]


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
  """The whole file, mono float32 at ``sample_rate`` (decoded_blocks joined).

  Holds all of it: for a clip use ``load_clip``, for windows ``iter_windows``.
  """
  return np.concatenate(list(decoded_blocks(path, sample_rate)))


def load_clip(path: str | os.PathLike, seconds: float = CLIP_SECONDS, position: str = 'start',
              min_seconds: float = 0.0, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
  """``fixed_window(load_audio(path), ...)``, decoding no more than it needs.

  'start' stops after the window, except for an MP3 that states its length,
  which is decoded to its end (not kept) to catch truncation as load_audio
  does. 'center' takes the middle from the length the header states, and
  decodes once more if the file turns out to have another length.
  """
  if position not in ('start', 'center'):
    raise ValueError(f"unknown window position {position!r}: use 'start' or 'center'")
  source = open_audio(path)
  n = clip_samples(seconds, sample_rate)
  start = 0
  if position == 'center':
    start = max(0, (source.stated_samples(sample_rate) - n) // 2)
  window, total = take_span(source.blocks(sample_rate), start, n,
                            to_end=position == 'center' or source.states_length())
  wanted = max(0, (total - n) // 2) if position == 'center' else 0
  if wanted != start:  # the stated length was wrong: the middle is elsewhere
    window, total = take_span(source.blocks(sample_rate), wanted, n, to_end=False)
  return fixed_window(window[:total], seconds, 'start', min_seconds, sample_rate)


def take_span(blocks: Iterator[np.ndarray], start: int, n: int, to_end: bool
              ) -> tuple[np.ndarray, int]:
  """(samples [start, start + n) of a decoded_blocks stream, zero where the
  stream is shorter; samples seen). Stops reading after the span unless
  ``to_end`` (then the count is the stream's length)."""
  window = np.zeros(n, np.float32)
  offset = 0
  for block in blocks:
    lo, hi = max(start, offset), min(start + n, offset + len(block))
    if lo < hi:
      window[lo - start:hi - start] = block[lo - offset:hi - offset]
    offset += len(block)
    if offset >= start + n and not to_end:
      blocks.close()  # type: ignore[attr-defined]
      break
  return window, offset


def iter_windows(path: str | os.PathLike, seconds: float = CLIP_SECONDS,
                 min_seconds: float = 0.0, sample_rate: int = SAMPLE_RATE
                 ) -> Iterator[np.ndarray]:
  """``sliding_windows(load_audio(path), ...)`` decoding as it goes: memory
  holds one window and one block, so an hour-long file costs what a short one does."""
  for _, window in stream_windows(decoded_blocks(path, sample_rate), seconds, min_seconds,
                                  sample_rate):
    yield window


def _mp3_declares_length(path: str) -> bool:
  """Whether the MP3 has a Xing/Info/VBRI frame, i.e. states its exact length.

  Without one, the decoder estimates the length from the first frame's bitrate,
  which is wrong for VBR files (a quiet intro makes it far too long), so a
  short decode proves nothing.
  """
  with open(path, 'rb') as f:
    head = f.read(10)
    offset = 0
    if head[:3] == b'ID3' and len(head) == 10:  # skip an ID3v2 tag (syncsafe size)
      size = (head[6] << 21) | (head[7] << 14) | (head[8] << 7) | head[9]
      offset = 10 + size + (10 if head[5] & 0x10 else 0)
    f.seek(offset)
    first_frame = f.read(4096)  # the tag sits inside the first frame
  return any(tag in first_frame for tag in (b'Xing', b'Info', b'VBRI'))


def fixed_window(y: np.ndarray, seconds: float = CLIP_SECONDS, position: str = 'start',
                 min_seconds: float = 0.0, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
  """Crops or zero-pads y to exactly ``seconds``.

  position 'start' takes the first seconds (a Spotify preview, as the
  reference); 'center' the middle of a longer track. Clips shorter than
  ``min_seconds`` raise AudioError rather than being mostly padding.
  """
  n = clip_samples(seconds, sample_rate)
  if len(y) < int(min_seconds * sample_rate):
    raise AudioError(f'clip too short: {len(y) / sample_rate:.2f} s < minimum {min_seconds:g} s')
  if len(y) >= n:
    if position == 'center':
      start = (len(y) - n) // 2
    elif position == 'start':
      start = 0
    else:
      raise ValueError(f"unknown window position {position!r}: use 'start' or 'center'")
    return y[start:start + n]
  return np.pad(y, (0, n - len(y)))


def sliding_windows(y: np.ndarray, seconds: float = CLIP_SECONDS, min_seconds: float = 0.0,
                    sample_rate: int = SAMPLE_RATE) -> Iterator[np.ndarray]:
  """Non-overlapping full windows of a long clip (prediction averages them).

  A clip shorter than one window yields one padded window, as in preparation.
  """
  for _, window in stream_windows([y], seconds, min_seconds, sample_rate):
    yield window


def stream_windows(blocks: Iterable[np.ndarray], seconds: float = CLIP_SECONDS,
                   min_seconds: float = 0.0, sample_rate: int = SAMPLE_RATE
                   ) -> Iterator[tuple[float, np.ndarray]]:
  """(start in seconds, window) of a signal given in consecutive blocks.

  Full windows at 0, seconds, 2 x seconds, ...; the rest after the last full
  window is dropped. A signal shorter than one window gives one window,
  zero-padded (fixed_window; AudioError below ``min_seconds``). Holds at most
  one window plus one block.
  """
  n = clip_samples(seconds, sample_rate)
  pending: list[np.ndarray] = []
  buffered, emitted = 0, 0
  for block in blocks:
    pending.append(np.asarray(block, np.float32))
    buffered += len(block)
    while buffered >= n:
      joined = pending[0] if len(pending) == 1 else np.concatenate(pending)
      yield emitted * seconds, joined[:n]
      emitted += 1
      pending, buffered = [joined[n:]], buffered - n
  if not emitted:
    rest = np.concatenate(pending) if pending else np.zeros(0, np.float32)
    yield 0.0, fixed_window(rest, seconds, 'start', min_seconds, sample_rate)


def spread_windows(y: np.ndarray, count: int, seconds: float = CLIP_SECONDS,
                   min_seconds: float = 0.0, sample_rate: int = SAMPLE_RATE) -> list[np.ndarray]:
  """``count`` full windows spread evenly over a track, the first at its start
  and the last at its end (overlapping where it is shorter than ``count``
  windows). A track shorter than one window gives one padded window."""
  n = clip_samples(seconds, sample_rate)
  if len(y) <= n:
    return [fixed_window(y, seconds, 'start', min_seconds, sample_rate)]
  starts = np.unique(np.round(np.linspace(0, len(y) - n, count)).astype(np.int64))
  return [y[s:s + n] for s in starts]


def is_silent(window: np.ndarray) -> bool:
  """Whether a window's peak stays below SILENCE_PEAK."""
  return float(np.max(np.abs(window))) < SILENCE_PEAK


_STFT_PARAMS = ('n_fft', 'hop_length', 'window', 'center', 'pad_mode')
_FILTER_PARAMS = ('n_mels', 'fmin', 'htk', 'norm')


@functools.lru_cache(maxsize=4)
def _mel_basis(sample_rate: int) -> np.ndarray:
  """librosa's mel filter bank, built once per rate (it is ~5% of a clip's work)."""
  basis = librosa.filters.mel(sr=sample_rate, fmax=sample_rate / 2,
                              n_fft=MEL_PARAMS['n_fft'],
                              **{k: MEL_PARAMS[k] for k in _FILTER_PARAMS})
  basis.setflags(write=False)
  return basis


def mel_power(y: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
  """``librosa.feature.melspectrogram(y=y, sr=sample_rate, fmax=sample_rate / 2,
  **MEL_PARAMS)``, bit for bit, with the filter bank cached: librosa's own
  steps (stft, power, the same einsum) without rebuilding the bank per clip."""
  stft = librosa.stft(y, **{k: MEL_PARAMS[k] for k in _STFT_PARAMS})
  power = np.abs(stft) ** MEL_PARAMS['power']
  return np.einsum('...ft,mf->...mt', power, _mel_basis(sample_rate), optimize=True)


def log_mel(y: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
  """Natural log of the mel power spectrogram: float32 (128, frames)."""
  return np.log(mel_power(y, sample_rate) + LOG_EPSILON).astype(np.float32)


def to_image(log_spec: np.ndarray) -> np.ndarray:
  """Min-max to 0..255, truncate, flip frequency, invert: the stored uint8."""
  lo, hi = float(log_spec.min()), float(log_spec.max())
  if not hi > lo:
    raise AudioError('silent clip (constant spectrogram)')
  scaled = ((log_spec - lo) / (hi - lo) * 255.0).astype(np.uint8)
  return (255 - scaled[::-1]).astype(np.uint8)


def spectrogram_image(y: np.ndarray, seconds: float = CLIP_SECONDS,
                      sample_rate: int = SAMPLE_RATE) -> np.ndarray:
  """A fixed-length clip -> the reference's uint8 (128, frames) image."""
  if len(y) != clip_samples(seconds, sample_rate):
    y = fixed_window(y, seconds, 'start', 0.0, sample_rate)
  if not np.any(y):
    raise AudioError('silent clip (all samples zero)')
  return to_image(log_mel(y, sample_rate))


def image_to_model_input(image: Any) -> Any:
  """uint8 (..., 128, frames) -> float32 (..., 128, frames, 1) in [0, 1].

  Written with array methods only, so numpy (prediction) and jax (the
  training step, on the device: 4x fewer bytes to copy) give the same bits.
  """
  return image.astype(np.float32)[..., None] / 255.0


@dataclasses.dataclass(frozen=True)
class ClipSettings:
  """How a file becomes a clip; stored with a data set so prediction matches."""
  seconds: float = CLIP_SECONDS
  position: str = 'start'
  min_seconds: float = 5.0

  def frames(self) -> int:
    return num_frames(self.seconds)

  @classmethod
  def from_metadata(cls, clip: Mapping[str, Any] | None) -> ClipSettings:
    """A data set's metadata 'clip' entry; missing fields take the defaults."""
    clip = dict(clip or {})
    defaults = cls()
    return cls(seconds=float(clip.get('seconds', defaults.seconds)),
               position=str(clip.get('position', defaults.position)),
               min_seconds=float(clip.get('min_seconds', defaults.min_seconds)))


def spectrogram_contract(clip: ClipSettings) -> dict[str, Any]:
  """Everything that turns a file into model input, as data (the export's JSON).

  Enough to reproduce ``spectrogram_image`` without this package:
  ``librosa.feature.melspectrogram(y=y, **contract['melspectrogram'])``, then
  the steps named under 'log', 'scaling' and 'image'.
  """
  return {
      'decode': {'sample_rate': SAMPLE_RATE, 'channels': 'mean of all channels',
                 'resampler': f'soxr {RESAMPLE_QUALITY} (librosa res_type soxr_hq)'},
      'window': {'seconds': clip.seconds, 'samples': clip_samples(clip.seconds),
                 'frames': clip.frames(), 'min_seconds': clip.min_seconds,
                 'training_position': clip.position,
                 'prediction': 'every full non-overlapping window from the start; a file '
                               'shorter than one window is zero-padded at the end; windows '
                               'whose peak is below silence_peak are skipped',
                 'silence_peak': SILENCE_PEAK},
      'melspectrogram': {'sr': SAMPLE_RATE, 'fmax': SAMPLE_RATE / 2, **MEL_PARAMS},
      'log': {'function': 'natural logarithm of (power + epsilon)', 'epsilon': LOG_EPSILON,
              'dtype': 'float32'},
      'scaling': {'per': 'window', 'formula': '(x - min) / (max - min) * 255, truncated to '
                                              'uint8 (a constant window is silent)'},
      'image': {'flip_frequency': True, 'invert': True, 'dtype': 'uint8',
                'shape': [N_MELS, clip.frames()],
                'steps': 'rows reversed (row 0 = highest mel band), then 255 - x'},
      'model_input': {'formula': 'image / 255 as float32', 'shape': ['batch', N_MELS,
                                                                    clip.frames()]},
  }
