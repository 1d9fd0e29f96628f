"""Tabular features estimated from audio, where Spotify's are not available.

Since late 2024 new Spotify apps get HTTP 403 from audio-features and
audio-analysis, so the metal model's tabular inputs (docs/reference.md section 3) must
come from the audio itself. Data preparation and prediction both call
``estimate`` so a model sees the same numbers at training and serving time.

Only the centre MAX_ANALYSIS_SECONDS (5 minutes) of a longer signal is
analysed (duration and loudness still cover all of it): the spectrogram-based
estimates of a 1-hour file would need gigabytes and could get a data_prep
worker OOM-killed, and 5 minutes say enough about tempo, key and meter.

Values follow Spotify's conventions (key 0..11 = C..B, mode 1 major / 0
minor, time_signature 3..7, loudness in dB, duration in ms); data_prep turns
categorical ones into the reference's 1-based codes. Estimated, and how:

  duration_ms     length of the decoded audio (exact; Spotify's is the full
                  track, so pass the whole track, not a 30 s preview, if the
                  model was trained on Spotify's numbers).
  loudness        RMS level of the whole signal in dB re full scale. Spotify's
                  "average loudness" is a perceptual (LUFS-like) average; same
                  scale and typical range (-60..0, usually -15..-4), not the
                  same number.
  tempo           librosa's beat tracker (onset autocorrelation + dynamic
                  programming) in BPM; may differ from Spotify by a factor 2.
  key, mode       mean chroma correlated with the Krumhansl-Kessler major and
                  minor key profiles in all 12 rotations; the best match gives
                  both (the classic Krumhansl-Schmuckler estimate).
  time_signature  3 or 4 only: whether the (log) energy at the tracked beats
                  repeats more strongly every 3 or every 4 beats
                  (4 when there are too few beats to tell). Rough.
  num_sections    (of the analysed part) 1 + the number of peaks of a Foote checkerboard novelty
                  curve on the self-similarity of MFCC + chroma, at least
                  MIN_SECTION_SECONDS apart (Spotify: "large variations in
                  rhythm or timbre"). Approximate.

Not estimated (no faithful estimate exists; Spotify computed them with
undisclosed learned models or from listening data): acousticness,
danceability, energy, instrumentalness, liveness, speechiness, valence,
popularity, explicit. Such columns must come from a source table or be left
out of the data set.
"""

from __future__ import annotations

import warnings

import librosa
import numpy as np

from crnn_jax.core import audio

ESTIMATED = ('duration_ms', 'key', 'loudness', 'mode', 'num_sections', 'tempo', 'time_signature')
MIN_SECTION_SECONDS = 10.0
# Longest stretch analysed (the centre of a longer signal): bounds memory and time.
MAX_ANALYSIS_SECONDS = 300.0
_BLOCK_SECONDS = 0.5  # self-similarity resolution for sections
_KERNEL_SECONDS = 4.0  # half-width of the checkerboard kernel

# Krumhansl & Kessler (1982) probe-tone profiles, tonic first.
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def key_mode(chroma_mean: np.ndarray) -> tuple[int, int]:
  """(key 0..11, mode 1 major / 0 minor) of a 12-bin mean chroma vector."""
  c = np.asarray(chroma_mean, np.float64)
  if not np.any(c > 0) or np.allclose(c, c[0]):
    return 0, 1
  best, result = -np.inf, (0, 1)
  for mode, profile in ((1, MAJOR_PROFILE), (0, MINOR_PROFILE)):
    for key in range(12):
      r = np.corrcoef(c, np.roll(profile, key))[0, 1]
      if r > best:
        best, result = r, (key, mode)
  return result


def meter(energy: np.ndarray, beats: np.ndarray) -> int:
  """3 or 4: which beat grouping the accents (frame energy at the beats) repeat with."""
  if len(beats) < 12:
    return 4
  frames = np.clip(np.asarray(beats, np.int64), 0, len(energy) - 1)
  strength = np.array([energy[max(0, f - 2):f + 4].max() for f in frames], np.float64)
  strength = np.log(strength + 1e-10)
  strength = strength - strength.mean()
  if not np.any(np.abs(strength) > 1e-6):
    return 4

  def autocorr(lag: int) -> float:
    a, b = strength[:-lag], strength[lag:]
    return float(np.dot(a, b) / len(a))

  return 3 if autocorr(3) > autocorr(4) and autocorr(3) > 0 else 4


def _novelty(features: np.ndarray, half: int) -> np.ndarray:
  """Foote novelty: a Gaussian-tapered checkerboard slid along the SSM diagonal."""
  f = features - features.mean(axis=1, keepdims=True)
  f = f / (np.linalg.norm(f, axis=0, keepdims=True) + 1e-9)
  ssm = f.T @ f
  idx = np.arange(-half, half)
  taper = np.exp(-0.5 * ((idx + 0.5) / (0.5 * half)) ** 2)
  sign = np.sign(idx + 0.5)
  kernel = np.outer(sign, sign) * np.outer(taper, taper)
  n = ssm.shape[0]
  padded = np.pad(ssm, half, mode='constant')
  out = np.zeros(n)
  for t in range(n):
    out[t] = float(np.sum(kernel * padded[t:t + 2 * half, t:t + 2 * half]))
  return np.maximum(out, 0.0)


def num_sections(features: np.ndarray, frames_per_second: float) -> int:
  """1 + novelty peaks at least MIN_SECTION_SECONDS apart (features: (d, frames))."""
  block = max(1, round(_BLOCK_SECONDS * frames_per_second))
  n_blocks = features.shape[1] // block
  if n_blocks < 4:
    return 1
  pooled = features[:, :n_blocks * block].reshape(features.shape[0], n_blocks, block).mean(axis=2)
  pooled = (pooled - pooled.mean(axis=1, keepdims=True)) / (pooled.std(axis=1, keepdims=True) + 1e-9)
  half = max(2, round(_KERNEL_SECONDS / _BLOCK_SECONDS))
  nov = _novelty(pooled, half)
  if not np.any(nov > 0):
    return 1
  min_gap = round(MIN_SECTION_SECONDS / _BLOCK_SECONDS)
  threshold = nov.mean() + nov.std()
  peaks: list[int] = []
  for t in np.argsort(-nov, kind='stable'):  # strongest first, non-maximum suppression
    if nov[t] <= threshold:
      break
    if t < half // 2 or t > n_blocks - half // 2:
      continue  # edges of the clip are not boundaries
    if all(abs(int(t) - p) >= min_gap for p in peaks):
      peaks.append(int(t))
  return 1 + len(peaks)


def _rms(y: np.ndarray, chunk: int = 1 << 20) -> float:
  """RMS in float64, a chunk at a time: no float64 copy of a long signal."""
  squares = _SumOfSquares(chunk)
  squares.add(y)
  return squares.rms()


class _SumOfSquares:
  """Sum of squares of a signal given in pieces, added up in float64 chunks
  of a fixed size from its start: the same number however it is cut."""

  def __init__(self, chunk: int = 1 << 20):
    self.chunk, self.total, self.count = chunk, 0.0, 0
    self._pending: list[np.ndarray] = []
    self._held = 0

  def add(self, piece: np.ndarray) -> None:
    self.count += len(piece)
    pos = 0
    if self._held:  # complete the chunk begun by earlier pieces
      pos = min(self.chunk - self._held, len(piece))
      self._pending.append(piece[:pos])
      self._held += pos
      if self._held < self.chunk:
        return
      self._add_chunk(np.concatenate(self._pending))
      self._pending, self._held = [], 0
    for start in range(pos, len(piece) - self.chunk + 1, self.chunk):
      self._add_chunk(piece[start:start + self.chunk])
      pos = start + self.chunk
    if pos < len(piece):
      self._pending, self._held = [piece[pos:]], len(piece) - pos

  def _add_chunk(self, c: np.ndarray) -> None:
    c = c.astype(np.float64)
    self.total += float(np.dot(c, c))

  def rms(self) -> float:
    if self._held:
      self._add_chunk(np.concatenate(self._pending))
      self._pending, self._held = [], 0
    return float(np.sqrt(self.total / self.count)) if self.count else 0.0


def estimate(y: np.ndarray, sample_rate: int = audio.SAMPLE_RATE) -> dict[str, float]:
  """All ESTIMATED features of a mono signal, in Spotify's conventions."""
  y = np.asarray(y, np.float32)
  limit = int(MAX_ANALYSIS_SECONDS * sample_rate)
  centre = y
  if len(y) > limit:  # the rest from the centre only (module docstring)
    start = (len(y) - limit) // 2
    centre = y[start:start + limit]
  return {**_duration_and_loudness(len(y), _rms(y), sample_rate), **_analyse(centre, sample_rate)}


def estimate_file(path: str) -> dict[str, float]:
  """``estimate(audio.load_audio(path))`` holding at most MAX_ANALYSIS_SECONDS
  of the file: duration and loudness stream over all of it; a longer file's
  centre is decoded again for the rest. AudioError for an unusable file."""
  sr = audio.SAMPLE_RATE
  limit = int(MAX_ANALYSIS_SECONDS * sr)
  squares, head = _SumOfSquares(), []
  for block in audio.decoded_blocks(path):
    if squares.count < limit:  # all of a short file, analysed as estimate() would
      head.append(block[:limit - squares.count])
    squares.add(block)
  if squares.count <= limit:
    return estimate(np.concatenate(head), sr)
  centre, _ = audio.take_span(audio.decoded_blocks(path), (squares.count - limit) // 2, limit,
                              to_end=False)
  return {**_duration_and_loudness(squares.count, squares.rms(), sr), **_analyse(centre, sr)}


def _duration_and_loudness(samples: int, rms: float, sample_rate: int) -> dict[str, float]:
  return {'duration_ms': 1000.0 * samples / sample_rate,
          'loudness': float(20.0 * np.log10(max(rms, 1e-6)))}  # floor at -120 dB


def _analyse(y: np.ndarray, sample_rate: int) -> dict[str, float]:
  """Tempo, meter, key, mode and sections of (the analysed part of) a signal."""
  out: dict[str, float] = {}
  hop = audio.HOP_LENGTH
  spec = np.abs(librosa.stft(y, n_fft=audio.N_FFT, hop_length=hop)) ** 2
  mel = librosa.feature.melspectrogram(S=spec, sr=sample_rate, n_mels=audio.N_MELS)
  log_mel = librosa.power_to_db(mel)
  onset_env = librosa.onset.onset_strength(S=log_mel, sr=sample_rate, hop_length=hop)
  tempo, beats = librosa.beat.beat_track(onset_envelope=onset_env, sr=sample_rate,
                                         hop_length=hop, units='frames')
  out['tempo'] = float(np.atleast_1d(tempo)[0])
  out['time_signature'] = float(meter(spec.sum(axis=0), np.asarray(beats, dtype=np.int64)))
  with warnings.catch_warnings():  # tuning estimation warns on silence, then assumes 0
    warnings.simplefilter('ignore', UserWarning)
    chroma = librosa.feature.chroma_stft(S=spec, sr=sample_rate, n_fft=audio.N_FFT)
  key, mode = key_mode(chroma.mean(axis=1))
  out['key'], out['mode'] = float(key), float(mode)
  mfcc = librosa.feature.mfcc(S=log_mel, n_mfcc=13)
  out['num_sections'] = float(num_sections(np.vstack([mfcc, chroma]), sample_rate / hop))
  return out
