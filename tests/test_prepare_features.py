"""crnn_jax.core.audio_features: each estimate on a signal whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from crnn_jax.core import audio_features as af

SR = 22_050


def _tones(freqs: list[float], seconds: float, amp: float = 0.2) -> np.ndarray:
  t = np.arange(int(seconds * SR)) / SR
  return sum(amp * np.sin(2 * np.pi * f * t) for f in freqs).astype(np.float32)


def _midi(m: int) -> float:
  return 440.0 * 2 ** ((m - 69) / 12)


def _cadence(tonic: int, minor: bool) -> np.ndarray:
  """i/I - iv/IV - V - i/I twice: unambiguous about key and mode."""
  third = 3 if minor else 4
  chords = [[0, third, 7], [5, 5 + third, 12], [7, 11, 14], [0, third, 7]] * 2
  return np.concatenate([_tones([_midi(48 + tonic + i) for i in c], 1.0) for c in chords])


def _clicks(bpm: float, seconds: float, accent_every: int) -> np.ndarray:
  y = np.zeros(int(seconds * SR), np.float32)
  rng = np.random.default_rng(0)
  for i in range(int(seconds * bpm / 60)):
    s = int(i * 60 / bpm * SR)
    n = min(int(0.03 * SR), len(y) - s)
    amp = 1.0 if i % accent_every == 0 else 0.25
    y[s:s + n] += amp * rng.standard_normal(n) * np.exp(-np.arange(n) / 200)
  return y


@pytest.mark.parametrize('tonic,minor', [(0, False), (9, True), (2, False), (7, True), (11, False)])
def test_key_and_mode(tonic, minor):
  e = af.estimate(_cadence(tonic, minor))
  assert (e['key'], e['mode']) == (tonic, 0 if minor else 1)


@pytest.mark.parametrize('accent_every', [3, 4])
def test_tempo_and_time_signature(accent_every):
  e = af.estimate(_clicks(150, 16, accent_every))
  assert abs(e['tempo'] - 150) < 4  # frame quantisation of the beat period
  assert e['time_signature'] == accent_every


def test_loudness_and_duration_exact():
  e = af.estimate(_tones([440.0], 3.0, amp=0.5))
  assert e['loudness'] == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.01)
  assert e['duration_ms'] == pytest.approx(3000.0)
  assert set(e) == set(af.ESTIMATED)


def test_num_sections_counts_contrasting_parts():
  parts = [_tones([_midi(60), _midi(64), _midi(67)], 12),
           0.1 * np.random.default_rng(1).standard_normal(12 * SR).astype(np.float32),
           _clicks(140, 12, 4)]
  assert af.estimate(np.concatenate(parts))['num_sections'] == 3
  assert af.estimate(parts[0])['num_sections'] == 1


def test_silence_does_not_crash():
  e = af.estimate(np.zeros(2 * SR, np.float32))
  assert e['loudness'] == pytest.approx(-120.0)
  assert np.isfinite(list(e.values())).all()


def test_long_signal_analysed_in_its_centre_only(monkeypatch):
  """Bounded memory on a 1-hour file: only the centre MAX_ANALYSIS_SECONDS is analysed."""
  monkeypatch.setattr(af, 'MAX_ANALYSIS_SECONDS', 4.0)
  centre = _tones([_midi(57), _midi(60), _midi(64)], 4.0)
  edges = _clicks(150, 3.0, 3)
  y = np.concatenate([edges, centre, edges])
  e, expected = af.estimate(y), af.estimate(centre)
  for name in set(af.ESTIMATED) - {'duration_ms', 'loudness'}:
    assert e[name] == expected[name], name
  assert e['duration_ms'] == pytest.approx(10_000.0)  # whole signal
  assert e['loudness'] == pytest.approx(10 * np.log10(np.mean(y.astype(np.float64) ** 2)),
                                        abs=1e-6)
