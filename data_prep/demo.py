"""The built-in demo library: synthetic labelled clips in four musical styles.

Why synthetic: the demo must run on a fresh machine with nothing to download.
Why files: the clips go through exactly the code path real audio takes
(``python -m data_prep build`` on a local library), so they are written as a
user's library would be, ``folder/<label>/<label>_<index>.<ext>``, in mixed
containers (wav / flac / ogg), sample rates (22,050 / 44,100 Hz) and channel
counts (mono / stereo).

The four styles differ in rhythm, register and timbre, so a CRNN separates
them, but every clip draws its own tempo, key, timbre, noise floor, gain and
bar position from a seeded generator, so no two clips are copies:

  metal       distorted power-chord 16th-note chugs, double kick, snare on 2/4
  electronic  four-on-the-floor kick, 16th closed hats, offbeat open hats,
              clap on 2/4, filtered saw bass on the offbeats
  strings     sustained bowed chords (detuned saws with vibrato), no drums
  swing       walking upright bass, swung ride cymbal, hi-hat on 2/4, sparse
              piano comping

Synthesis is numpy only; soundfile writes the files. Each clip has its own
seed (from ``seed``, its class and its index), so a clip is reproducible on
its own and an interrupted run regenerates only what is missing.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable

import numpy as np
import soundfile as sf

from crnn_jax.core import storage

STYLES = ('electronic', 'metal', 'strings', 'swing')
# (extension, soundfile format, subtype); cycled with rates and channel counts
# so that no container or rate is tied to a class.
FORMATS = (('wav', 'WAV', 'PCM_16'), ('flac', 'FLAC', 'PCM_16'), ('ogg', 'OGG', 'VORBIS'))
RATES = (22_050, 44_100)
CHANNELS = (1, 2)
# Written next to the library (``<folder>.demo.json``), not inside it: the
# folder reader treats anything at its top level that is not a label folder as
# a problem to report.
MANIFEST_SUFFIX = '.demo.json'

_TWO_PI = 2.0 * np.pi


# ----------------------------------------------------------------- building blocks

def _hz(midi: float | np.ndarray) -> float | np.ndarray:
  return 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)


def _saw(phase: np.ndarray) -> np.ndarray:
  """Naive sawtooth of a phase in cycles (aliasing is irrelevant for a demo)."""
  return 2.0 * (phase - np.floor(phase)) - 1.0


def _lowpass(x: np.ndarray, sr: int, cutoff: float, order: int = 2) -> np.ndarray:
  """Zero-phase Butterworth-magnitude low-pass in the frequency domain.

  (A moving average would be cheaper but its spectral nulls draw lines into
  the spectrogram that the model could key on.)
  """
  size = 1 << max(1, int(len(x) - 1).bit_length())  # a power of two is several times faster
  spectrum = np.fft.rfft(x, n=size)
  f = np.fft.rfftfreq(size, 1.0 / sr)
  spectrum /= np.sqrt(1.0 + (f / cutoff) ** (2 * order))
  return np.fft.irfft(spectrum, n=size)[:len(x)]


def _place(out: np.ndarray, buf: np.ndarray, start: float) -> None:
  """Adds buf into out at sample ``start`` (clipped to out's bounds)."""
  start = round(start)
  if start < 0:
    buf, start = buf[-start:], 0
  end = min(len(out), start + len(buf))
  if end > start:
    out[start:end] += buf[:end - start]


def _pool(make: Callable[[], np.ndarray], count: int = 3) -> Callable[[np.random.Generator], np.ndarray]:
  """A few pre-rendered variants of a drum sound, picked at random per hit
  (rendering one per hit costs most of the synthesis time)."""
  variants = [make() for _ in range(count)]
  return lambda rng: variants[int(rng.integers(len(variants)))]


def _onsets(step: float, offset: float, n: int, every: int = 1, phase: int = 0,
            shift: float = 0.0) -> list[tuple[int, float]]:
  """(step index, sample) of a regular grid, from before 0 up to n.

  ``offset`` (samples, >= 0) shifts the grid left so clips start mid-bar.
  """
  first = int(np.floor(offset / step)) - 1
  last = int(np.ceil((offset + n) / step)) + 1
  return [(k, k * step - offset + shift * step) for k in range(first, last)
          if (k - phase) % every == 0]


def _kick(sr: int, rng: np.random.Generator, tau: float = 0.18) -> np.ndarray:
  t = np.arange(int(0.4 * sr)) / sr
  f = rng.uniform(45, 55) + rng.uniform(90, 140) * np.exp(-t / rng.uniform(0.02, 0.04))
  click = rng.normal(size=len(t)) * np.exp(-t / 0.003) * 0.3
  return (np.sin(_TWO_PI * np.cumsum(f) / sr) + click) * np.exp(-t / tau)


def _noise_hit(sr: int, rng: np.random.Generator, tau: float, brightness: int,
               seconds: float | None = None) -> np.ndarray:
  """Decaying noise; each difference tilts it up ~6 dB/octave (hats, cymbals)."""
  n = int((seconds or 6 * tau) * sr)
  x = rng.normal(size=n + brightness)
  for _ in range(brightness):
    x = np.diff(x)
  x /= np.abs(x).max() + 1e-12
  return x * np.exp(-np.arange(n) / (tau * sr))


def _snare(sr: int, rng: np.random.Generator, tau: float = 0.09) -> np.ndarray:
  t = np.arange(int(0.35 * sr)) / sr
  body = np.sin(_TWO_PI * rng.uniform(170, 220) * t) * np.exp(-t / 0.04)
  return 0.5 * body + _noise_hit(sr, rng, tau, 1, 0.35)


def _metal_plate(sr: int, rng: np.random.Generator, tau: float, seconds: float) -> np.ndarray:
  """Ride / crash: inharmonic partials plus bright noise."""
  t = np.arange(int(seconds * sr)) / sr
  freqs = rng.uniform(2500, min(9000, 0.45 * sr), size=8)
  tone = np.sin(_TWO_PI * freqs[:, None] * t + rng.uniform(0, _TWO_PI, (8, 1))).sum(0) / 8
  return (0.6 * tone * np.exp(-t / tau) + 0.5 * _noise_hit(sr, rng, tau * 0.6, 2, seconds))


def _pluck(sr: int, freq: float, seconds: float, tau: float, harmonics: int,
           rolloff: float, rng: np.random.Generator) -> np.ndarray:
  """Additive decaying tone (upright bass, piano): harmonic k at rolloff**k."""
  t = np.arange(int(seconds * sr)) / sr
  ks = np.arange(1, harmonics + 1)
  ks = ks[ks * freq < 0.45 * sr]
  amps = rolloff ** (ks - 1)
  decays = np.exp(-t[None, :] / (tau / ks[:, None] ** 0.5))
  x = (amps[:, None] * np.sin(_TWO_PI * freq * ks[:, None] * t
                              + rng.uniform(0, _TWO_PI, (len(ks), 1))) * decays).sum(0)
  attack = np.minimum(1.0, t / 0.004)
  return x * attack


# ------------------------------------------------------------------------ styles

def _metal(rng: np.random.Generator, sr: int, n: int) -> np.ndarray:
  bpm = rng.uniform(150, 210)
  sixteenth = 60.0 / bpm * sr / 4
  offset = rng.uniform(0, 16 * sixteenth)
  root = rng.integers(38, 46)  # D2..A2: low-tuned guitars
  riff = rng.choice([0, 0, 0, 0, 1, 3, 5, 6, 7, -2], size=16)
  riff[0] = 0
  idx = np.arange(n) + offset
  step = np.floor(idx / sixteenth).astype(np.int64)
  pos = (idx - step * sixteenth) / sr  # seconds since the current 16th began
  freq = _hz(root + riff[step % 16])
  detune = 1.0 + rng.uniform(0.002, 0.006)
  phase = np.cumsum(freq) / sr
  guitar = (_saw(phase) + 0.8 * _saw(phase * 1.4983) + 0.5 * _saw(phase * 2.0 * detune)
            + 0.6 * _saw(phase * detune))
  palm = rng.uniform(0.04, 0.12)
  gate = np.exp(-pos / palm) * (pos < 0.9 * sixteenth / sr)
  # accents: open (longer) notes where the riff moves off the root
  gate = np.maximum(gate, (riff[step % 16] != 0) * np.exp(-pos / 0.3) * (pos < sixteenth / sr))
  drive = rng.uniform(10, 25)
  guitar = np.tanh(drive * guitar * gate)
  guitar = _lowpass(guitar, sr, rng.uniform(6000, 9000))  # speaker cabinet
  drums = np.zeros(n)
  kick_every = int(rng.choice([1, 2]))  # double-kick 16ths or 8ths
  kick = _pool(lambda: _kick(sr, rng, 0.08))
  snare = _pool(lambda: _snare(sr, rng))
  hat = _pool(lambda: _noise_hit(sr, rng, 0.03, 2))
  crash = _metal_plate(sr, rng, 0.6, 1.0)
  for k, s in _onsets(sixteenth, offset, n, every=kick_every):
    _place(drums, rng.uniform(0.7, 1.0) * kick(rng), s)
  for k, s in _onsets(sixteenth, offset, n, every=8, phase=4):  # beats 2 and 4
    _place(drums, rng.uniform(0.8, 1.0) * snare(rng), s)
  for k, s in _onsets(sixteenth, offset, n, every=2):
    _place(drums, 0.5 * (crash if k % 16 == 0 else hat(rng)), s)
  return 0.9 * guitar / (np.abs(guitar).max() + 1e-9) + 0.7 * drums / (np.abs(drums).max() + 1e-9)


def _electronic(rng: np.random.Generator, sr: int, n: int) -> np.ndarray:
  bpm = rng.uniform(118, 132)
  sixteenth = 60.0 / bpm * sr / 4
  offset = rng.uniform(0, 16 * sixteenth)
  drums = np.zeros(n)
  kick_tau = rng.uniform(0.15, 0.3)
  kick = _kick(sr, rng, kick_tau)
  for k, s in _onsets(sixteenth, offset, n, every=4):  # four on the floor
    _place(drums, kick, s)
  clap = _pool(lambda: sum(_place_copy(_noise_hit(sr, rng, 0.05, 1, 0.3), int(d * sr))
                           for d in (0.0, 0.011, 0.023)))
  hat_tau = rng.uniform(0.01, 0.025)
  open_hat = _pool(lambda: _noise_hit(sr, rng, 0.12, 3, 0.4))
  closed_hat = _pool(lambda: _noise_hit(sr, rng, hat_tau, 3, 0.08))
  for k, s in _onsets(sixteenth, offset, n, every=8, phase=4):  # clap on 2 and 4
    _place(drums, 0.5 * clap(rng), s)
  for k, s in _onsets(sixteenth, offset, n, every=1):
    if k % 4 == 2:  # open hat on the offbeat 8ths
      _place(drums, 0.35 * open_hat(rng), s)
    else:
      _place(drums, rng.uniform(0.1, 0.25) * closed_hat(rng), s)
  # offbeat saw bass, low-passed with a cutoff that differs per clip
  root = rng.integers(31, 40)  # G1..D#2
  notes = rng.choice([0, 0, 0, 3, 5, 7, 10, 12], size=4)
  idx = np.arange(n) + offset
  step = np.floor(idx / sixteenth).astype(np.int64)
  pos = (idx - step * sixteenth) / sr
  beat = step // 4
  freq = _hz(root + notes[beat % 4])
  phase = np.cumsum(freq) / sr
  osc = _saw(phase) + 0.7 * _saw(phase * 1.005)
  on = (step % 4 == 2) | ((step % 4 == 3) & (rng.random() < 0.5))
  bass = _lowpass(osc * on * np.exp(-pos / rng.uniform(0.08, 0.2)), sr, rng.uniform(300, 1200))
  # quiet chord stab pad on the offbeats, square waves
  pad_freqs = _hz(root + 24 + np.array([0, 3, 7]))
  t = np.arange(n) / sr
  pad = np.sign(np.sin(_TWO_PI * pad_freqs[:, None] * t)).sum(0) * on * np.exp(-pos / 0.06)
  pad = _lowpass(pad, sr, 2500)
  return (0.8 * drums / (np.abs(drums).max() + 1e-9) + 0.7 * bass / (np.abs(bass).max() + 1e-9)
          + 0.15 * pad / (np.abs(pad).max() + 1e-9))


def _place_copy(buf: np.ndarray, delay: int) -> np.ndarray:
  out = np.zeros(len(buf) + delay)
  out[delay:] = buf
  return out[:len(buf)]


def _strings(rng: np.random.Generator, sr: int, n: int) -> np.ndarray:
  root = rng.integers(55, 65)  # G3..E4: violas and violins, no bass register
  minor = rng.random() < 0.5
  third = 3 if minor else 4
  rest = [9 if not minor else 8, 5, 7]
  rng.shuffle(rest)
  progression = [0] + rest
  chord_s = rng.uniform(1.2, 2.4)
  attack, release = rng.uniform(0.2, 0.5), rng.uniform(0.3, 0.6)
  vib_rate, vib_depth = rng.uniform(4.5, 6.5), rng.uniform(0.002, 0.006)
  out = np.zeros(n)
  start = -rng.uniform(0, chord_s) * sr
  i = 0
  while start < n:
    seg = int((chord_s + release) * sr)
    t = np.arange(seg) / sr
    env = np.minimum(1.0, t / attack) * np.clip((chord_s + release - t) / release, 0.0, 1.0)
    degree = progression[i % len(progression)]
    voices = root + degree + np.array([0, third, 7, 12, 12 + third])
    chord = np.zeros(seg)
    for v in voices:
      vib = 1.0 + vib_depth * np.sin(_TWO_PI * vib_rate * t + rng.uniform(0, _TWO_PI))
      for det in (-0.003, 0.0, 0.004):  # a small ensemble per voice
        chord += _saw(np.cumsum(_hz(v) * (1 + det) * vib) / sr + rng.random())
    _place(out, chord * env, start)
    start += chord_s * sr
    i += 1
  out = _lowpass(out, sr, rng.uniform(900, 1800), order=4)  # soft, bowed body
  bow = _lowpass(rng.normal(size=n), sr, 6000) * 0.02 * np.abs(out).max()
  return out + bow


def _swing(rng: np.random.Generator, sr: int, n: int) -> np.ndarray:
  bpm = rng.uniform(120, 200)
  beat = 60.0 / bpm * sr
  offset = rng.uniform(0, 4 * beat)
  swing = rng.uniform(0.6, 0.7)  # where the swung 8th falls inside the beat
  out_drums = np.zeros(n)
  ride_tau = rng.uniform(0.4, 0.8)
  ride = _pool(lambda: _metal_plate(sr, rng, ride_tau, 1.2))
  foot = _noise_hit(sr, rng, 0.02, 2, 0.1)
  for k, s in _onsets(beat, offset, n):
    _place(out_drums, rng.uniform(0.6, 0.8) * ride(rng), s)
    if k % 2 == 1:  # "ding-ga": the swung 8th after beats 2 and 4, and the hi-hat foot
      _place(out_drums, rng.uniform(0.3, 0.5) * ride(rng), s + swing * beat)
      _place(out_drums, 0.3 * foot, s)
  # walking bass: a chord tone or approach note on every beat over ii-V-I-VI
  key = rng.integers(36, 44)
  chords = [(2, [0, 3, 7, 10]), (7, [0, 4, 7, 10]), (0, [0, 4, 7, 11]), (9, [0, 3, 7, 10])]
  bass = np.zeros(n)
  bass_tau = rng.uniform(0.25, 0.5)
  bass_notes: dict[int, np.ndarray] = {}
  for k, s in _onsets(beat, offset, n):
    deg, tones = chords[(k // 4) % 4]
    note = int(key + deg + (tones[0] if k % 4 == 0 else rng.choice(tones + [tones[-1] - 12, 12])))
    if note not in bass_notes:
      bass_notes[note] = _pluck(sr, float(_hz(note)), beat / sr * 1.1, bass_tau, 5, 0.45, rng)
    _place(bass, rng.uniform(0.8, 1.0) * bass_notes[note], s)
  # sparse piano comping: Charleston rhythm (beat 1 and the swung & of 2)
  piano = np.zeros(n)
  cache: dict[int, np.ndarray] = {}

  def piano_note(m: int) -> np.ndarray:
    if m not in cache:
      cache[m] = _pluck(sr, float(_hz(m)), 0.6, 0.25, 6, 0.5, rng)
    return cache[m]

  for k, s in _onsets(beat, offset, n):
    deg, tones = chords[(k // 4) % 4]
    if k % 4 in (0, 1) and rng.random() < 0.7:
      at = s if k % 4 == 0 else s + swing * beat
      for tone in tones[1:]:
        _place(piano, piano_note(int(key + 24 + deg + tone)), at)
  return (0.5 * out_drums / (np.abs(out_drums).max() + 1e-9)
          + 0.9 * bass / (np.abs(bass).max() + 1e-9) + 0.35 * piano / (np.abs(piano).max() + 1e-9))


_SYNTHS: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    'electronic': _electronic, 'metal': _metal, 'strings': _strings, 'swing': _swing}


# ----------------------------------------------------------------------- library

def clip_format(class_index: int, index: int) -> tuple[str, str, str, int, int]:
  """(ext, format, subtype, sample rate, channels) of a clip, cycled over all 12
  combinations so each class gets every container, rate and channel count."""
  combo = (index + 5 * class_index) % (len(FORMATS) * len(RATES) * len(CHANNELS))
  ext, fmt, subtype = FORMATS[combo % len(FORMATS)]
  rate = RATES[(combo // len(FORMATS)) % len(RATES)]
  channels = CHANNELS[combo // (len(FORMATS) * len(RATES))]
  return ext, fmt, subtype, rate, channels


def synthesize(style: str, seed: int, index: int, seconds: float = 5.0,
               sample_rate: int = 22_050, channels: int = 1) -> np.ndarray:
  """One clip as float32 (samples, channels) in [-1, 1], deterministic in its args."""
  if style not in _SYNTHS:
    raise ValueError(f'unknown demo style {style!r}; known: {", ".join(STYLES)}')
  rng = np.random.default_rng([seed, STYLES.index(style), index])
  n = round(seconds * sample_rate)
  y = _SYNTHS[style](rng, sample_rate, n)
  y = y / (np.abs(y).max() + 1e-9)
  y = y + rng.uniform(0.002, 0.02) * rng.normal(size=n)  # noise floor
  y = y / np.abs(y).max() * rng.uniform(0.3, 0.9)  # gain
  if channels == 1:
    return y.astype(np.float32)[:, None]
  # stereo: slightly different levels and a few samples of delay
  delay = int(rng.integers(0, 8))
  right = np.concatenate([np.zeros(delay), y[:n - delay]])
  stereo = np.stack([y * rng.uniform(0.85, 1.0), right * rng.uniform(0.85, 1.0)], axis=1)
  return stereo.astype(np.float32)


def demo_paths(folder: str, clips_per_class: int = 40) -> list[str]:
  """The files a complete demo library holds, sorted by class then index."""
  paths = []
  for c, style in enumerate(STYLES):
    for i in range(clips_per_class):
      ext = clip_format(c, i)[0]
      paths.append(os.path.join(folder, style, f'{style}_{i:03d}.{ext}'))
  return paths


def manifest_file(folder: str) -> str:
  """Where the arguments of the last complete generation are recorded."""
  return os.path.normpath(os.path.abspath(folder)) + MANIFEST_SUFFIX


def _manifest(seed: int, clips_per_class: int, seconds: float) -> dict:
  return {'seed': int(seed), 'clips_per_class': int(clips_per_class), 'seconds': float(seconds),
          'styles': list(STYLES), 'version': 1}


def generate_demo_library(folder: str, seed: int = 0, clips_per_class: int = 40,
                          seconds: float = 5.0) -> list[str]:
  """Writes ``folder/<style>/<style>_<i>.<ext>`` for 4 styles; returns all paths.

  Idempotent: a complete library made with the same arguments is left alone;
  missing files (e.g. after an interrupted run) are written; a library made
  with other arguments has its clips rewritten (and surplus demo clips removed).
  Files are written to a temporary name and renamed, so none is ever partial;
  the arguments are recorded in ``manifest_file(folder)`` once all are written.
  """
  if clips_per_class < 1 or seconds <= 0:
    raise ValueError('clips_per_class must be >= 1 and seconds > 0')
  paths = demo_paths(folder, clips_per_class)
  want = _manifest(seed, clips_per_class, seconds)
  manifest_path = manifest_file(folder)
  try:
    with open(manifest_path) as f:
      have = json.load(f)
  except (OSError, ValueError):
    have = None
  same = have == want
  if same and all(os.path.isfile(p) and os.path.getsize(p) > 0 for p in paths):
    return paths
  os.makedirs(folder, exist_ok=True)
  if not same:
    # Another configuration (or an interrupted first run): rewrite every clip,
    # and drop demo clips of the old configuration that this one does not have.
    if os.path.exists(manifest_path):
      os.remove(manifest_path)
    keep = set(paths)
    old_count = int(have.get('clips_per_class', 0) or 0) if isinstance(have, dict) else 0
    for p in demo_paths(folder, old_count):
      if p not in keep and os.path.isfile(p):
        os.remove(p)
  for c, style in enumerate(STYLES):
    os.makedirs(os.path.join(folder, style), exist_ok=True)
    for name in os.listdir(os.path.join(folder, style)):  # left by an interrupted run
      if name.endswith('.tmp'):
        os.remove(os.path.join(folder, style, name))
    for i in range(clips_per_class):
      path = paths[c * clips_per_class + i]
      if same and os.path.isfile(path) and os.path.getsize(path) > 0:
        continue
      _, fmt, subtype, rate, channels = clip_format(c, i)
      y = synthesize(style, seed, i, seconds, rate, channels)
      with storage.atomic_write(path, 'wb') as f:
        sf.write(f, y, rate, format=fmt, subtype=subtype)
  # written last: its presence means every clip above matches these arguments
  storage.write_json(manifest_path, want)
  return paths


def main() -> None:  # pragma: no cover - convenience entry point
  parser = argparse.ArgumentParser(description='Write the synthetic demo audio library.')
  parser.add_argument('folder')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--clips_per_class', type=int, default=40)
  parser.add_argument('--seconds', type=float, default=5.0)
  args = parser.parse_args()
  paths = generate_demo_library(args.folder, args.seed, args.clips_per_class, args.seconds)
  print(f'{len(paths)} clips in {args.folder}')


if __name__ == '__main__':  # pragma: no cover
  main()
