"""Audio decoding and the reference's spectrogram contract (SPEC.md section 2).

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
import os
import stat
from collections.abc import Iterator, Mapping
from typing import Any

import librosa
import numpy as np
import soundfile as sf
import soxr

# What a library folder's audio files may be named; soundfile decodes them all.
AUDIO_EXTENSIONS = ('.mp3', '.ogg', '.oga', '.flac', '.wav')
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
# Sample rates a real recording can have; others are damaged headers (a rate
# of 1 Hz would make seconds of file into hours of resampled audio).
MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 768_000
# Decoded audio held at once while streaming a file (float32, all channels).
BLOCK_BYTES = 8 << 20
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


def decoded_blocks(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE
                   ) -> Iterator[np.ndarray]:
  """The file as consecutive mono float32 blocks at ``sample_rate``, as they
  decode: memory holds one block (~BLOCK_BYTES), whatever the file's length.

  Channels are averaged (as librosa.load does), then resampled with soxr's
  streaming resampler, which gives exactly the samples of resampling the
  whole signal at once. Raises AudioError with a one-line reason for anything
  unusable, possibly after some blocks (a NaN further in, a truncated MP3
  found at its end); a caller that stops early never decodes the rest.
  """
  reason = unreadable_reason(path)
  if reason:
    raise AudioError(reason)
  with _open_sound_file(path) as f:
    rate, channels, declared = f.samplerate, f.channels, f.frames
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
      raise AudioError(f'absurd sample rate: {rate:,} Hz (expected {MIN_SAMPLE_RATE:,} to '
                       f'{MAX_SAMPLE_RATE:,})')
    resampler = (soxr.ResampleStream(rate, sample_rate, 1, dtype='float32', quality='HQ')
                 if rate != sample_rate else None)
    block = _block_frames(channels)
    total = 0
    while True:
      data = _read_block(f, block)
      last = len(data) < block
      mono = data.mean(axis=1) if len(data) else np.zeros(0, np.float32)
      if not np.all(np.isfinite(mono)):
        raise AudioError('audio contains NaN or infinite samples')
      total += len(mono)
      out = resampler.resample_chunk(mono, last=last) if resampler is not None else mono
      if len(out):
        yield np.ascontiguousarray(out, dtype=np.float32)
      if last:
        break
  if total == 0:
    raise AudioError('no audio samples')
  _check_not_truncated(os.fspath(path), rate, declared, total)


def _block_frames(channels: int) -> int:
  """Frames per read: ~BLOCK_BYTES, a whole number of MPEG frames (1,152
  samples). libsndfile's MP3 decoder gives other samples when a read ends
  mid-frame; aligned reads give the same samples whatever the block size."""
  return max(1, BLOCK_BYTES // (4 * max(channels, 1)) // MPEG_FRAME) * MPEG_FRAME


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


def _check_not_truncated(path: str, rate: int, declared: int, decoded: int) -> None:
  if (path.lower().endswith('.mp3') and 0 < declared < 2**62
      and decoded < TRUNCATED_FRACTION * declared and _mp3_declares_length(path)):
    raise AudioError(f'truncated file: decoded {decoded / rate:.2f} s of the '
                     f'{declared / rate:.2f} s its header declares')


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
  reason = unreadable_reason(path)  # before any peek at the header (a FIFO would block)
  if reason:
    raise AudioError(reason)
  n = clip_samples(seconds, sample_rate)
  start = 0
  if position == 'center':
    start = max(0, (_stated_length(path, sample_rate) - n) // 2)
  window, total = take_span(decoded_blocks(path, sample_rate), start, n,
                            to_end=position == 'center' or _mp3_states_length(path))
  wanted = max(0, (total - n) // 2) if position == 'center' else 0
  if wanted != start:  # the stated length was wrong: the middle is elsewhere
    window, total = take_span(decoded_blocks(path, sample_rate), wanted, n, to_end=False)
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


def _stated_length(path: str | os.PathLike, sample_rate: int) -> int:
  """The length in samples at ``sample_rate`` the header states (0 if unknown)."""
  try:
    with sf.SoundFile(os.fsencode(path)) as f:
      return round(f.frames * sample_rate / f.samplerate) if 0 < f.frames < 2**62 else 0
  except Exception:  # noqa: BLE001  decoded_blocks reports why
    return 0


def _mp3_states_length(path: str | os.PathLike) -> bool:
  path = os.fspath(path)
  try:
    return path.lower().endswith('.mp3') and _mp3_declares_length(path)
  except OSError:
    return False


def iter_windows(path: str | os.PathLike, seconds: float = CLIP_SECONDS,
                 min_seconds: float = 0.0, sample_rate: int = SAMPLE_RATE
                 ) -> Iterator[np.ndarray]:
  """``sliding_windows(load_audio(path), ...)`` decoding as it goes: memory
  holds one window, so an hour-long file costs what a short one does."""
  n = clip_samples(seconds, sample_rate)
  pending: list[np.ndarray] = []
  held = 0
  emitted = False
  for block in decoded_blocks(path, sample_rate):
    pending.append(block)
    held += len(block)
    while held >= n:
      joined = np.concatenate(pending)
      yield joined[:n]
      emitted = True
      pending, held = [joined[n:]], held - n
  if not emitted:  # shorter than one window: padded, as in preparation
    yield fixed_window(np.concatenate(pending) if pending else np.zeros(0, np.float32),
                       seconds, 'start', min_seconds, sample_rate)


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
  n = clip_samples(seconds, sample_rate)
  if len(y) <= n:
    yield fixed_window(y, seconds, 'start', min_seconds, sample_rate)
    return
  for start in range(0, len(y) - n + 1, n):
    yield y[start:start + n]


def is_silent(window: np.ndarray) -> bool:
  """Whether a window's peak stays below SILENCE_PEAK."""
  return float(np.max(np.abs(window))) < SILENCE_PEAK


def log_mel(y: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
  """Natural log of the mel power spectrogram: float32 (128, frames)."""
  power = librosa.feature.melspectrogram(
      y=y, sr=sample_rate, n_fft=N_FFT, hop_length=HOP_LENGTH, n_mels=N_MELS,
      fmin=0.0, fmax=sample_rate / 2, htk=False, norm='slaney', power=2.0,
      center=True, pad_mode=PAD_MODE)
  return np.log(power + LOG_EPSILON).astype(np.float32)


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
