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
import os
from collections.abc import Iterator, Mapping
from typing import Any

import librosa
import numpy as np
import soundfile as sf

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


class AudioError(Exception):
  """A file that cannot give a clip; the message is the reason, for reports."""


def clip_samples(seconds: float = CLIP_SECONDS, sample_rate: int = SAMPLE_RATE) -> int:
  return round(seconds * sample_rate)


def num_frames(seconds: float = CLIP_SECONDS, sample_rate: int = SAMPLE_RATE) -> int:
  """Frames of a centred STFT of a clip: 1,292 for the reference's 30 s."""
  return 1 + clip_samples(seconds, sample_rate) // HOP_LENGTH


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
  """Decodes any soundfile-readable file (wav/flac/ogg/mp3) to mono float32.

  Channels are averaged (as librosa.load does), then resampled with soxr.
  Raises AudioError with a one-line reason for anything that is not usable.
  """
  path = os.fspath(path)
  try:
    size = os.path.getsize(path)
  except OSError as e:
    raise AudioError(f'unreadable path: {e.strerror or e}') from None
  if size == 0:
    raise AudioError('empty file (0 bytes)')
  try:
    with sf.SoundFile(path) as f:
      rate, declared = f.samplerate, f.frames
      data = f.read(dtype='float32', always_2d=True)
  except Exception as e:  # noqa: BLE001  soundfile raises many types for corrupt input
    message = str(e).splitlines()[0]
    if 'does not exist' in message or 'not recognised' in message.lower():
      # libsndfile's words for a file whose bytes it cannot identify.
      message = 'unrecognised format or corrupt data'
    raise AudioError(f'not decodable audio: {message[:200]}') from None
  if data.shape[0] == 0 or data.shape[1] == 0:
    raise AudioError('no audio samples')
  if (path.lower().endswith('.mp3') and 0 < declared < 2**62 and rate
      and data.shape[0] < TRUNCATED_FRACTION * declared and _mp3_declares_length(path)):
    raise AudioError(f'truncated file: decoded {data.shape[0] / rate:.2f} s of the '
                     f'{declared / rate:.2f} s its header declares')
  mono = data.mean(axis=1)
  if not np.all(np.isfinite(mono)):
    raise AudioError('audio contains NaN or infinite samples')
  if rate != sample_rate:
    mono = librosa.resample(mono, orig_sr=rate, target_sr=sample_rate, res_type='soxr_hq')
  return np.ascontiguousarray(mono, dtype=np.float32)


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
